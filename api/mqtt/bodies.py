"""Command payloads: parsed into the JSON bodies each command takes, and the results answered."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from retrotread.safety.supervisor import Decision

MAX_COMMAND_BYTES = 4096  # a command body is a few dozen bytes; anything bigger is refused unread
MAX_REASON_CHARS = 200  # a stop's reason is kept to this many characters
UNREADABLE = "unreadable"  # the reason recorded for a stop whose payload could not be read (S5)

COMMANDS = ("estop", "reset", "start", "speed", "stop", "incline", "session")
OPEN_COMMANDS = frozenset({"estop", "stop"})  # S16: a stop never needs a token
STOPS = OPEN_COMMANDS  # S5: carried out before their payload is read, whatever it is; never refused

# JSON numbers only, as on HTTP: "1.0" or true is malformed, never coerced. NaN and Infinity parse
# as numbers and are refused by the supervisor naming S1; integers too big for a float are malformed.
Number = Annotated[float, Field(strict=True)]
CommandId = Annotated[StrictStr, Field(max_length=100)] | StrictInt


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: CommandId | None = None
    token: Annotated[StrictStr, Field(max_length=500)] | None = None


class NoArgs(Body):
    pass


class SpeedBody(Body):
    speed_mph: Number


class InclineBody(Body):
    incline_pct: Number


class SessionBody(Body):
    action: Literal["pause", "resume", "skip", "abort"] | None = None
    plan: Annotated[StrictStr, Field(max_length=100)] | None = None
    sets: Annotated[StrictInt, Field(ge=1, le=50)] | None = None
    work_s: Annotated[float, Field(strict=True, ge=1, le=14400)] | None = None
    rest_s: Annotated[float, Field(strict=True, ge=0, le=14400)] | None = None
    countdown_s: Annotated[float, Field(strict=True, ge=0, le=600)] | None = None
    speed_mph: Number | None = None


# The commands whose body is parsed before they are carried out: every one but the stops.
BODIES: dict[str, type[Body]] = {
    "reset": NoArgs,
    "start": SpeedBody,
    "speed": SpeedBody,
    "incline": InclineBody,
    "session": SessionBody,
}


class Refused(Exception):
    """A command answered ``ok: false`` before it reached the controller."""

    def __init__(self, error: str, rule: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.rule = rule


@dataclass(frozen=True, slots=True)
class StopNote:
    """What could be read from a stop's payload once the stop went out (S5): its ``id`` to echo,
    and its ``reason`` (None when none was given; ``UNREADABLE`` when the payload or the reason
    could not be read)."""

    id: str | int | None
    reason: str | None


def read_stop(payload: bytes) -> StopNote:
    """A stop's payload, read leniently and within the bound: never raises, never refuses."""
    try:
        body = parse_object(payload)
    except Refused:
        return StopNote(None, UNREADABLE)
    cmd_id = peek_id(body)
    reason = body.get("reason")
    if reason is None or reason == "":
        return StopNote(cmd_id, None)
    if not isinstance(reason, str):
        return StopNote(cmd_id, UNREADABLE)
    return StopNote(cmd_id, reason[:MAX_REASON_CHARS])


def parse_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_COMMAND_BYTES:
        raise Refused(f"payload of {len(payload)} bytes is too large (at most {MAX_COMMAND_BYTES})")
    if not payload.strip():
        return {}
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise Refused(f"payload is not JSON: {_short(exc)}") from None
    if not isinstance(body, dict):
        raise Refused(f"payload must be a JSON object, not {type(body).__name__}")
    return body


def peek_id(body: dict[str, Any] | bytes) -> str | int | None:
    """The command's ``id`` if it has a usable one, to echo even when the rest is malformed."""
    if isinstance(body, bytes):
        try:
            body = parse_object(body)
        except Refused:
            return None
    value = body.get("id")
    if isinstance(value, str) and len(value) <= 100:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return value
    return None


def malformed(exc: ValidationError) -> Refused:
    errors = exc.errors(include_url=False, include_input=False)
    where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
    msg = errors[0]["msg"] if errors else "malformed"
    # A bad speed is a speed request refused, as on HTTP: name S1.
    speed = any("speed_mph" in map(str, e.get("loc", ())) for e in errors)
    return Refused(f"{where}: {msg}" if where else msg, "S1" if speed else None)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def reply(name: str, cmd_id: str | int | None, *, error: str | None = None, rule: str | None = None) -> dict[str, Any]:
    return {"cmd": name[:64], "id": cmd_id, "ok": error is None, "error": error, "rule": rule}


def reply_to_decision(name: str, cmd_id: str | int | None, decision: Decision) -> dict[str, Any]:
    refusal = decision.refusal
    if refusal is None:
        return reply(name, cmd_id)
    return reply(name, cmd_id, error=refusal.error, rule=refusal.rule.value if refusal.rule else None)
