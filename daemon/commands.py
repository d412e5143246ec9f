"""The command surface: one typed model per action, and the one ``Outcome`` the controller answers.

Every face parses what it receives into these models (an HTTP body, an MQTT payload, CLI
arguments) and hands the command to ``Controller.execute``; none of them declares a limit of its
own. Plan limits come from ``daemon/plans.py``; speed limits are the supervisor's (S1), so a speed
here is any JSON number: NaN and Infinity parse and are refused by the supervisor naming S1.

Wire rules every face keeps (the tests pin them):
- JSON numbers only: ``"1.0"`` or ``true`` is malformed, never coerced; an integer no float holds
  (400 digits) is malformed;
- extra fields are refused;
- a malformed speed names S1 (it is a speed request refused), see ``describe_invalid``;
- the stops (``stop``, ``estop``) are never refused for their body: the faces carry them out
  before they read it (S5), so ``StopCommand`` has no field and ``EStopCommand``'s reason is noted
  afterwards.

Adding a command: a model here (with its ``name``), a case in ``Controller.execute``, one line per
face. docs/commands.md shows one added that way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator
from pydantic_core import PydanticCustomError

from retrotread.daemon.plans import (
    MAX_COUNTDOWN_S,
    MAX_EXTEND_S,
    MAX_PHASE_S,
    MAX_SETS,
    MIN_WORK_S,
    Plan,
    PlanError,
    plan_from,
)
from retrotread.daemon.snapshot import SessionView
from retrotread.drivers.units import Speed
from retrotread.safety.rules import Rule
from retrotread.safety.supervisor import Decision

STOP_REASON_MAX = 200
"""Characters of a stop's reason kept (a face's body is untrusted)."""
PLAN_TEXT_MAX = 100


Number = Annotated[float, Field(strict=True)]
"""A JSON number (never a string or a bool; an integer no float holds is malformed); NaN and
Infinity pass, to be refused by a rule (S1)."""
WorkSeconds = Annotated[float, Field(strict=True, ge=MIN_WORK_S, le=MAX_PHASE_S)]
RestSeconds = Annotated[float, Field(strict=True, ge=0, le=MAX_PHASE_S)]
CountdownSeconds = Annotated[float, Field(strict=True, ge=0, le=MAX_COUNTDOWN_S)]


class Command(BaseModel):
    """One request of a face. ``name`` is the command's name on every face."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str]


class StartCommand(Command):
    name: ClassVar[str] = "start"
    speed_mph: Number = Field(description="belt speed in mph; reverse mode accepts 0.8..1.2 (S1)")


class SpeedCommand(Command):
    """A new belt speed, in mph or in km/h (exactly one: a face that shows km/h sends km/h)."""

    name: ClassVar[str] = "speed"
    speed_mph: Number | None = Field(default=None, description="belt speed in mph; reverse mode accepts 0.8..1.2 (S1)")
    speed_kmh: Number | None = Field(default=None, description="or the belt speed in km/h (1.29..1.93 in reverse mode)")

    @model_validator(mode="after")
    def _one_unit(self) -> SpeedCommand:
        if (self.speed_mph is None) == (self.speed_kmh is None):
            raise PydanticCustomError("speed_mph", "give speed_mph or speed_kmh, one of them")
        return self

    @property
    def speed(self) -> Speed:
        """The speed asked for, whichever unit it came in (drivers.units converts, exactly)."""
        if self.speed_kmh is not None:
            return Speed.from_kmh(self.speed_kmh)
        assert self.speed_mph is not None
        return Speed.from_mph(self.speed_mph)


class InclineCommand(Command):
    name: ClassVar[str] = "incline"
    incline_pct: Number


class StopCommand(Command):
    """A controlled stop: no arguments, never refused (S5), never needs a token (S16)."""

    name: ClassVar[str] = "stop"


class EStopCommand(Command):
    """The emergency stop (S5, latches). Its reason is read after the stop went out."""

    name: ClassVar[str] = "estop"
    reason: Annotated[StrictStr, Field(max_length=STOP_REASON_MAX)] | None = None


class ResetCommand(Command):
    """Clear the latch (S6). Never starts the belt."""

    name: ClassVar[str] = "reset"


