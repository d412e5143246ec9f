"""Configuration: a TOML file overridden by ``RETROTREAD_<SECTION>__<KEY>`` environment variables.

A bad value stops start-up with one line naming the key, the value and what is allowed
(``ConfigError``); the caller prints it and exits 1. Example: systemd/retrotread.toml.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from retrotread.daemon.cues import CueSettings
from retrotread.daemon.events import CueKind
from retrotread.daemon.plans import MAX_PHASE_S
from retrotread.drivers.errors import ConfigError
from retrotread.safety.envelope import REVERSE_MAX_MPH, REVERSE_MIN_MPH, Envelope, EnvelopeError

DEFAULT_CONFIG = Path("/etc/retrotread/retrotread.toml")


def default_state_dir() -> Path:
    # systemd's StateDirectory= sets STATE_DIRECTORY; otherwise follow XDG for a user.
    if env := os.environ.get("STATE_DIRECTORY"):
        return Path(env.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "retrotread"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DaemonSection(_Section):
    id: str = Field(
        default="treadmill",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="this treadmill's id: the MQTT base topic is retrotread/<id>",
    )
    # No default: a daemon must be told which treadmill it drives (`retrotread demo` for a simulator).
    driver: str = Field(default="", description="driver URL: csafe://, ftms://, pulse://, sim://, ...")
    mode: Literal["reverse", "deadmill"] = "reverse"
    state_dir: Path = Field(default_factory=default_state_dir)


class SafetySection(_Section):
    envelope_min_mph: float = REVERSE_MIN_MPH
    envelope_max_mph: float = REVERSE_MAX_MPH
    max_incline_pct: float = Field(default=0.0, ge=0.0, le=15.0)
    deadmill_alert_mph: float = Field(default=4.0, gt=0.0, le=15.0)

    @field_validator("envelope_min_mph", "envelope_max_mph")
    @classmethod
    def _narrow_only(cls, value: float) -> float:
        if not (math.isfinite(value) and REVERSE_MIN_MPH <= value <= REVERSE_MAX_MPH):
            raise ValueError(
                f"the envelope may be narrowed inside {REVERSE_MIN_MPH}..{REVERSE_MAX_MPH} mph, never widened (S1)"
            )
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        try:
            Envelope.reverse(self.envelope_min_mph, self.envelope_max_mph)
        except EnvelopeError as exc:
            raise ValueError(str(exc)) from None
        return self

    def envelope(self) -> Envelope:
        return Envelope.reverse(self.envelope_min_mph, self.envelope_max_mph)


class HttpSection(_Section):
    listen: str = Field(default="127.0.0.1:8000", description="HOST:PORT for the HTTP API (loopback unless set)")
    auth: bool = Field(default=True, description="control calls need the token (the stop never does, S16)")
    public_reads: bool = Field(default=False, description="allow reads without the token from other hosts")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names accepted besides loopback and the listen address (DNS rebinding guard)",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen(value)
        return value


class MqttSection(_Section):
    url: str = Field(default="", description="mqtt:// or mqtts:// URL; empty or 'none' for no MQTT")
    # S16: over MQTT only the stops unless "full"; then the broker's ACL is the guard (docs/mqtt.md).
    control: Literal["stop", "full"] = Field(
        default="stop", description="'stop': only stop and estop over MQTT; 'full': every command (broker ACL guards)"
    )


class SessionSection(_Section):
    speed_mph: float = Field(default=1.0, description="belt speed for sets in reverse mode")

    @field_validator("speed_mph")
    @classmethod
    def _inside(cls, value: float) -> float:
        if not (math.isfinite(value) and REVERSE_MIN_MPH <= value <= REVERSE_MAX_MPH):
            raise ValueError(f"must be inside {REVERSE_MIN_MPH}..{REVERSE_MAX_MPH} mph (S1)")
        return value


class CuesSection(_Section):
    enabled: list[CueKind] = Field(
        default_factory=lambda: list(CueKind),
        description="the cues said (docs/cues.md): countdown, go, halfway, remaining, set_done, ...",
    )
    remaining_s: list[float] = Field(
        default_factory=lambda: [10.0], description="'remaining' cues this many seconds before a work set ends"
    )

    @field_validator("remaining_s")
    @classmethod
    def _leads(cls, value: list[float]) -> list[float]:
        for lead in value:
            if not (math.isfinite(lead) and 0 < lead <= MAX_PHASE_S):
                raise ValueError(f"each lead time must be 0 < seconds <= {MAX_PHASE_S:g}")
        return value

    def settings(self, reverse: bool = False) -> CueSettings:
        """What the set timer takes (``reverse``: the daemon drives the belt, "Belt starting.")."""
        return CueSettings.of(self.enabled, self.remaining_s, reverse)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RETROTREAD_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )
    daemon: DaemonSection = Field(default_factory=DaemonSection)
    safety: SafetySection = Field(default_factory=SafetySection)
    http: HttpSection = Field(default_factory=HttpSection)
    mqtt: MqttSection = Field(default_factory=MqttSection)
    session: SessionSection = Field(default_factory=SessionSection)
    cues: CuesSection = Field(default_factory=CuesSection)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file; the file's values arrive as init arguments.
        return (env_settings, init_settings)


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host.strip("[]"), int(port)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the file (if given or present at the default place), then the environment, then
    ``overrides`` (from the command line, as nested dicts). Errors are one clear ``ConfigError``."""
    data: dict[str, Any] = {}
    source = path if path is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if source is not None:
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {source} does not exist") from None
        except PermissionError:
            raise ConfigError(f"config file {source} is not readable by this user") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {source}: {exc}") from None
    for section, values in overrides.items():
        data.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, source)) from None


def _one_line(exc: ValidationError, source: Path | None) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    where = f" in {source}" if source else ""
    env = "RETROTREAD_" + "__".join(str(p) for p in err["loc"]).upper()
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"config{where}: unknown key {key!r} (or {env})"
    return f"config{where}: {key} = {err.get('input')!r}: {msg} (set in the file or {env})"
