"""Command payloads: parsed into the commands of ``daemon/commands.py``, and the results answered.

A payload is the command's JSON body (the same fields as on HTTP) plus the MQTT envelope: an
optional ``id`` echoed in the result and, when auth is on, the ``token`` (S16). No limit of a
command is declared here: the command models hold them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from retrotread.daemon.commands import COMMANDS as COMMAND_MODELS
from retrotread.daemon.commands import SESSION_ACTIONS, STOP_REASON_MAX, STOPS, Command, Outcome, describe_invalid

MAX_COMMAND_BYTES = 4096  # a command body is a few dozen bytes; anything bigger is refused unread
MAX_REASON_CHARS = STOP_REASON_MAX  # a stop's reason is kept to this many characters
UNREADABLE = "unreadable"  # the reason recorded for a stop whose payload could not be read (S5)

COMMANDS = tuple(COMMAND_MODELS)
OPEN_COMMANDS = STOPS  # S16: a stop never needs a token; S5: carried out before its payload is read

CommandId = Annotated[StrictStr, Field(max_length=100)] | StrictInt


class Envelope(BaseModel):
    """What MQTT adds to a command's body (the transport's, not the command's)."""

    model_config = ConfigDict(frozen=True)
    id: CommandId | None = None
    token: Annotated[StrictStr, Field(max_length=500)] | None = None


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


def parse_command(name: str, body: dict[str, Any]) -> Command:
    """The command ``cmd/<name>`` carries (its body without the envelope), or ``Refused``.

    ``cmd/session`` takes either ``{"action": "pause"}`` (pause, resume, skip, abort) or a plan
    to start."""
    model = COMMAND_MODELS.get(name)
    if model is None:
        raise Refused(f"unknown command {name[:64]!r}; one of {', '.join(COMMANDS)}")
    fields = {k: v for k, v in body.items() if k not in Envelope.model_fields}
    try:
        Envelope.model_validate({k: v for k, v in body.items() if k in Envelope.model_fields})
        if name == "session" and "action" in fields:
            action = fields.pop("action")
            if fields:
                raise Refused(f"give either 'action' or a plan to start, not both (got {', '.join(fields)})")
            if not isinstance(action, str) or action not in SESSION_ACTIONS:
                raise Refused(f"action: use one of {', '.join(SESSION_ACTIONS)}")
            return SESSION_ACTIONS[action]()
        return model.model_validate(fields)
    except ValidationError as exc:
        raise malformed(exc) from None


def malformed(exc: ValidationError) -> Refused:
    error, rule = describe_invalid(exc.errors(include_url=False, include_input=False))
    return Refused(error, rule)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def reply(name: str, cmd_id: str | int | None, *, error: str | None = None, rule: str | None = None) -> dict[str, Any]:
    return {"cmd": name[:64], "id": cmd_id, "ok": error is None, "error": error, "rule": rule}


def reply_to(name: str, cmd_id: str | int | None, outcome: Outcome) -> dict[str, Any]:
    """The ``cmd/result`` of a command the controller answered (with the session view for a
    session command)."""
    out = reply(name, cmd_id, error=None if outcome.ok else (outcome.error or "refused"), rule=outcome.rule)
    if outcome.ok and (name == "session" or outcome.session is not None):
        out["session"] = outcome.session.model_dump(mode="json") if outcome.session is not None else None
    return out
