"""Configuration: a TOML file overridden by ``RETROTREAD_<SECTION>__<KEY>`` environment variables,
overridden by the command line (docs/configuration.md).

A bad value stops start-up with one line naming the key, the value and what is allowed
(``ConfigError``); the caller prints it and exits 1. Example: systemd/retrotread.toml.

The sources are merged here with ``tomllib`` and plain pydantic models rather than
pydantic-settings: that library cost every start about 1.5 MB and 34 more modules (issue 16,
measured 2026-12-02) for one prefix and one delimiter, and it let the environment beat the
command line, against the documented order.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


SpeedUnit = Literal["km/h", "mph"]
"""The units Home Assistant's target-speed number can be published in (``mqtt.speed_unit``);
discovery and the bridge take theirs from here."""
SPEED_UNITS: tuple[SpeedUnit, ...] = get_args(SpeedUnit)


class MqttSection(_Section):
    url: str = Field(default="", description="mqtt:// or mqtts:// URL; empty or 'none' for no MQTT")
    # S16: over MQTT only the stops unless "full"; then the broker's ACL is the guard (docs/mqtt.md).
    control: Literal["stop", "full"] = Field(
        default="stop", description="'stop': only stop and estop over MQTT; 'full': every command (broker ACL guards)"
    )
    telemetry_hz: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,  # inf passed here and failed only in the bridge, after the belt was up
        description="about this many BASE/telemetry messages a second; unset: every reading",
    )
    speed_unit: SpeedUnit = Field(
        default="km/h", description="the unit of Home Assistant's Target speed number (docs/home-assistant.md)"
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


class Settings(_Section):
    """The whole configuration; each section is a table of the TOML file."""

    daemon: DaemonSection = Field(default_factory=DaemonSection)
    safety: SafetySection = Field(default_factory=SafetySection)
    http: HttpSection = Field(default_factory=HttpSection)
    mqtt: MqttSection = Field(default_factory=MqttSection)
    session: SessionSection = Field(default_factory=SessionSection)
    cues: CuesSection = Field(default_factory=CuesSection)


ENV_PREFIX = "RETROTREAD_"
ENV_DELIMITER = "__"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host.strip("[]"), int(port)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the file (if given or present at the default place), then the environment, then
    ``overrides`` (from the command line, as nested dicts; None means not given): each beats the
    one before. Errors are one clear ``ConfigError``."""
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
    _merge(data, _from_environment(os.environ))
    for section, values in overrides.items():
        _merge(data, {section: {k: v for k, v in values.items() if v is not None}})
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, source)) from None


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``RETROTREAD_<SECTION>__<KEY>`` variables as nested dicts, names in any case.

    ``RETROTREAD_<SECTION>`` alone is the whole section as a JSON object, and a list key's value is
    a JSON list (``RETROTREAD_CUES__ENABLED='["go"]'``); other values stay strings for the models
    to read as they read the file's. Variables naming no section (``RETROTREAD_URL``,
    ``RETROTREAD_TOKEN``) belong to the client commands and are left alone.
    """
    sections = Settings.model_fields
    whole: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        section, *path = name[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER)
        if section not in sections:
            continue
        if not path:
            whole[section] = _json(name, section, raw, 'an object, e.g. \'{"id": "belt1"}\'')
            continue
        model = sections[section].annotation
        field = model.model_fields.get(path[0]) if isinstance(model, type) and issubclass(model, BaseModel) else None
        value: Any = raw
        if len(path) == 1 and field is not None and get_origin(field.annotation) in (list, dict):
            value = _json(name, f"{section}.{path[0]}", raw, 'a list, e.g. \'["a", "b"]\'')
        node = keys.setdefault(section, {})
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[path[-1]] = value
    return _merge(whole, keys)


def _json(name: str, key: str, raw: str, shape: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ConfigError(f"config: {key} = {raw!r}: expected JSON, {shape} (set in {name})") from None


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` into ``base``, table by table. A table given as something else (``daemon = 5``)
    is kept as it stands, so that its error is reported rather than hidden by an override."""
    for key, value in over.items():
        if isinstance(value, Mapping) and key in base:
            if isinstance(base[key], dict):
                _merge(base[key], value)
            continue
        base[key] = dict(value) if isinstance(value, Mapping) else value
    return base


def _one_line(exc: ValidationError, source: Path | None) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    where = f" in {source}" if source else ""
    # A list item's index is part of the key (cues.enabled.1) but not of a variable's name.
    env = ENV_PREFIX + ENV_DELIMITER.join(str(p) for p in err["loc"] if isinstance(p, str)).upper()
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"config{where}: unknown key {key!r} (or {env})"
    return f"config{where}: {key} = {err.get('input')!r}: {msg} (set in the file or {env})"
