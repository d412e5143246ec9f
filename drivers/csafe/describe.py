"""CSAFE frames as JSON: the presentation half of ``retrotread decode csafe`` (issue 11.8).

``drivers.csafe.codec`` holds the wire format (frames, commands and answers as bytes and back);
``describe_frame`` here turns one frame into a JSON-able dict, guessing whether a host or the
equipment sent it when it is not told (see its docstring).

Like the codec it does no I/O and imports nothing of ours beyond ``drivers``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from retrotread.drivers.csafe.codec import (
    EXTENDED_START,
    STANDARD_START,
    STOP,
    Answer,
    Command,
    CommandCode,
    CsafeFrameError,
    Direction,
    Frame,
    MachineState,
    Payload,
    Response,
    Status,
    Unit,
    decode_error_code,
    decode_frame,
    decode_grade,
    decode_horizontal,
    decode_request,
    decode_speed,
    decode_timeout,
    decode_twork,
    decode_u16_unit,
    decode_units,
    decode_user_info,
    decode_version,
    parse_response,
)
from retrotread.drivers.errors import RemoteProtocolError

__all__ = ["describe_frame"]

_NAMED_CODES: Final = frozenset(int(code) for code in CommandCode)
"""Commands csafe.md names: a frame made of these alone reads as a request."""


def _describe_u16_unit(payload: Payload) -> dict[str, Any]:
    count, unit = decode_u16_unit(payload)
    fields: dict[str, Any] = {"value": count, "unit": unit}
    try:
        fields["unit_name"] = Unit(unit).label
    except ValueError:
        pass
    return fields


def _speed_fields(payload: Payload) -> dict[str, Any]:
    fields = _describe_u16_unit(payload)
    speed = decode_speed(payload)
    fields["speed_mph"] = round(speed.mph, 6)
    fields["speed_kmh"] = round(speed.kmh, 6)
    return fields


def _horizontal_fields(payload: Payload) -> dict[str, Any]:
    fields = _describe_u16_unit(payload)
    fields["distance_m"] = round(decode_horizontal(payload), 6)
    return fields


def _grade_fields(payload: Payload) -> dict[str, Any]:
    fields = _describe_u16_unit(payload)
    fields["grade_pct"] = decode_grade(payload)
    return fields


def _twork_fields(payload: Payload) -> dict[str, Any]:
    t = decode_twork(payload)
    return {"hours": t.hours, "minutes": t.minutes, "seconds": t.seconds, "total_s": t.total_s}


def _user_info_fields(payload: Payload) -> dict[str, Any]:
    u = decode_user_info(payload)
    return {"weight": u.weight, "weight_unit": u.weight_unit, "age": u.age, "gender": u.gender}


def _version_fields(payload: Payload) -> dict[str, Any]:
    v = decode_version(payload)
    return {
        "manufacturer": v.manufacturer,
        "class_id": v.class_id,
        "model": v.model,
        "version": v.version,
        "release": v.release,
    }


def _units_fields(payload: Payload) -> dict[str, Any]:
    return {"units": decode_units(payload).name.lower()}


def _error_code_fields(payload: Payload) -> dict[str, Any]:
    return {"error_code": decode_error_code(payload)}


def _timeout_fields(payload: Payload) -> dict[str, Any]:
    return {"timeout_s": decode_timeout(payload)}


_ANSWER_FIELDS: Final[Mapping[int, Callable[[Payload], dict[str, Any]]]] = {
    CommandCode.GetVersion: _version_fields,
    CommandCode.GetUnits: _units_fields,
    CommandCode.GetErrorCode: _error_code_fields,
    CommandCode.GetTWork: _twork_fields,
    CommandCode.GetHorizontal: _horizontal_fields,
    CommandCode.GetSpeed: _speed_fields,
    CommandCode.GetGrade: _grade_fields,
    CommandCode.GetUserInfo: _user_info_fields,
}

_REQUEST_FIELDS: Final[Mapping[int, Callable[[Payload], dict[str, Any]]]] = {
    CommandCode.SetTimeout: _timeout_fields,
    CommandCode.SetTWork: _twork_fields,
    CommandCode.SetSpeed: _speed_fields,
    CommandCode.SetGrade: _grade_fields,
}


def _describe_payload(payload: Payload, layouts: Mapping[int, Callable[[Payload], dict[str, Any]]]) -> dict[str, Any]:
    described: dict[str, Any] = {"command": payload.name, "code": payload.code}
    layout = layouts.get(payload.code)
    if layout is None:
        if payload.data or isinstance(payload, Answer):
            described["data"] = payload.data.hex(" ")
        return described
    try:
        described.update(layout(payload))
    except RemoteProtocolError as exc:
        # One odd answer (rev/min where a speed was asked) must not hide the rest of the frame:
        # show what was sent, and why it does not read as the quantity asked for.
        described.update(_describe_u16_unit(payload) if len(payload.data) == 3 else {})
        described["data"] = payload.data.hex(" ")
        described["error"] = str(exc)
    return described


def _describe_status(status: Status) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "toggle": status.toggle,
        "previous": status.previous.name.lower(),
        "state": status.state.name.lower(),
    }
    if status.state_code is not None:
        fields["state_code"] = status.state_code
    return fields


def _guess_direction(contents: bytes) -> tuple[Direction, bool]:
    """Request or response, and whether both readings held (see ``describe_frame``)."""
    try:
        response: Response | None = parse_response(contents)
    except CsafeFrameError:
        response = None
    try:
        request: tuple[Command, ...] | None = decode_request(contents)
    except CsafeFrameError:
        request = None
    named_response = response is not None and response.status.state is not MachineState.UNKNOWN
    named_request = bool(request) and all(c.code in _NAMED_CODES for c in request or ())
    if named_response and named_request:
        assert response is not None
        return (Direction.RESPONSE if response.answers else Direction.REQUEST), True
    if named_response:
        return Direction.RESPONSE, False
    if named_request:
        return Direction.REQUEST, False
    if request:
        return Direction.REQUEST, response is not None
    if response is not None:
        return Direction.RESPONSE, False
    raise CsafeFrameError(f"contents {contents.hex(' ')} read neither as a response nor a request")


def describe_frame(data: bytes, direction: Direction | Literal["request", "response"] | None = None) -> dict[str, Any]:
    """One frame as a JSON-able dict, for ``retrotread decode csafe``.

    ``data`` is a whole frame (F0/F1 … F2, checksum verified) or, if it does not start with a start
    flag and end with F2, bare contents. Values are numbers; unit codes are kept as sent, with a
    ``unit_name`` and the converted value where the unit is known; an answer that does not read
    (rev/min where a speed was asked) keeps its raw fields and says why in ``error``.

    A status byte alone is also a valid short command, so without ``direction`` the reading is a
    guess, and the dict says so with ``"ambiguous": true`` when both readings held:

    1. **response** when the first byte is a status byte with a named state and the rest splits
       exactly into ``cmd, length, data`` answers; **request** when the contents split into
       commands this module names (``CommandCode``);
    2. when both hold, a response with answers wins and a status-only response loses (a lone
       ``a5`` is GetSpeed sooner than "toggle 1, previous bad, in use");
    3. when neither holds, any clean split into commands reads as a request (``aa``, a command we
       do not name), else any clean split into status and answers as a response (a state nibble
       csafe.md does not name); else ``CsafeFrameError``.
    """
    frame: Frame | None = None
    if len(data) >= 3 and data[0] in (EXTENDED_START, STANDARD_START) and data[-1] == STOP:
        frame = decode_frame(data)
        contents = frame.contents
    else:
        contents = bytes(data)

    if direction is None:
        chosen, ambiguous = _guess_direction(contents)
    else:
        chosen, ambiguous = Direction(direction), False

    described: dict[str, Any]
    if chosen is Direction.RESPONSE:
        parsed = parse_response(contents)
        described = {
            "direction": chosen.value,
            "status": _describe_status(parsed.status),
            "answers": [_describe_payload(a, _ANSWER_FIELDS) for a in parsed.answers],
        }
    else:
        described = {
            "direction": chosen.value,
            "commands": [_describe_payload(c, _REQUEST_FIELDS) for c in decode_request(contents)],
        }
    if ambiguous:
        described["ambiguous"] = True
    if frame is not None and frame.extended:
        described["dst"] = frame.dst
        described["src"] = frame.src
    return described