class SessionCommand(Command):
    """Start a session: a preset or custom plan text, or sets and seconds."""

    name: ClassVar[str] = "session"
    plan: Annotated[StrictStr, Field(max_length=PLAN_TEXT_MAX)] | None = Field(
        default=None, description="a preset name or e.g. 3x60s/60s"
    )
    sets: Annotated[StrictInt, Field(ge=1, le=MAX_SETS)] | None = None
    work_s: WorkSeconds | None = None
    rest_s: RestSeconds | None = None
    countdown_s: CountdownSeconds | None = None
    speed_mph: Number | None = Field(default=None, description="belt speed for the sets (reverse mode)")

    @model_validator(mode="after")
    def _runnable(self) -> SessionCommand:
        try:
            self.to_plan()
        except PlanError as exc:
            # The message names the plan; as a validation error it is a 422 / a malformed payload.
            raise PydanticCustomError("plan", "{msg}", {"msg": str(exc)}) from None
        return self

    def to_plan(self) -> Plan:
        return plan_from(self.plan, self.sets, self.work_s, self.rest_s, self.countdown_s)


class PauseCommand(Command):
    name: ClassVar[str] = "pause"


class ResumeCommand(Command):
    """A person asks to go on: the one thing besides a start that restarts the belt (S9)."""

    name: ClassVar[str] = "resume"


class SkipCommand(Command):
    name: ClassVar[str] = "skip"


class ExtendCommand(Command):
    """Make the running phase longer (a longer rest, a longer set); the volume cap still holds (S14)."""

    name: ClassVar[str] = "extend"
    seconds: Annotated[float, Field(strict=True, gt=0, le=MAX_EXTEND_S)]


class AbortCommand(Command):
    name: ClassVar[str] = "abort"


SESSION_ACTIONS: dict[str, type[Command]] = {
    c.name: c for c in (PauseCommand, ResumeCommand, SkipCommand, AbortCommand)
}
"""The actions on a running session, by name (HTTP ``/session/{action}``, MQTT ``action``)."""

COMMANDS: dict[str, type[Command]] = {
    c.name: c
    for c in (
        EStopCommand,
        ResetCommand,
        StartCommand,
        SpeedCommand,
        StopCommand,
        InclineCommand,
        SessionCommand,
        ExtendCommand,
    )
}
"""The commands a face takes by name (an MQTT ``cmd/<name>`` topic)."""

STOPS = frozenset({StopCommand.name, EStopCommand.name})
"""Carried out before their body is read, whatever it is; never refused (S5), no token (S16)."""


class Outcome(BaseModel):
    """What the controller answers to a command.

    ``ok`` or not; ``error`` says why not, ``rule`` names the rule that refused it; ``unavailable``
    when the device cannot be reached (not a rule); ``invalid`` when the command itself was
    malformed; ``held`` when a start waits for the standstill window (S4); ``session`` is the
    session's view after a session command.
    """

    model_config = ConfigDict(frozen=True)
    ok: bool = True
    error: str | None = None
    rule: str | None = None
    unavailable: bool = False
    invalid: bool = False
    held: bool = False
    session: SessionView | None = None

    @classmethod
    def of(cls, decision: Decision) -> Outcome:
        refusal = decision.refusal
        if refusal is None:
            return cls(held=decision.held)
        return cls.refused(refusal.error, refusal.rule, unavailable=refusal.unavailable)

    @classmethod
    def refused(
        cls, error: str, rule: Rule | str | None = None, *, unavailable: bool = False, invalid: bool = False
    ) -> Outcome:
        return cls(
            ok=False,
            error=error,
            rule=rule.value if isinstance(rule, Rule) else rule,
            unavailable=unavailable,
            invalid=invalid,
        )


_NOISE = frozenset({"body", "float", "int"})  # FastAPI's location prefix, union members
_SPEEDS = frozenset({"speed_mph", "speed_kmh"})


def _names_speed(error: Mapping[str, Any]) -> bool:
    return bool(_SPEEDS & {*map(str, error.get("loc", ())), str(error.get("type", ""))})


def describe_invalid(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """One line for a command that did not parse, and the rule it names: a bad speed is a speed
    request refused, so it names S1 (on every face)."""
    first = errors[0] if errors else {}
    # "body.speed_mph.float" → "speed_mph": the union member tried is noise to a user.
    where = ".".join(str(p) for p in first.get("loc", ()) if str(p) not in _NOISE)
    if not where and str(first.get("type", "")) in _SPEEDS:
        where = str(first["type"])  # the speed command's one-unit check names its field as its type
    msg = str(first.get("msg", "malformed"))
    rule = Rule.S1.value if any(_names_speed(e) for e in errors) else None
    return (f"{where}: {msg}" if where else msg), rule
