"""CSAFE frames and commands as bytes and values: the sans-IO half of the ``csafe://`` driver.

What the serial driver, the CSAFE simulator and ``retrotread decode csafe`` share (``docs/csafe.md``):

- ``Command`` values and their builders (``set_speed``, ``get_speed``, ``stop_commands`` …), and
  ``encode_frame`` / ``encode_contents``, which add flags, checksum and byte stuffing;
- ``FrameDecoder``, a stream framer that takes bytes as they come off the wire and hands back
  ``Frame`` values (or ``BadFrame`` when a frame was dropped, or ``NEED_MORE``); it skips garbage and
  resyncs at the next start flag, it never gets stuck and never raises;
- ``parse_response`` (status byte and answers) with typed decoders for the answers a treadmill
  gives (``decode_speed`` …) and ``decode_request`` for frames a host sent.

``describe_frame`` (one JSON object per frame, ``retrotread decode csafe``) is presentation and
lives in ``drivers.csafe.describe``, which imports this module (never the other way round).

Errors say whose fault (``drivers.errors``): ``LocalProtocolError`` when we were asked to build a
frame that cannot exist, ``CsafeFrameError`` / ``CsafeUnitError`` (``RemoteProtocolError``) when
bytes from the line do not make sense.

This module must not do I/O, keep time or import asyncio, pyserial or anything of ours beyond
``drivers.errors`` and ``drivers.units``. It does not enforce the speed envelope (rule S1): that is
the supervisor's job. It only rounds the way it is told (rule S2).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from functools import reduce
from operator import xor
from typing import Final, TypeAlias

from retrotread.drivers.errors import LocalProtocolError, RemoteProtocolError
from retrotread.drivers.units import ZERO, Rounding, Speed, SpeedUnit, steps

__all__ = [
    "EXTENDED_START",
    "MAX_FRAME_BYTES",
    "METRES_PER_DISTANCE_COUNT",
    "NEED_MORE",
    "STANDARD_START",
    "STOP",
    "Answer",
    "BadFrame",
    "Command",
    "CommandCode",
    "CsafeFrameError",
    "CsafeUnitError",
    "Direction",
    "Frame",
    "FrameDecoder",
    "MachineState",
    "Payload",
    "PreviousFrame",
    "Response",
    "Status",
    "Unit",
    "UnitSystem",
    "UserInfo",
    "Version",
    "WorkTime",
    "decode_error_code",
    "decode_frame",
    "decode_grade",
    "decode_horizontal",
    "decode_odometer",
    "decode_request",
    "decode_service_code",
    "decode_speed",
    "decode_timeout",
    "decode_twork",
    "decode_u16_unit",
    "decode_units",
    "decode_user_info",
    "decode_utilization",
    "decode_version",
    "encode_contents",
    "encode_frame",
    "encode_grade",
    "encode_speed",
    "get_error_code",
    "get_grade",
    "get_horizontal",
    "get_odometer",
    "get_service_code",
    "get_speed",
    "get_status",
    "get_twork",
    "get_units",
    "get_utilization",
    "get_version",
    "go_finished",
    "go_idle",
    "go_in_use",
    "parse_response",
    "set_grade",
    "set_speed",
    "set_timeout",
    "set_twork",
    "stop_commands",
    "unit_for",
]

# --- flags and limits (csafe.md "Frames") -----------------------------------------------------

EXTENDED_START: Final = 0xF0
STANDARD_START: Final = 0xF1
STOP: Final = 0xF2
STUFF: Final = 0xF3

MAX_FRAME_BYTES: Final = 96
"""csafe.md: "Frames stay under 96 bytes". We never write a frame this long (flags included);
the decoder drops a frame that grows past it without an end flag."""

_START_FLAGS = re.compile(rb"[\xf0\xf1]")
_ANY_FLAG = re.compile(rb"[\xf0\xf1\xf2]")
_U16_UNIT = struct.Struct("<HB")
_VERSION = struct.Struct("<BBBHH")
_USER_INFO = struct.Struct("<HBBB")
_ODOMETER = struct.Struct("<IB")


class CsafeFrameError(RemoteProtocolError):
    """Bytes from the line that do not form a CSAFE frame, request or answer."""


class CsafeUnitError(RemoteProtocolError):
    """A value came with a unit byte we cannot read it in (unknown, or of another quantity).

    csafe.md: "the unit byte is authoritative; unknown units are an error, not a guess".
    """

    def __init__(self, unit: int, quantity: str, command: str) -> None:
        self.unit = unit
        self.quantity = quantity
        try:
            known = f"{unit} ({Unit(unit).label})"
        except ValueError:
            known = f"{unit} (not a CSAFE unit we know)"
        super().__init__(
            f"{command} answered in unit {known}, which is not a {quantity} unit; the unit byte "
            f"is authoritative (csafe.md), so no {quantity} is read from it"
        )


# --- codes ------------------------------------------------------------------------------------


class CommandCode(IntEnum):
    """The CSAFE commands a treadmill driver uses (csafe.md), under their CSAFE names."""

    GetStatus = 0x80
    Reset = 0x81
    GoIdle = 0x82
    GoHaveID = 0x83
    GoInUse = 0x85
    GoFinished = 0x86
    GoReady = 0x87
    GetVersion = 0x91
    GetUnits = 0x93
    GetUtilization = 0x99
    GetOdometer = 0x9B
    GetErrorCode = 0x9C
    GetServiceCode = 0x9D
    GetTWork = 0xA0
    GetHorizontal = 0xA1
    GetSpeed = 0xA5
    GetGrade = 0xA8
    GetUserInfo = 0xAB
    SetTimeout = 0x13
    SetTWork = 0x20
    SetSpeed = 0x25
    SetGrade = 0x28


class Unit(IntEnum):
    """CSAFE unit codes (csafe.md "Unit codes"); ``label`` names them for people."""

    MILE = 1
    MILE_TENTHS = 2
    MILE_HUNDREDTHS = 3
    MILE_THOUSANDTHS = 4
    FOOT = 5
    # Weight units are not in csafe.md; the GetUserInfo capture (qdomyos-zwift #1045) answers
    # weight 82 in unit 39, which the public CSAFE unit table names kg. Confirm on hardware.
    POUND = 7
    POUND_TENTHS = 8
    MPH = 16
    MPH_TENTHS = 17
    MPH_HUNDREDTHS = 18
    FEET_PER_MINUTE = 19
    KM = 33
    KM_TENTHS = 34
    KM_HUNDREDTHS = 35
    METRE = 36
    KG = 39
    KG_TENTHS = 40
    KMH = 48
    KMH_TENTHS = 49
    KMH_HUNDREDTHS = 50
    METRES_PER_MINUTE = 51
    GRADE_PERCENT = 74
    GRADE_HUNDREDTHS_PERCENT = 75
    GRADE_TENTHS_PERCENT = 76
    REV_PER_MINUTE = 82
    BEATS_PER_MINUTE = 85
    WATT = 88

    @property
    def label(self) -> str:
        return _UNIT_LABELS[self]


_UNIT_LABELS: Final[Mapping[Unit, str]] = {
    Unit.MILE: "mi",
    Unit.MILE_TENTHS: "0.1 mi",
    Unit.MILE_HUNDREDTHS: "0.01 mi",
    Unit.MILE_THOUSANDTHS: "0.001 mi",
    Unit.FOOT: "ft",
    Unit.POUND: "lb",
    Unit.POUND_TENTHS: "0.1 lb",
    Unit.MPH: "mph",
    Unit.MPH_TENTHS: "0.1 mph",
    Unit.MPH_HUNDREDTHS: "0.01 mph",
    Unit.FEET_PER_MINUTE: "ft/min",
    Unit.KM: "km",
    Unit.KM_TENTHS: "0.1 km",
    Unit.KM_HUNDREDTHS: "0.01 km",
    Unit.METRE: "m",
    Unit.KG: "kg",
    Unit.KG_TENTHS: "0.1 kg",
    Unit.KMH: "km/h",
    Unit.KMH_TENTHS: "0.1 km/h",
    Unit.KMH_HUNDREDTHS: "0.01 km/h",
    Unit.METRES_PER_MINUTE: "m/min",
    Unit.GRADE_PERCENT: "%",
    Unit.GRADE_HUNDREDTHS_PERCENT: "0.01 %",
    Unit.GRADE_TENTHS_PERCENT: "0.1 %",
    Unit.REV_PER_MINUTE: "rev/min",
    Unit.BEATS_PER_MINUTE: "bpm",
    Unit.WATT: "W",
}


class PreviousFrame(IntEnum):
    """Status bits 0x30: what the equipment made of the frame before this one."""

    OK = 0
    REJECTED = 1
    BAD = 2
    NOT_READY = 3


class MachineState(IntEnum):
    """Status bits 0x0F: the equipment's state machine.

    ``UNKNOWN`` stands for the nibbles csafe.md does not name (4, 10-15): a status byte with one of
    them still decodes (``Status.state_code`` keeps the raw value), so the answers in the same
    frame (speed, distance) are not lost to one odd nibble; the driver decides what an unknown
    state means for the belt.
    """

    UNKNOWN = -1
    ERROR = 0
    READY = 1
    IDLE = 2
    HAVE_ID = 3
    IN_USE = 5
    PAUSE = 6
    FINISHED = 7
    MANUAL = 8
    OFFLINE = 9


class UnitSystem(IntEnum):
    """The GetUnits answer."""

    METRIC = 0
    ENGLISH = 1


class Direction(Enum):
    """Who sent a frame: the host (a request) or the equipment (a response)."""

    REQUEST = "request"
    RESPONSE = "response"


# --- unit tables ------------------------------------------------------------------------------

_FEET_PER_MINUTE_IN_MPS = 0.3048 / 60
_METRES_PER_MINUTE_IN_MPS = 1 / 60


@dataclass(frozen=True, slots=True)
class SpeedScale:
    """How one CSAFE speed unit turns its u16 into a ``Speed`` and back.

    ``step`` is one count in the unit's own quantity (0.01 for 0.01 mph); ``quantity`` reads that
    quantity off a ``Speed`` (mph, km/h, ft/min …) and ``speed_of`` builds a ``Speed`` from it.
    Working in the unit's own quantity, as ``drivers.units`` does, keeps 1.2 mph at exactly 120
    steps of 0.01 mph (rule S2).
    """

    step: float
    quantity: Callable[[Speed], float]
    speed_of: Callable[[float], Speed]

    def to_count(self, speed: Speed, rounding: Rounding) -> int:
        return steps(self.quantity(speed), self.step, rounding)

    def from_count(self, count: int) -> Speed:
        # count / 100 rather than count * 0.01: the division is exact where the product is not.
        per_unit = round(1 / self.step)
        return self.speed_of(count / per_unit)


def _scale_of(unit: SpeedUnit) -> SpeedScale:
    return SpeedScale(unit.step, unit.quantity.of, unit.quantity.speed)


def _per_minute(mps_per_count: float) -> SpeedScale:
    """A unit ``drivers.units`` has no grid for (feet or metres per minute): whole counts of it."""
    return SpeedScale(1.0, lambda s: s.mps / mps_per_count, lambda v: Speed(v * mps_per_count))


SPEED_SCALES: Final[Mapping[Unit, SpeedScale]] = {
    Unit.MPH: _scale_of(SpeedUnit.MPH),
    Unit.MPH_TENTHS: _scale_of(SpeedUnit.MPH_TENTHS),
    Unit.MPH_HUNDREDTHS: _scale_of(SpeedUnit.MPH_HUNDREDTHS),
    Unit.FEET_PER_MINUTE: _per_minute(_FEET_PER_MINUTE_IN_MPS),
    Unit.KMH: _scale_of(SpeedUnit.KMH),
    Unit.KMH_TENTHS: _scale_of(SpeedUnit.KMH_TENTHS),
    Unit.KMH_HUNDREDTHS: _scale_of(SpeedUnit.KMH_HUNDREDTHS),
    Unit.METRES_PER_MINUTE: _per_minute(_METRES_PER_MINUTE_IN_MPS),
}
"""The speed units (csafe.md). rev/min (82) is deliberately absent: it is a cadence, not a belt
speed, and ellipticals report it where a treadmill reports speed."""

_SPEED_UNIT_CODES: Final[Mapping[SpeedUnit, Unit]] = {
    SpeedUnit.MPH: Unit.MPH,
    SpeedUnit.MPH_TENTHS: Unit.MPH_TENTHS,
    SpeedUnit.MPH_HUNDREDTHS: Unit.MPH_HUNDREDTHS,
    SpeedUnit.KMH: Unit.KMH,
    SpeedUnit.KMH_TENTHS: Unit.KMH_TENTHS,
    SpeedUnit.KMH_HUNDREDTHS: Unit.KMH_HUNDREDTHS,
}

METRES_PER_DISTANCE_COUNT: Final[Mapping[Unit, float]] = {
    Unit.MILE: 1609.344,
    Unit.MILE_TENTHS: 160.9344,
    Unit.MILE_HUNDREDTHS: 16.09344,
    Unit.MILE_THOUSANDTHS: 1.609344,
    Unit.FOOT: 0.3048,
    Unit.KM: 1000.0,
    Unit.KM_TENTHS: 100.0,
    Unit.KM_HUNDREDTHS: 10.0,
    Unit.METRE: 1.0,
}
"""The distance units (csafe.md), as metres per count of the u16."""

GRADE_STEPS: Final[Mapping[Unit, float]] = {
    Unit.GRADE_PERCENT: 1.0,
    Unit.GRADE_HUNDREDTHS_PERCENT: 0.01,
    Unit.GRADE_TENTHS_PERCENT: 0.1,
}
"""The grade units (csafe.md), as percent per count of the u16."""


def unit_for(speed_unit: SpeedUnit) -> Unit:
    """The CSAFE unit code of a ``drivers.units.SpeedUnit`` (a driver URL's ``unit=mph``)."""
    return _SPEED_UNIT_CODES[speed_unit]


def _speed_scale(unit: int, command: str) -> SpeedScale:
    try:
        return SPEED_SCALES[Unit(unit)]
    except (ValueError, KeyError):
        raise CsafeUnitError(unit, "speed", command) from None


# --- commands (host to equipment) -------------------------------------------------------------


_NAMED_CODES: Final = frozenset(int(code) for code in CommandCode)


def _command_name(code: int) -> str:
    try:
        return CommandCode(code).name
    except ValueError:
        return f"0x{code:02x}"


@dataclass(frozen=True, slots=True)
class Command:
    """One CSAFE command as the host sends it.

    A short command (0x80-0xFF) is its code alone; a long command (0x00-0x7F) is code, length,
    data (csafe.md "Frames"). A ``Command`` that cannot go on the wire cannot be built.
    """

    code: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFF:
            raise LocalProtocolError(f"a CSAFE command code is one byte, got {self.code!r}")
        if self.code >= 0x80 and self.data:
            raise LocalProtocolError(
                f"{self.name} is a short command (0x80-0xFF) and carries no data, got {len(self.data)} bytes"
            )
        if len(self.data) > 0xFF:
            raise LocalProtocolError(f"{self.name} data is {len(self.data)} bytes; a long command carries at most 255")

    @property
    def name(self) -> str:
        """The CSAFE name (``GetSpeed``), or the hex code of a command this module does not name."""
        return _command_name(self.code)

    @property
    def is_short(self) -> bool:
        return self.code >= 0x80

    def encode(self) -> bytes:
        """The command's bytes inside a frame's contents."""
        if self.is_short:
            return bytes((self.code,))
        return bytes((self.code, len(self.data))) + self.data


def encode_speed(speed: Speed, unit: int, rounding: Rounding = Rounding.NEAREST) -> bytes:
    """``u16 speed + unit``, the payload of SetSpeed and of a GetSpeed answer.

    ``rounding`` picks the grid step when the speed falls between two: the caller rounds toward
    the inside of the envelope (rule S2: 1.2 mph DOWN, 0.8 mph UP).
    """
    if not speed.is_finite() or speed.mps < 0:
        raise LocalProtocolError(f"cannot encode a CSAFE speed of {speed.mps!r} m/s")
    try:
        scale = SPEED_SCALES[Unit(unit)]
    except (ValueError, KeyError):
        raise LocalProtocolError(f"unit {unit} is not a CSAFE speed unit") from None
    count = scale.to_count(speed, rounding)
    if count > 0xFFFF:
        raise LocalProtocolError(f"{speed} is {count} counts of {Unit(unit).label}, over a u16")
    return _U16_UNIT.pack(count, unit)


def encode_grade(pct: float, unit: int, rounding: Rounding = Rounding.NEAREST) -> bytes:
    """``u16 grade + unit``, the payload of SetGrade and of a GetGrade answer."""
    try:
        step = GRADE_STEPS[Unit(unit)]
    except (ValueError, KeyError):
        raise LocalProtocolError(f"unit {unit} is not a CSAFE grade unit") from None
    if not math.isfinite(pct) or pct < 0:
        # The grade is an unsigned u16 in csafe.md: a decline cannot be written.
        raise LocalProtocolError(f"cannot encode a CSAFE grade of {pct!r} %")
    count = steps(pct, step, rounding)
    if count > 0xFFFF:
        raise LocalProtocolError(f"grade {pct} % is {count} counts of {step} %, over a u16")
    return _U16_UNIT.pack(count, unit)


def set_speed(speed: Speed, unit: int, rounding: Rounding = Rounding.NEAREST) -> Command:
    """SetSpeed: ``25 03 <u16 speed> <unit>``."""
    return Command(CommandCode.SetSpeed, encode_speed(speed, unit, rounding))


def set_grade(pct: float, unit: int, rounding: Rounding = Rounding.NEAREST) -> Command:
    """SetGrade: ``28 03 <u16 grade> <unit>``."""
    return Command(CommandCode.SetGrade, encode_grade(pct, unit, rounding))


def set_timeout(seconds: int) -> Command:
    """SetTimeout: how long the equipment waits in a state before it gives up, in seconds."""
    if not 0 <= seconds <= 0xFF:
        raise LocalProtocolError(f"SetTimeout takes 0-255 s, got {seconds!r}")
    return Command(CommandCode.SetTimeout, bytes((seconds,)))


def set_twork(hours: int, minutes: int, seconds: int) -> Command:
    """SetTWork: the workout time as hours, minutes, seconds."""
    if not (0 <= hours <= 0xFF and 0 <= minutes < 60 and 0 <= seconds < 60):
        raise LocalProtocolError(f"SetTWork takes h 0-255, m 0-59, s 0-59, got {hours}:{minutes}:{seconds}")
    return Command(CommandCode.SetTWork, bytes((hours, minutes, seconds)))


def get_status() -> Command:
    return Command(CommandCode.GetStatus)


def reset() -> Command:
    return Command(CommandCode.Reset)


def go_idle() -> Command:
    return Command(CommandCode.GoIdle)


def go_have_id() -> Command:
    return Command(CommandCode.GoHaveID)


def go_in_use() -> Command:
    return Command(CommandCode.GoInUse)


def go_finished() -> Command:
    return Command(CommandCode.GoFinished)


def go_ready() -> Command:
    return Command(CommandCode.GoReady)


def get_version() -> Command:
    return Command(CommandCode.GetVersion)


def get_units() -> Command:
    return Command(CommandCode.GetUnits)


def get_error_code() -> Command:
    return Command(CommandCode.GetErrorCode)


def get_utilization() -> Command:
    return Command(CommandCode.GetUtilization)


def get_odometer() -> Command:
    return Command(CommandCode.GetOdometer)


def get_service_code() -> Command:
    return Command(CommandCode.GetServiceCode)


def get_twork() -> Command:
    return Command(CommandCode.GetTWork)


def get_horizontal() -> Command:
    return Command(CommandCode.GetHorizontal)


def get_speed() -> Command:
    return Command(CommandCode.GetSpeed)


def get_grade() -> Command:
    return Command(CommandCode.GetGrade)


def get_user_info() -> Command:
    return Command(CommandCode.GetUserInfo)


def stop_commands(unit: int) -> tuple[Command, ...]:
    """The stop of csafe.md: SetSpeed 0 and GoFinished, to go out in one frame.

    There is no single stop opcode; the caller keeps polling GetSpeed until it reads 0 (rule S5).
    """
    return (set_speed(ZERO, unit), go_finished())


# --- frames -----------------------------------------------------------------------------------


def _checksum(contents: bytes) -> int:
    return reduce(xor, contents, 0)


def _stuff(raw: bytes) -> bytes:
    if max(raw, default=0) < EXTENDED_START:
        return raw  # the usual case at 10 Hz: nothing to escape
    # F3 first, so the F3 bytes the other replacements add are not escaped twice.
    return (
        raw.replace(b"\xf3", b"\xf3\x03")
        .replace(b"\xf0", b"\xf3\x00")
        .replace(b"\xf1", b"\xf3\x01")
        .replace(b"\xf2", b"\xf3\x02")
    )


def _unstuff(body: bytes) -> bytes | str:
    """The bytes ``body`` stands for, or the reason it is not valid stuffing."""
    if STUFF not in body:
        return body
    first, *rest = body.split(b"\xf3")
    out = bytearray(first)
    for part in rest:
        if not part:
            return "F3 at the end of a frame, with nothing to escape"
        if part[0] > 0x03:
            return f"F3 {part[0]:02X} is not a stuffing sequence (F3 00-03)"
        out.append(EXTENDED_START + part[0])
        out += part[1:]
    return bytes(out)


def encode_contents(raw: bytes, *, dst: int | None = None, src: int | None = None) -> bytes:
    """Frame arbitrary contents: ``F1 <contents> <checksum> F2``, stuffed.

    With ``dst`` and ``src``, an extended frame ``F0 <dst> <src> <contents> <checksum> F2``; the
    checksum covers the contents only (csafe.md "Frames").
    """
    raw = bytes(raw)
    if not raw:
        raise LocalProtocolError("a CSAFE frame carries at least one command or a status byte")
    body = raw + bytes((_checksum(raw),))
    if dst is None and src is None:
        frame = bytes((STANDARD_START,)) + _stuff(body) + bytes((STOP,))
    elif dst is not None and src is not None:
        if not (0 <= dst <= 0xFF and 0 <= src <= 0xFF):
            raise LocalProtocolError(f"CSAFE addresses are one byte, got dst={dst} src={src}")
        frame = bytes((EXTENDED_START,)) + _stuff(bytes((dst, src)) + body) + bytes((STOP,))
    else:
        raise LocalProtocolError("an extended frame needs both dst and src")
    if len(frame) >= MAX_FRAME_BYTES:
        raise LocalProtocolError(
            f"frame would be {len(frame)} bytes stuffed; CSAFE frames stay under "
            f"{MAX_FRAME_BYTES} (split the commands over several frames)"
        )
    return frame


def encode_frame(commands: Sequence[Command]) -> bytes:
    """A standard frame carrying ``commands`` back to back (a command never straddles frames)."""
    if not commands:
        raise LocalProtocolError("a CSAFE request frame needs at least one command")
    return encode_contents(b"".join(command.encode() for command in commands))


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame off the wire, checksum verified and unstuffed. ``dst``/``src`` for extended."""

    contents: bytes
    dst: int | None = None
    src: int | None = None

    @property
    def extended(self) -> bool:
        return self.dst is not None


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame the decoder dropped, with why and the bytes it dropped (flags included)."""

    reason: str
    raw: bytes


class NeedMoreBytes(Enum):
    """The decoder has no whole frame yet: feed it more bytes. "Need more" is a value."""

    NEED_MORE = "need_more"


NEED_MORE: Final = NeedMoreBytes.NEED_MORE


def _frame_of(raw: bytes) -> Frame | BadFrame:
    """Decode one whole frame, flag to flag (``raw[0]`` is F0/F1, ``raw[-1]`` is F2)."""
    body = _unstuff(raw[1:-1])
    if isinstance(body, str):
        return BadFrame(body, raw)
    dst: int | None = None
    src: int | None = None
    if raw[0] == EXTENDED_START:
        if len(body) < 3:
            return BadFrame("extended frame shorter than dst, src and checksum", raw)
        dst, src, body = body[0], body[1], body[2:]
    if len(body) < 2:
        return BadFrame("frame without contents", raw)
    contents, checksum = body[:-1], body[-1]
    if _checksum(contents) != checksum:
        return BadFrame(f"checksum {checksum:02X}, contents give {_checksum(contents):02X}", raw)
    return Frame(contents, dst, src)


class FrameDecoder:
    """Cuts a CSAFE byte stream into frames; the h11 / pymodbus-framer way.

    ``feed()`` bytes as they arrive, then call ``next_frame()`` until it returns ``NEED_MORE``.
    It returns a ``Frame``, or a ``BadFrame`` for a frame it dropped (bad checksum, bad stuffing,
    a start flag before the end flag, longer than ``MAX_FRAME_BYTES``): errors are values, never
    exceptions, so the decoder is always usable afterwards. After a bad frame it resyncs at the
    next start flag (F0 or F1). Bytes before a start flag (line noise, the tail of a frame whose
    start we missed) are skipped silently and counted in ``skipped_bytes``.

    Counters: ``frames`` good frames, ``bad_frames`` dropped frames, ``skipped_bytes`` bytes of
    garbage outside any frame (dropped frames' bytes are in their ``BadFrame.raw``).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.frames = 0
        self.bad_frames = 0
        self.skipped_bytes = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buffer)

    def next_frame(self) -> Frame | BadFrame | NeedMoreBytes:
        buffer = self._buffer
        start = _START_FLAGS.search(buffer)
        if start is None:
            self.skipped_bytes += len(buffer)
            buffer.clear()
            return NEED_MORE
        if start.start():
            self.skipped_bytes += start.start()
            del buffer[: start.start()]
        flag = _ANY_FLAG.search(buffer, 1, MAX_FRAME_BYTES)
        if flag is None:
            if len(buffer) < MAX_FRAME_BYTES:
                return NEED_MORE
            # No end flag within the longest frame there is: drop what we have up to the next
            # start flag, so a lost F2 costs one frame and not the stream.
            following = _START_FLAGS.search(buffer, 1)
            end = following.start() if following else len(buffer)
            return self._drop(f"no end flag within {MAX_FRAME_BYTES} bytes", end)
        end = flag.start()
        if buffer[end] != STOP:
            # A start flag cannot appear inside a frame (stuffing hides it), so the frame we were
            # in lost its end: drop it and start over at this flag.
            return self._drop("start flag before the end flag", end)
        raw = bytes(buffer[: end + 1])
        del buffer[: end + 1]
        result = _frame_of(raw)
        if isinstance(result, BadFrame):
            self.bad_frames += 1
        else:
            self.frames += 1
        return result

    def _drop(self, reason: str, end: int) -> BadFrame:
        raw = bytes(self._buffer[:end])
        del self._buffer[:end]
        self.bad_frames += 1
        return BadFrame(reason, raw)

    def __iter__(self) -> Iterator[Frame | BadFrame]:
        """Everything decodable from the bytes fed so far."""
        while True:
            result = self.next_frame()
            if result is NEED_MORE:
                return
            yield result


def decode_frame(data: bytes) -> Frame:
    """One whole frame, flag to flag, as a ``Frame``; ``CsafeFrameError`` if it is not one."""
    data = bytes(data)
    if len(data) < 3 or data[0] not in (EXTENDED_START, STANDARD_START) or data[-1] != STOP:
        raise CsafeFrameError(f"not a CSAFE frame (F0/F1 … F2): {data.hex(' ')}")
    if len(data) > MAX_FRAME_BYTES:
        raise CsafeFrameError(f"frame of {len(data)} bytes; CSAFE frames stay under 96")
    if _ANY_FLAG.search(data, 1, len(data) - 1):
        raise CsafeFrameError(f"unstuffed flag inside the frame: {data.hex(' ')}")
    result = _frame_of(data)
    if isinstance(result, BadFrame):
        raise CsafeFrameError(f"{result.reason}: {data.hex(' ')}")
    return result


# --- requests ---------------------------------------------------------------------------------


def decode_request(contents: bytes) -> tuple[Command, ...]:
    """Split a request frame's contents into commands (what the simulator and decoder read)."""
    commands: list[Command] = []
    at, end = 0, len(contents)
    while at < end:
        code = contents[at]
        if code >= 0x80:
            commands.append(Command(code))
            at += 1
            continue
        data, at = _block(contents, at, "long command")
        commands.append(Command(code, data))
    return tuple(commands)


def _block(contents: bytes, at: int, what: str) -> tuple[bytes, int]:
    """The data of the ``code, length, data`` block at ``at`` (a long command, an answer) and where
    the next block starts; ``CsafeFrameError`` naming ``what`` when the frame ends inside it."""
    code, end = contents[at], len(contents)
    if at + 1 >= end:
        raise CsafeFrameError(f"{what} 0x{code:02x} at byte {at} has no length byte")
    length = contents[at + 1]
    if at + 2 + length > end:
        raise CsafeFrameError(f"{what} 0x{code:02x} at byte {at} says {length} data bytes, {end - at - 2} follow")
    return bytes(contents[at + 2 : at + 2 + length]), at + 2 + length


parse_request = decode_request
"""The same as ``decode_request``, named to pair with ``parse_response``."""


# --- responses (equipment to host) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """The status byte that starts every response (csafe.md "Status byte").

    ``state_code`` keeps the raw state nibble when ``state`` is ``UNKNOWN`` (None otherwise).
    Bit 0x40 is not in csafe.md's table: it is read past and never written.
    """

    toggle: int
    previous: PreviousFrame
    state: MachineState
    state_code: int | None = None

    def __post_init__(self) -> None:
        if self.toggle not in (0, 1):
            raise LocalProtocolError(f"the frame toggle is a bit, got {self.toggle!r}")
        if self.state is MachineState.UNKNOWN:
            if self.state_code is None or not 0 <= self.state_code <= 0x0F:
                raise LocalProtocolError("an UNKNOWN state needs its raw state_code (0-15)")
        elif self.state_code is not None:
            raise LocalProtocolError(f"state_code is only kept for UNKNOWN states, not {self.state.name}")

    @classmethod
    def from_byte(cls, byte: int) -> Status:
        nibble = byte & 0x0F
        try:
            return cls(byte >> 7, PreviousFrame((byte >> 4) & 0x03), MachineState(nibble))
        except ValueError:
            return cls(byte >> 7, PreviousFrame((byte >> 4) & 0x03), MachineState.UNKNOWN, nibble)

    def to_byte(self) -> int:
        state = self.state_code if self.state is MachineState.UNKNOWN else int(self.state)
        assert state is not None  # __post_init__ guarantees it
        return self.toggle << 7 | self.previous << 4 | state


@dataclass(frozen=True, slots=True)
class Answer:
    """One answered command in a response: ``cmd, length, data``."""

    code: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFF or len(self.data) > 0xFF:
            raise LocalProtocolError(f"an answer is a code byte and at most 255 data bytes: {self}")

    @property
    def name(self) -> str:
        return _command_name(self.code)

    def encode(self) -> bytes:
        return bytes((self.code, len(self.data))) + self.data


@dataclass(frozen=True, slots=True)
class Response:
    """A response frame's contents: the status byte and the answers, in the order sent."""

    status: Status
    answers: tuple[Answer, ...] = ()

    def answer(self, code: int) -> Answer | None:
        """The answer to ``code``, or None: unsupported commands are simply not answered."""
        for answer in self.answers:
            if answer.code == code:
                return answer
        return None

    def encode_contents(self) -> bytes:
        """The contents a device would frame (what the simulator sends)."""
        return bytes((self.status.to_byte(),)) + b"".join(a.encode() for a in self.answers)


def parse_response(contents: bytes) -> Response:
    """A response frame's contents as status and answers; ``CsafeFrameError`` if truncated."""
    if not contents:
        raise CsafeFrameError("a response starts with a status byte; the frame is empty")
    answers: list[Answer] = []
    at, end = 1, len(contents)
    while at < end:
        code = contents[at]
        data, at = _block(contents, at, "answer to")
        answers.append(Answer(code, data))
    return Response(Status.from_byte(contents[0]), tuple(answers))


# --- typed answers ----------------------------------------------------------------------------

Payload: TypeAlias = Answer | Command
"""Decoders read answers; the simulator reads the same layouts out of commands (SetSpeed)."""


def _payload(payload: Payload, size: int) -> bytes:
    if len(payload.data) != size:
        raise CsafeFrameError(f"{payload.name} carries {len(payload.data)} data bytes, its layout has {size}")
    return payload.data


def _u16_unit(payload: Payload) -> tuple[int, int]:
    value, unit = _U16_UNIT.unpack(_payload(payload, 3))
    return int(value), int(unit)


def decode_u16_unit(payload: Payload) -> tuple[int, int]:
    """The ``u16`` count and the unit code as sent, unconverted (speed, distance, grade)."""
    return _u16_unit(payload)


def decode_timeout(payload: Payload) -> int:
    """SetTimeout's seconds (``u8``)."""
    (seconds,) = _payload(payload, 1)
    return seconds


def decode_speed(payload: Payload) -> Speed:
    """GetSpeed answer (or SetSpeed data): ``u16 + unit``; ``CsafeUnitError`` if not a speed unit."""
    count, unit = _u16_unit(payload)
    return _speed_scale(unit, payload.name).from_count(count)


def decode_horizontal(payload: Payload) -> float:
    """GetHorizontal answer: ``u16 + distance unit``, in metres."""
    count, unit = _u16_unit(payload)
    try:
        return count * METRES_PER_DISTANCE_COUNT[Unit(unit)]
    except (ValueError, KeyError):
        raise CsafeUnitError(unit, "distance", payload.name) from None


def decode_grade(payload: Payload) -> float:
    """GetGrade answer (or SetGrade data): ``u16 + grade unit``, in percent."""
    count, unit = _u16_unit(payload)
    try:
        step = GRADE_STEPS[Unit(unit)]
    except (ValueError, KeyError):
        raise CsafeUnitError(unit, "grade", payload.name) from None
    return count / round(1 / step)


@dataclass(frozen=True, slots=True)
class WorkTime:
    """GetTWork / SetTWork: the workout clock as the console shows it."""

    hours: int
    minutes: int
    seconds: int

    @property
    def total_s(self) -> int:
        return self.hours * 3600 + self.minutes * 60 + self.seconds


def decode_twork(payload: Payload) -> WorkTime:
    hours, minutes, seconds = _payload(payload, 3)
    return WorkTime(hours, minutes, seconds)


def decode_units(payload: Payload) -> UnitSystem:
    (value,) = _payload(payload, 1)
    try:
        return UnitSystem(value)
    except ValueError:
        raise CsafeFrameError(f"GetUnits answered {value}; 0 is metric, 1 English") from None


@dataclass(frozen=True, slots=True)
class UserInfo:
    """GetUserInfo: ``u16 weight, weight unit, age, gender``; the unit code is kept as sent."""

    weight: int
    weight_unit: int
    age: int
    gender: int


def decode_user_info(payload: Payload) -> UserInfo:
    weight, unit, age, gender = _USER_INFO.unpack(_payload(payload, _USER_INFO.size))
    return UserInfo(weight, unit, age, gender)


@dataclass(frozen=True, slots=True)
class Version:
    """GetVersion: manufacturer, class id, model (1 byte each), version, release (u16 each)."""

    manufacturer: int
    class_id: int
    model: int
    version: int
    release: int


def decode_version(payload: Payload) -> Version:
    return Version(*_VERSION.unpack(_payload(payload, _VERSION.size)))


def decode_odometer(payload: Payload) -> float:
    """GetOdometer: a ``u32`` and a distance unit; metres. The gym operator's counter (hardware.md,
    after OpenRowingCommunity/csafe-fitness ``lib/commands.dart``; confirm the layout on hardware)."""
    value, unit = _ODOMETER.unpack(_payload(payload, _ODOMETER.size))
    try:
        per_count = METRES_PER_DISTANCE_COUNT[Unit(unit)]
    except (ValueError, KeyError):
        raise CsafeUnitError(int(unit), "distance", "GetOdometer") from None
    return float(value) * per_count


def decode_utilization(payload: Payload) -> int:
    """GetUtilization: hours of use, 3 bytes little-endian (same source and caveat as the odometer)."""
    return int.from_bytes(_payload(payload, 3), "little")


def decode_service_code(payload: Payload) -> int:
    """GetServiceCode: 3 bytes, little-endian like GetErrorCode."""
    return int.from_bytes(_payload(payload, 3), "little")


def decode_error_code(payload: Payload) -> int:
    """GetErrorCode: 3 bytes, little-endian like every CSAFE integer."""
    return int.from_bytes(_payload(payload, 3), "little")
