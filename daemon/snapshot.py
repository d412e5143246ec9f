"""The immutable snapshots the controller publishes: the JSON contract of interfaces.md.

``StateSnapshot`` is the ``GET /api/v1/state`` body and the retained MQTT ``state`` payload;
``SessionView`` is the ``session`` block and the MQTT ``timer`` payload; ``Cue`` a cue. Frozen pydantic models,
so the faces serialize them and the OpenAPI schema documents them from one definition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field, field_validator

from retrotread.daemon.events import CueKind, EventKind, Phase


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


def iso(ts: float) -> str:
    """Wall-clock seconds as ISO 8601 UTC with milliseconds: 2026-11-21T15:03:46.423Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BeltView(_Frozen):
    speed_mph: float
    speed_kmh: float
    incline_pct: float | None
    distance_m: float | None
    moving: bool


class StopView(_Frozen):
    latched: bool
    reason: str | None = None
    rule: str | None = None
    since: str | None = None


class SessionView(_Frozen):
    id: int
    """0 only in the idle view: no session (the history numbers sessions from 1)."""
    plan: str
    phase: Phase
    set: int | None
    """None only in the idle view: no set."""
    sets: int
    remaining_s: float
    elapsed_s: float
    ends_at: str | None
    paused: bool = False

    @classmethod
    def idle(cls) -> SessionView:
        """The timer with no session: published at start-up (it replaces a retained timer of an
        earlier process) and kept as the latest once a session ends, so no face is ever served a
        finished session as the current one (interfaces.md)."""
        return cls(id=0, plan="", phase=Phase.IDLE, set=None, sets=0, remaining_s=0.0, elapsed_s=0.0, ends_at=None)


class Cue(_Frozen):
    """A moment a person hears (docs/cues.md): SSE ``event: cue``, MQTT ``BASE/cue``."""

    kind: CueKind
    text: str
    set: int | None
    remaining_s: float | None
    ts: str
    session: int | None = None
    reason: str | None = None
    """A ``stop`` cue's reason (safety.md's spelling), for the screen."""


class StateSnapshot(_Frozen):
    id: str
    mode: Literal["reverse", "deadmill"]
    driver: str
    connected: bool
    armed: bool
    belt: BeltView | None
    target_mph: float | None
    envelope_mph: tuple[float, float] | None
    stop: StopView
    session: SessionView | None
    ts: str
    seq: int
    target_kmh: float | None = None
    """``target_mph`` in km/h, for faces that show km/h (Home Assistant's number)."""
    envelope_kmh: tuple[float, float] | None = None
    """``envelope_mph`` in km/h to 0.01, rounded toward the inside (S2)."""
    device: dict[str, object] | None = None
    """What the machine says of itself where the driver asks it (maker, model, firmware; CSAFE hours
    of use, odometer, error and service codes); None for simulators and sensors."""


class Telemetry(_Frozen):
    speed_mph: float
    incline_pct: float | None
    distance_m: float | None
    ts: str
    seq: int


class Event(_Frozen):
    kind: EventKind
    rule: str | None = None
    reason: str | None = None
    detail: str = ""
    ts: str
    session: int | None = None
    set: int | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _one_spelling(cls, value: object) -> object:
        # History rows written before the one spelling say "arm-refused": the same kind.
        if isinstance(value, str) and not isinstance(value, EventKind):
            return EventKind.spelled(value) or value
        return value


SetOutcome = Literal["completed", "skipped", "aborted", "stopped", "interrupted", "capped", "safety-stop"]
"""How a set or a session ended (not to be confused with ``daemon.commands.Outcome``, a command's answer).

``stopped`` is a latched stop that cut it (the rule is stored beside it); ``safety-stop`` is that
outcome's spelling in rows written before issue 12, read as it is."""
SIM_SCHEMES = ("sim://", "ftms+sim://")
"""Driver URLs of the simulators: a session recorded on one is ``simulated`` (issue 12)."""
Outcome = SetOutcome  # the history's name for it


class SetResult(_Frozen):
    set: int
    started_at: str
    ended_at: str
    started_mono: float
    ended_mono: float
    work_s: float
    distance_m: float | None
    """None (SQL NULL) for a set with no samples: a timer-only set measures nothing, never 0."""
    avg_mph: float | None
    max_mph: float | None
    outcome: Outcome
    rule: str | None = None
    """The rule of the stop that cut the set (outcome ``stopped``)."""


class SessionRecord(_Frozen):
    id: int
    plan: str
    mode: str
    driver: str
    started_at: str
    ended_at: str | None
    outcome: Outcome | None
    sets_planned: int
    sets: tuple[SetResult, ...]
    events: tuple[Event, ...] = ()
    set_distances_m: tuple[float, ...] = ()
    """The measured work sets' distances in order, stored when the session ends (empty: none measured)."""
    fade_pct: float | None = None
    """Last set's distance against the first's, in percent (negative: a fade); None with fewer than two."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def simulated(self) -> bool:
        """Recorded from a simulator, not a belt (derived from the driver URL, so old rows have it too)."""
        return self.driver.startswith(SIM_SCHEMES)
