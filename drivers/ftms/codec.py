"""Bluetooth FTMS (Fitness Machine Service) values as bytes and back: the sans-IO half of ``ftms://``.

What the FTMS driver, the simulated peripheral (``ftms+sim://``) and ``retrotread decode ftms-*``
share (``docs/ftms.md``; byte vectors in ``tests/vectors/ftms.json``):

- Treadmill Data (0x2ACD): ``decode_treadmill_data`` (the hot path: 10+ Hz per treadmill, figure
  B5), ``encode_treadmill_data``, ``split_treadmill_data`` and ``TreadmillDataAssembler``, which
  merges a record split over several notifications ("need more data" is ``None``, not an error);
- Fitness Machine Feature (0x2ACC), Supported Speed Range (0x2AD4), Supported Inclination Range
  (0x2AD5), Training Status (0x2AD3) and the advertisement's service data: decoders and encoders;
- Control Point (0x2AD9): request values, their encoder (``encode_set_target_speed`` rounds the
  way it is told, rule S2) and decoders for requests (used by the simulated peripheral) and for the
  response indication ``80 <request opcode> <result>``;
- Fitness Machine Status (0x2ADA): decoder and encoder.

Their JSON forms and ``describe`` (``retrotread decode``) are presentation and live in
``drivers.ftms.describe``, which imports this module (never the other way round).

Errors say whose fault (``drivers.errors``)::

    CodecError
    ├── LocalProtocolError
    │   └── FtmsEncodeError         we were asked to encode a value that cannot exist
    └── RemoteProtocolError
        └── FtmsDecodeError         the peer's bytes do not form the value they claim to be
            ├── UnknownOpcode       a control point request we do not know (answer 0x02)
            └── InvalidParameter    a control point request with a bad parameter (answer 0x03)

This module must not do I/O, keep time, or import asyncio, bleak or anything of ours beyond
``drivers.errors`` and ``drivers.units``. Device quirks (a machine that reports mph in km/h
fields) belong in a per-model table in the driver, never here. It does not enforce the speed
envelope (rule S1): that is the supervisor's job; it only rounds the way it is told (rule S2).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from enum import IntEnum, IntFlag
from typing import Any, ClassVar, Final, TypeAlias

from retrotread.drivers.errors import LocalProtocolError, RemoteProtocolError
from retrotread.drivers.units import Rounding, Speed, SpeedGrid, SpeedUnit, steps

__all__ = [
    "CONTROL_POINT_UUID",
    "FEATURE_UUID",
    "FTMS_SERVICE_UUID",
    "MACHINE_STATUS_UUID",
    "SUPPORTED_INCLINATION_RANGE_UUID",
    "SUPPORTED_SPEED_RANGE_UUID",
    "TRAINING_STATUS_UUID",
    "TREADMILL_DATA_UUID",
    "ControlOpcode",
    "ControlPointMessage",
    "ControlRequest",
    "ControlResponse",
    "FitnessMachineFeature",
    "FtmsAdvertisement",
    "FtmsDecodeError",
    "FtmsEncodeError",
    "InvalidParameter",
    "MachineFeature",
    "MachineStatus",
    "MachineType",
    "Octets",
    "RequestControl",
    "Reset",
    "ResultCode",
    "SetTargetInclination",
    "SetTargetSpeed",
    "StartOrResume",
    "StatusOpcode",
    "StopAction",
    "StopOrPause",
    "SupportedInclinationRange",
    "SupportedSpeedRange",
    "TargetSetting",
    "TrainingStatus",
    "TrainingStatusCode",
    "TreadmillData",
    "TreadmillDataAssembler",
    "UnknownOpcode",
    "decode_control_point",
    "decode_control_request",
    "decode_control_response",
    "decode_feature",
    "decode_inclination_range",
    "decode_machine_status",
    "decode_speed_range",
    "decode_training_status",
    "decode_treadmill_data",
    "encode_control_point",
    "encode_feature",
    "encode_inclination_range",
    "encode_machine_status",
    "encode_service_data",
    "encode_set_target_speed",
    "encode_speed_range",
    "encode_training_status",
    "encode_treadmill_data",
    "flag_names",
    "parse_service_data",
    "split_treadmill_data",
    "treadmill_fields",
    "truncated_speed",
]

Octets: TypeAlias = bytes | bytearray | memoryview
"""What a decoder accepts: bleak hands notifications over as ``bytearray``."""


# --- UUIDs (ftms.md "Service and characteristics") ------------------------------------------------


def _sig_uuid(short: int) -> str:
    """The full 128-bit form of a 16-bit SIG UUID (Bluetooth Core, Base UUID)."""
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


FTMS_SERVICE_UUID: Final = _sig_uuid(0x1826)
FEATURE_UUID: Final = _sig_uuid(0x2ACC)
TREADMILL_DATA_UUID: Final = _sig_uuid(0x2ACD)
TRAINING_STATUS_UUID: Final = _sig_uuid(0x2AD3)
SUPPORTED_SPEED_RANGE_UUID: Final = _sig_uuid(0x2AD4)
SUPPORTED_INCLINATION_RANGE_UUID: Final = _sig_uuid(0x2AD5)
CONTROL_POINT_UUID: Final = _sig_uuid(0x2AD9)
MACHINE_STATUS_UUID: Final = _sig_uuid(0x2ADA)


# --- errors --------------------------------------------------------------------------------------


class FtmsDecodeError(RemoteProtocolError):
    """The peer's bytes do not form the FTMS value they claim to be (device quirk or bad link)."""


class UnknownOpcode(FtmsDecodeError):
    """A control point request with an opcode we do not implement (FTMS answers 0x02)."""

    def __init__(self, opcode: int, message: str) -> None:
        super().__init__(message)
        self.opcode = opcode


class InvalidParameter(FtmsDecodeError):
    """A control point request whose parameter is missing or wrong (FTMS answers 0x03)."""

    def __init__(self, opcode: int, message: str) -> None:
        super().__init__(message)
        self.opcode = opcode


class FtmsEncodeError(LocalProtocolError):
    """We were asked to encode an FTMS value that cannot exist (a bad argument or a bug of ours)."""


# --- wire helpers --------------------------------------------------------------------------------

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_S16 = struct.Struct("<h")
_U24 = struct.Struct("<HB")  # struct has no 3-byte integer: low 16 bits, then the high byte
_U32X2 = struct.Struct("<II")
_RANGE_U = struct.Struct("<HHH")
_RANGE_S = struct.Struct("<hhH")
_RESPONSE = struct.Struct("<BBB")
_OP_U16 = struct.Struct("<BH")
_OP_S16 = struct.Struct("<Bh")

_LIMITS: Final[dict[str, tuple[int, int]]] = {
    "B": (0, 0xFF),
    "H": (0, 0xFFFF),
    "h": (-0x8000, 0x7FFF),
    "U": (0, 0xFFFFFF),
}

AUTO_FLAGS: Final = -1
"""Default ``flags`` of a value built by hand: derive them from which fields are set."""


def _hex(data: Octets) -> str:
    return bytes(data).hex()


def _to_wire(name: str, value: float, scale: int, code: str) -> int:
    """``value`` in whole wire steps (nearest), checked against the wire type's range."""
    try:
        raw = round(value * scale)
    except (OverflowError, ValueError, TypeError) as exc:
        raise FtmsEncodeError(f"{name}={value!r} cannot be encoded") from exc
    low, high = _LIMITS[code]
    if not low <= raw <= high:
        raise FtmsEncodeError(
            f"{name}={value!r} is {raw} on the wire, outside {low}..{high}",
        )
    return raw


def _pack(code: str, raw: int) -> bytes:
    if code == "U":
        return _U24.pack(raw & 0xFFFF, raw >> 16)
    if code == "B":
        return _U8.pack(raw)
    if code == "H":
        return _U16.pack(raw)
    return _S16.pack(raw)


# --- Treadmill Data (0x2ACD) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    """One field of the Treadmill Data flag table (ftms.md "Treadmill Data")."""

    name: str
    code: str
    """struct code: ``H`` u16, ``h`` s16, ``B`` u8, ``U`` u24, ``P`` pace (u8 per v1.0, or u16)."""
    scale: int = 1
    """Wire steps per unit of the field: 100 for 0.01 km/h, 10 for 0.1 %; 1 keeps ints."""
    not_available: int | None = None
    """The wire value that means "not available" (decoded to ``None``), if the field has one."""


# Flag bit → its fields, in the order they appear on the wire (ftms.md table; bit 0 is inverted:
# 0 means the speed is present). Bit 13 is reserved in v1.0; real machines put Step Count there
# (ftms.md; the Urevo vector in tests/vectors/ftms.json carries it).
_GROUPS: Final[tuple[tuple[int, tuple[_Field, ...]], ...]] = (
    (0, (_Field("speed_kmh", "H", 100),)),
    (1, (_Field("average_speed_kmh", "H", 100),)),
    (2, (_Field("distance_m", "U"),)),
    (3, (_Field("incline_pct", "h", 10, 0x7FFF), _Field("ramp_deg", "h", 10, 0x7FFF))),
    (4, (_Field("elevation_gain_up_m", "H", 10), _Field("elevation_gain_down_m", "H", 10))),
    (5, (_Field("instantaneous_pace_raw", "P"),)),
    (6, (_Field("average_pace_raw", "P"),)),
    (
        7,
        (
            _Field("energy_total_kcal", "H", 1, 0xFFFF),
            _Field("energy_per_hour_kcal", "H", 1, 0xFFFF),
            _Field("energy_per_minute_kcal", "B", 1, 0xFF),
        ),
    ),
    (8, (_Field("heart_rate_bpm", "B"),)),
    (9, (_Field("met", "B", 10),)),
    (10, (_Field("elapsed_s", "H"),)),
    (11, (_Field("remaining_s", "H"),)),
    (12, (_Field("force_n", "h", 1, 0x7FFF), _Field("power_w", "h", 1, 0x7FFF))),
    (13, (_Field("steps", "U"),)),
)
_MORE_DATA: Final = 0x0001
_GROUP_BITS: Final = 0x3FFE  # bits 1..13: the groups besides speed
_PACE_BITS: Final = 0x0060


def _group_present(flags: int, bit: int) -> bool:
    if bit == 0:
        return not flags & _MORE_DATA
    return bool(flags >> bit & 1)


def treadmill_fields(flags: int) -> tuple[str, ...]:
    """The ``TreadmillData`` fields that Treadmill Data ``flags`` announce, in wire order."""
    return tuple(f.name for bit, group in _GROUPS if _group_present(flags, bit) for f in group)


@dataclass(frozen=True, slots=True)
class TreadmillData:
    """One Treadmill Data record (or one part of a split record, when ``more_data``).

    A field is ``None`` when the packet does not carry it, or when it carries the "not available"
    marker (ftms.md): ``flags`` tells the two apart. Built by hand, ``flags`` defaults to
    ``AUTO_FLAGS`` and is derived from which fields are set (a group is sent when any of its
    fields is set; its unset fields go out as "not available").
    """

    flags: int = AUTO_FLAGS
    speed_kmh: float | None = None
    average_speed_kmh: float | None = None
    distance_m: int | None = None
    incline_pct: float | None = None
    ramp_deg: float | None = None
    elevation_gain_up_m: float | None = None
    elevation_gain_down_m: float | None = None
    instantaneous_pace_raw: int | None = None
    """In wire steps: 0.1 km/min when ``pace_bytes`` is 1 (v1.0); ftms.md gives no unit for the
    16-bit form of newer SIG material, so it is kept raw."""
    average_pace_raw: int | None = None
    energy_total_kcal: int | None = None
    energy_per_hour_kcal: int | None = None
    energy_per_minute_kcal: int | None = None
    heart_rate_bpm: int | None = None
    met: float | None = None
    elapsed_s: int | None = None
    remaining_s: int | None = None
    force_n: int | None = None
    power_w: int | None = None
    steps: int | None = None
    pace_bytes: int = 1
    """Width of the pace fields on the wire: 1 (v1.0) or 2 (newer SIG material); 1 when absent."""
    trailing: bytes = b""
    """Bytes after the fields the flags announce: padding (ftms.md), kept for debug output."""

    def __post_init__(self) -> None:
        # Decoded records skip __init__ (see _build_layout) and always carry their real flags.
        if self.flags == AUTO_FLAGS:
            object.__setattr__(self, "flags", _derive_flags(self))

    @property
    def more_data(self) -> bool:
        """Bit 0: more parts of this record follow, and this part carries no speed."""
        return bool(self.flags & _MORE_DATA)

    @property
    def speed(self) -> Speed | None:
        """The instantaneous belt speed, or ``None`` in a part that does not carry it."""
        kmh = self.speed_kmh
        return None if kmh is None else Speed.from_kmh(kmh)

    @property
    def instantaneous_pace_km_per_min(self) -> float | None:
        """Instantaneous pace in km/min, when sent in the v1.0 8-bit form (0.1 km/min)."""
        raw = self.instantaneous_pace_raw
        return None if raw is None or self.pace_bytes != 1 else raw / 10

    @property
    def average_pace_km_per_min(self) -> float | None:
        """Average pace in km/min, when sent in the v1.0 8-bit form (0.1 km/min)."""
        raw = self.average_pace_raw
        return None if raw is None or self.pace_bytes != 1 else raw / 10


def _derive_flags(record: TreadmillData) -> int:
    flags = 0 if record.speed_kmh is not None else _MORE_DATA
    for bit, group in _GROUPS[1:]:
        if any(getattr(record, f.name) is not None for f in group):
            flags |= 1 << bit
    return flags


# The hot path (10+ Hz per treadmill, figure B5). Per flags value _GROUPS is walked once and the
# result kept as a _Layout: one struct.Struct that unpacks every field the flags announce, and
# one step per field saying which slot its value goes to and how it is read. A decode is then
# one unpack and a loop over the fields. The record is filled through its slot descriptors, not
# __init__: a frozen dataclass's generated __init__ sets each of the 22 fields through
# object.__setattr__ by name (about 3 µs per record, most of a decode). No code is generated or
# compiled (issue 11.8: no exec, no eval); the layout is data, derived from _GROUPS only.

_Setter: TypeAlias = Callable[[TreadmillData, object], None]
_NO_MARKER: Final = 1 << 24
"""``not_available`` of a field without a marker: outside every wire type's range."""
_Step: TypeAlias = tuple[_Setter, int, int, int, bool]
"""(slot setter, index of its first value in the unpacked tuple, scale, marker, is u24)."""


@dataclass(frozen=True, slots=True)
class _Layout:
    size: int
    """Bytes the flags announce, flags included."""
    pace_fields: int
    """How many pace fields are present: the 16-bit form is that many bytes longer."""
    pace_bytes: int
    unpack: Callable[[Octets, int], tuple[int, ...]]
    steps: tuple[_Step, ...]
    """The fields the flags announce, in wire order."""
    absent: tuple[_Setter, ...]
    """The slots of the fields the flags leave out (set to ``None``)."""


_SETTERS: Final[dict[str, _Setter]] = {f.name: TreadmillData.__dict__[f.name].__set__ for f in fields(TreadmillData)}
_set_flags: Final = _SETTERS["flags"]
_set_pace_bytes: Final = _SETTERS["pace_bytes"]
_set_trailing: Final = _SETTERS["trailing"]
_new: Final = object.__new__
_LAYOUTS: dict[int, _Layout] = {}
_PACE16_KEY: Final = 0x10000
_MAX_LAYOUTS: Final = 512
"""A real treadmill uses a handful of flag values; garbage may bring thousands: start over."""


def _build_layout(flags: int, pace16: bool) -> _Layout:
    codes: list[str] = []
    steps: list[_Step] = []
    absent: list[_Setter] = []
    values = 0
    pace_fields = 0
    for bit, group in _GROUPS:
        present = _group_present(flags, bit)
        for f in group:
            setter = _SETTERS[f.name]
            if not present:
                absent.append(setter)
                continue
            code = f.code
            if code == "P":
                pace_fields += 1
                code = "H" if pace16 else "B"
            marker = _NO_MARKER if f.not_available is None else f.not_available
            wide = code == "U"
            steps.append((setter, values, f.scale, marker, wide))
            codes.append("HB" if wide else code)
            values += 2 if wide else 1
    layout = struct.Struct("<" + "".join(codes))
    return _Layout(
        size=2 + layout.size,
        pace_fields=pace_fields,
        pace_bytes=2 if pace16 else 1,
        unpack=layout.unpack_from,
        steps=tuple(steps),
        absent=tuple(absent),
    )


def _layout(flags: int, *, pace16: bool) -> _Layout:
    key = flags | _PACE16_KEY if pace16 else flags
    layout = _LAYOUTS.get(key)
    if layout is None:
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        layout = _LAYOUTS[key] = _build_layout(flags, pace16)
    return layout


def decode_treadmill_data(data: Octets) -> TreadmillData:
    """One Treadmill Data notification (a whole record, or one part when ``more_data``).

    Lenient as ftms.md asks: bytes after the announced fields are kept in ``trailing``. The pace
    width is decided by length: 16-bit when that makes the fields consume the packet exactly,
    else 8-bit (v1.0). Raises ``FtmsDecodeError`` when the packet is shorter than its flags say.
    """
    n = len(data)
    if n < 2:
        raise FtmsDecodeError(f"Treadmill Data needs 2 bytes of flags, got {n}: {_hex(data)!r}")
    flags = data[0] | data[1] << 8
    layout = _LAYOUTS.get(flags) or _layout(flags, pace16=False)
    size = layout.size
    trailing = b""
    if n != size:
        if n < size:
            raise FtmsDecodeError(
                f"Treadmill Data flags 0x{flags:04x} announce {size} bytes, got {n}: {_hex(data)!r}",
            )
        if layout.pace_fields and n == size + layout.pace_fields:
            layout = _layout(flags, pace16=True)
        else:
            trailing = bytes(data[size:])
    values = layout.unpack(data, 2)
    record: TreadmillData = _new(TreadmillData)
    _set_flags(record, flags)
    for setter, i, scale, marker, wide in layout.steps:
        value = values[i] | values[i + 1] << 16 if wide else values[i]
        setter(record, None if value == marker else value if scale == 1 else value / scale)
    for setter in layout.absent:
        setter(record, None)
    _set_pace_bytes(record, layout.pace_bytes)
    _set_trailing(record, trailing)
    return record


TRUNCATED_AT = 20  # ATT_MTU 23 - 3: where the Matrix TouchXL cuts its records
_RESERVED_FLAGS = 0xE000  # Treadmill Data flags bits 13-15 are reserved for future use (FTMS 4.9.1)


def truncated_speed(data: Octets) -> Speed | None:
    """The speed of a Treadmill Data record cut short, or ``None``.

    Matrix TouchXL (TrackMyIndoorWorkout ``test/matrix_treadmill_test.dart``): flags promise 30-32
    bytes, 20 arrive. Instantaneous speed is the first field, present when bit 0 (more data) is 0,
    so its two bytes are intact in the cut packet. Only a packet of exactly ``TRUNCATED_AT`` bytes
    (the default ATT payload, where such machines cut), with no reserved flag bit set, shorter than
    its flags announce, gives a speed here: garbage must never read as a speed (S8 notices a drought,
    a made-up speed it could not). Everything after the speed is unknown.
    """
    n = len(data)
    if n != TRUNCATED_AT:
        return None  # the cut is at the default ATT payload; any other short packet is garbage
    flags = data[0] | data[1] << 8
    if flags & 0x0001 or flags & _RESERVED_FLAGS:
        return None  # more data: no speed in this part; reserved bits: not a record at all
    layout = _LAYOUTS.get(flags) or _layout(flags, pace16=False)
    if n >= layout.size:
        return None  # not cut short: whatever is wrong with it, it is not truncation
    return _KMH_STEP.from_count(data[2] | data[3] << 8)


def _encode_group(record: TreadmillData, bit: int, group: tuple[_Field, ...]) -> bytes:
    """The wire bytes of one flag group of ``record`` (empty when its flag leaves it out)."""
    flags = record.flags
    if not _group_present(flags, bit):
        for f in group:
            if getattr(record, f.name) is not None:
                raise FtmsEncodeError(f"flags 0x{flags:04x} leave out {f.name}, yet it is {getattr(record, f.name)!r}")
        return b""
    out = bytearray()
    for f in group:
        code = f.code
        if code == "P":
            if record.pace_bytes not in (1, 2):
                raise FtmsEncodeError(f"pace_bytes must be 1 or 2, got {record.pace_bytes!r}")
            code = "B" if record.pace_bytes == 1 else "H"
        value = getattr(record, f.name)
        if value is None:
            if f.not_available is None:
                raise FtmsEncodeError(f"flags 0x{flags:04x} announce {f.name}, yet it is None")
            raw = f.not_available
        else:
            raw = _to_wire(f.name, value, f.scale, code)
            if raw == f.not_available:
                raise FtmsEncodeError(f"{f.name}={value!r} would be the 'not available' marker 0x{raw:x} on the wire")
        out += _pack(code, raw)
    return bytes(out)


def _encode_record(record: TreadmillData, *, trailing: bool) -> bytes:
    flags = record.flags
    if not 0 <= flags <= 0xFFFF:
        raise FtmsEncodeError(f"Treadmill Data flags must fit 16 bits, got {flags!r}")
    out = bytearray(_U16.pack(flags))
    for bit, group in _GROUPS:
        out += _encode_group(record, bit, group)
    if trailing:
        out += record.trailing
    return bytes(out)


def encode_treadmill_data(record: TreadmillData) -> bytes:
    """``record`` as one notification, padding (``trailing``) included.

    ``record.flags`` say what goes on the wire; a field they announce that is ``None`` goes out as
    "not available" where the field has a marker, else it is an error, like a set field they leave
    out. Values are rounded to the nearest wire step.
    """
    return _encode_record(record, trailing=True)


def split_treadmill_data(record: TreadmillData, max_len: int = 20) -> list[bytes]:
    """``record`` as notifications of at most ``max_len`` bytes (20: the default ATT MTU of 23).

    One packet when it fits. Otherwise the flag groups go, in bit order, into parts with More Data
    (bit 0) set, and the speed into the last part (ftms.md: "every part but the last has bit 0 = 1,
    and speed comes only in the last part"). Reserved flag bits go on every part. Padding is not
    sent. A record without speed cannot be split: no part of it could say it is the last.
    """
    whole = _encode_record(record, trailing=False)
    if len(whole) <= max_len:
        return [whole]
    if record.more_data:
        raise FtmsEncodeError(f"a record without speed ({len(whole)} bytes) cannot be split to {max_len} bytes")
    room = max_len - 2
    speed = _encode_group(record, 0, _GROUPS[0][1])
    reserved = record.flags & ~(_GROUP_BITS | _MORE_DATA)
    parts: list[tuple[int, bytes]] = []
    part_flags, part = 0, b""
    for bit, group in _GROUPS[1:]:
        chunk = _encode_group(record, bit, group)
        if not chunk:
            continue
        if len(chunk) > room:
            raise FtmsEncodeError(f"{group[0].name} needs {2 + len(chunk)} bytes > {max_len}")
        if part and len(part) + len(chunk) > room:
            parts.append((part_flags, part))
            part_flags, part = 0, b""
        part_flags |= 1 << bit
        part += chunk
    if len(speed) > room:
        raise FtmsEncodeError(f"the speed needs {2 + len(speed)} bytes > {max_len}")
    if len(part) + len(speed) > room:
        parts.append((part_flags, part))
        part_flags, part = 0, b""
    packets = [_U16.pack(f | _MORE_DATA | reserved) + body for f, body in parts]
    packets.append(_U16.pack(part_flags | reserved) + speed + part)
    return packets


_NULL_RECORD_BYTES: Final = 4
"""Flags 0x0000 announce a speed: an all-zero packet this long is a real (zero-speed) record."""


def _is_null(packet: Octets) -> bool:
    """An all-zero (or empty) "null" packet, sent by some machines on wake and sleep (ftms.md)."""
    return bytes(packet).count(0) == len(packet)


class TreadmillDataAssembler:
    """Merges the parts of split Treadmill Data records (pure: bytes in, records out).

    ``feed`` returns the record a packet completes, or ``None`` while parts are still missing
    (ftms.md: "Merge parts until bit 0 = 0"). A record's parts carry disjoint flag groups, so a
    part that repeats a group already pending means the last part of the pending record was lost:
    the stale parts are dropped (counted in ``dropped``) and the new part starts a record.

    All-zero "null" packets (ftms.md, wake and sleep) are counted in ``nulls``. One too short to
    hold a speed is ignored (not an error, and pending parts stay). A longer one is what its bytes
    say, flags 0 and a speed of 0 (with padding), and is treated like any other packet: it may
    well be the last part of a split record, sent while the belt stands still. (Flags that are not
    zero followed by zeros, like the Urevo vector ``9c25 00…``, are an ordinary record.)

    A packet too short for its flags raises ``FtmsDecodeError`` and drops the pending parts.
    """

    MAX_PARTS: ClassVar[int] = 13
    """A record has 13 groups besides speed, so it never needs more parts than that."""

    def __init__(self) -> None:
        self._parts: list[TreadmillData] = []
        self._groups = 0
        self.dropped = 0
        """Incomplete records discarded (stale, or broken by a malformed packet)."""
        self.nulls = 0
        """All-zero packets seen."""

    @property
    def pending(self) -> int:
        """Parts held for a record that is not complete yet."""
        return len(self._parts)

    def reset(self) -> None:
        """Forget pending parts (after a reconnect) without counting them as dropped."""
        self._parts.clear()
        self._groups = 0

    def _drop(self) -> None:
        if self._parts:
            self.dropped += 1
            self.reset()

    def feed(self, packet: Octets) -> TreadmillData | None:
        """The record ``packet`` completes, or ``None`` if more parts are needed."""
        if (len(packet) < 2 or not (packet[0] or packet[1])) and _is_null(packet):
            self.nulls += 1
            if len(packet) < _NULL_RECORD_BYTES:
                return None
        try:
            part = decode_treadmill_data(packet)
        except FtmsDecodeError:
            self._drop()
            raise
        groups = part.flags & _GROUP_BITS
        if groups & self._groups or len(self._parts) >= self.MAX_PARTS:
            self._drop()
        if part.more_data:
            self._parts.append(part)
            self._groups |= groups
            return None
        if not self._parts:
            return part
        parts = [*self._parts, part]
        self.reset()
        return _merge(parts)


def _merge(parts: list[TreadmillData]) -> TreadmillData:
    """One record from its parts: each group from the part that carried it, speed from the last."""
    values: dict[str, Any] = {}
    flags = 0
    pace_bytes = 1
    for part in parts:
        flags |= part.flags & ~_MORE_DATA
        for bit, group in _GROUPS[1:]:
            if part.flags >> bit & 1:
                for f in group:
                    values[f.name] = getattr(part, f.name)
        if part.flags & _PACE_BITS:
            pace_bytes = part.pace_bytes
    last = parts[-1]
    return TreadmillData(
        flags=flags | last.flags & _MORE_DATA,
        speed_kmh=last.speed_kmh,
        pace_bytes=pace_bytes,
        trailing=b"".join(p.trailing for p in parts),
        **values,
    )


# --- Fitness Machine Feature (0x2ACC) ------------------------------------------------------------


class MachineFeature(IntFlag):
    """Fitness Machine Features field (FTMS v1.0 §4.3.1.1; ftms.md names the treadmill ones).

    Bit 6 is Step Count: the vector ``5c16000003000000`` (0x165c: bits 2, 3, 4, 6, 9, 10, 12)
    decodes to exactly its expected list with this numbering. Bit 13 here is Remaining Time; the
    step count that lives at bit 13 is the one of Treadmill Data flags, a different field.
    """

    AVERAGE_SPEED = 1 << 0
    CADENCE = 1 << 1
    TOTAL_DISTANCE = 1 << 2
    INCLINATION = 1 << 3
    ELEVATION_GAIN = 1 << 4
    PACE = 1 << 5
    STEP_COUNT = 1 << 6
    RESISTANCE_LEVEL = 1 << 7
    STRIDE_COUNT = 1 << 8
    EXPENDED_ENERGY = 1 << 9
    HEART_RATE = 1 << 10
    METABOLIC_EQUIVALENT = 1 << 11
    ELAPSED_TIME = 1 << 12
    REMAINING_TIME = 1 << 13
    POWER_MEASUREMENT = 1 << 14
    FORCE_ON_BELT_AND_POWER_OUTPUT = 1 << 15
    USER_DATA_RETENTION = 1 << 16


class TargetSetting(IntFlag):
    """Target Setting Features field (FTMS v1.0 §4.3.1.2; ftms.md: bit 0 speed, 1 inclination)."""

    SPEED = 1 << 0
    INCLINATION = 1 << 1
    RESISTANCE = 1 << 2
    POWER = 1 << 3
    HEART_RATE = 1 << 4
    EXPENDED_ENERGY = 1 << 5
    STEP_NUMBER = 1 << 6
    STRIDE_NUMBER = 1 << 7
    DISTANCE = 1 << 8
    TRAINING_TIME = 1 << 9
    TIME_IN_TWO_HEART_RATE_ZONES = 1 << 10
    TIME_IN_THREE_HEART_RATE_ZONES = 1 << 11
    TIME_IN_FIVE_HEART_RATE_ZONES = 1 << 12
    INDOOR_BIKE_SIMULATION = 1 << 13
    WHEEL_CIRCUMFERENCE = 1 << 14
    SPIN_DOWN = 1 << 15
    CADENCE = 1 << 16


def flag_names(value: int, kind: type[IntFlag]) -> tuple[str, ...]:
    """Names of the set bits in bit order; a bit the enum does not name is ``bit_N``."""
    named = {int(member): name.lower() for name, member in kind.__members__.items()}
    return tuple(named.get(1 << bit, f"bit_{bit}") for bit in range(32) if value >> bit & 1)


@dataclass(frozen=True, slots=True)
class FitnessMachineFeature:
    """What a machine claims to support (ftms.md: trust what it does over what it claims)."""

    features: MachineFeature
    targets: TargetSetting

    @property
    def feature_names(self) -> tuple[str, ...]:
        return flag_names(self.features, MachineFeature)

    @property
    def target_names(self) -> tuple[str, ...]:
        return flag_names(self.targets, TargetSetting)

    @classmethod
    def from_names(cls, features: Iterable[str] = (), targets: Iterable[str] = ()) -> FitnessMachineFeature:
        try:
            f = MachineFeature(0)
            for name in features:
                f |= MachineFeature[name.upper()]
            t = TargetSetting(0)
            for name in targets:
                t |= TargetSetting[name.upper()]
        except KeyError as exc:
            raise FtmsEncodeError(f"unknown feature name {exc.args[0]!r}") from exc
        return cls(f, t)


def decode_feature(data: Octets) -> FitnessMachineFeature:
    """Fitness Machine Feature: ``u32`` features, ``u32`` target settings; longer is tolerated."""
    if len(data) < _U32X2.size:
        raise FtmsDecodeError(f"Fitness Machine Feature needs 8 bytes, got {_hex(data)!r}")
    features, targets = _U32X2.unpack_from(data)
    return FitnessMachineFeature(MachineFeature(features), TargetSetting(targets))


def encode_feature(value: FitnessMachineFeature) -> bytes:
    features, targets = int(value.features), int(value.targets)
    if not (0 <= features <= 0xFFFFFFFF and 0 <= targets <= 0xFFFFFFFF):
        raise FtmsEncodeError(f"feature fields must fit 32 bits, got {value!r}")
    return _U32X2.pack(features, targets)


# --- Supported Speed and Inclination Ranges (0x2AD4, 0x2AD5) -------------------------------------

_KMH_STEP = SpeedUnit.KMH_HUNDREDTHS  # every FTMS speed is a u16 in 0.01 km/h


@dataclass(frozen=True, slots=True)
class SupportedSpeedRange:
    """Minimum, maximum and increment of settable speed, each in 0.01 km/h on the wire."""

    min_raw: int
    max_raw: int
    increment_raw: int

    @property
    def minimum(self) -> Speed:
        return _KMH_STEP.from_count(self.min_raw)

    @property
    def maximum(self) -> Speed:
        return _KMH_STEP.from_count(self.max_raw)

    @property
    def increment(self) -> Speed:
        return _KMH_STEP.from_count(self.increment_raw)

    @property
    def grid(self) -> SpeedGrid:
        """The settable speeds; an increment of 0 (seen in the wild) is taken as 1 count."""
        return SpeedGrid(_KMH_STEP, max(1, self.increment_raw), self.minimum, self.maximum)

    @property
    def min_kmh(self) -> float:
        return self.min_raw / 100

    @property
    def max_kmh(self) -> float:
        return self.max_raw / 100

    @property
    def increment_kmh(self) -> float:
        return self.increment_raw / 100


@dataclass(frozen=True, slots=True)
class SupportedInclinationRange:
    """Minimum, maximum (s16) and increment (u16) of settable inclination, in 0.1 % on the wire."""

    min_raw: int
    max_raw: int
    increment_raw: int

    @property
    def min_pct(self) -> float:
        return self.min_raw / 10

    @property
    def max_pct(self) -> float:
        return self.max_raw / 10

    @property
    def increment_pct(self) -> float:
        return self.increment_raw / 10


def decode_speed_range(data: Octets) -> SupportedSpeedRange:
    """Supported Speed Range: three ``u16`` in 0.01 km/h. Values are kept as sent: a zero
    increment or min > max is the driver's to judge (rule S3), not a framing error."""
    if len(data) < _RANGE_U.size:
        raise FtmsDecodeError(f"Supported Speed Range needs 6 bytes, got {_hex(data)!r}")
    return SupportedSpeedRange(*_RANGE_U.unpack_from(data))


def encode_speed_range(value: SupportedSpeedRange) -> bytes:
    try:
        return _RANGE_U.pack(value.min_raw, value.max_raw, value.increment_raw)
    except struct.error as exc:
        raise FtmsEncodeError(f"speed range fields must fit u16: {value!r}") from exc


def decode_inclination_range(data: Octets) -> SupportedInclinationRange:
    """Supported Inclination Range: ``s16`` min, ``s16`` max, ``u16`` increment, in 0.1 %."""
    if len(data) < _RANGE_S.size:
        raise FtmsDecodeError(f"Supported Inclination Range needs 6 bytes, got {_hex(data)!r}")
    return SupportedInclinationRange(*_RANGE_S.unpack_from(data))


def encode_inclination_range(value: SupportedInclinationRange) -> bytes:
    try:
        return _RANGE_S.pack(value.min_raw, value.max_raw, value.increment_raw)
    except struct.error as exc:
        raise FtmsEncodeError(f"inclination range fields must fit s16/u16: {value!r}") from exc


# --- Fitness Machine Control Point (0x2AD9) ------------------------------------------------------


class ControlOpcode(IntEnum):
    """The control point procedures a treadmill driver uses (ftms.md "Control Point")."""

    REQUEST_CONTROL = 0x00
    RESET = 0x01
    SET_TARGET_SPEED = 0x02
    SET_TARGET_INCLINATION = 0x03
    START_OR_RESUME = 0x07
    STOP_OR_PAUSE = 0x08
    RESPONSE = 0x80


class ResultCode(IntEnum):
    """Result of a procedure, in the response indication ``80 <request opcode> <result>``."""

    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_PARAMETER = 0x03
    OPERATION_FAILED = 0x04
    CONTROL_NOT_PERMITTED = 0x05


class StopAction(IntEnum):
    """Parameter of Stop or Pause (0x08)."""

    STOP = 0x01
    PAUSE = 0x02


@dataclass(frozen=True, slots=True)
class RequestControl:
    """0x00: needed before any other procedure."""

    op: ClassVar[ControlOpcode] = ControlOpcode.REQUEST_CONTROL


@dataclass(frozen=True, slots=True)
class Reset:
    """0x01: targets to 0, status Idle, control revoked."""

    op: ClassVar[ControlOpcode] = ControlOpcode.RESET


@dataclass(frozen=True, slots=True)
class SetTargetSpeed:
    """0x02 with ``u16`` speed in 0.01 km/h."""

    op: ClassVar[ControlOpcode] = ControlOpcode.SET_TARGET_SPEED
    speed_raw: int

    @classmethod
    def from_speed(cls, speed: Speed, rounding: Rounding, *, increment_raw: int = 1) -> SetTargetSpeed:
        """``speed`` on the machine's grid (multiples of ``increment_raw`` × 0.01 km/h), rounded
        as asked (rule S2: down for the top of the envelope, up for the bottom).

        DOWN guarantees the frame never decodes above ``speed`` and UP never below, compared as
        ``Speed`` values: ``steps`` forgives float noise, which at an exact grid point can sit on
        the wrong side by a few ulps; then one more step is taken inward.
        """
        if increment_raw < 1:
            raise FtmsEncodeError(f"speed increment must be at least 1 (0.01 km/h): {increment_raw}")
        try:
            raw = SpeedGrid(_KMH_STEP, increment_raw).encode(speed, rounding)
        except ValueError as exc:
            raise FtmsEncodeError(f"cannot encode speed {speed!r}: {exc}") from exc
        if not 0 <= raw <= 0xFFFF:
            raise FtmsEncodeError(f"speed {speed!r} is {raw} × 0.01 km/h, outside 0..65535")
        return cls(raw)

    @property
    def speed_kmh(self) -> float:
        return self.speed_raw / 100

    @property
    def speed(self) -> Speed:
        return _KMH_STEP.from_count(self.speed_raw)


@dataclass(frozen=True, slots=True)
class SetTargetInclination:
    """0x03 with ``s16`` inclination in 0.1 %."""

    op: ClassVar[ControlOpcode] = ControlOpcode.SET_TARGET_INCLINATION
    incline_raw: int

    @classmethod
    def from_pct(cls, incline_pct: float, rounding: Rounding = Rounding.NEAREST) -> SetTargetInclination:
        try:
            raw = steps(incline_pct, 0.1, rounding)
        except ValueError as exc:
            raise FtmsEncodeError(f"cannot encode incline {incline_pct!r}: {exc}") from exc
        if not -0x8000 <= raw <= 0x7FFF:
            raise FtmsEncodeError(f"incline {incline_pct!r} % is {raw} × 0.1 %, outside s16")
        return cls(raw)

    @property
    def incline_pct(self) -> float:
        return self.incline_raw / 10


@dataclass(frozen=True, slots=True)
class StartOrResume:
    """0x07."""

    op: ClassVar[ControlOpcode] = ControlOpcode.START_OR_RESUME


@dataclass(frozen=True, slots=True)
class StopOrPause:
    """0x08 with ``u8``: 0x01 stop, 0x02 pause."""

    op: ClassVar[ControlOpcode] = ControlOpcode.STOP_OR_PAUSE
    action: StopAction = StopAction.STOP

    @property
    def stop(self) -> bool:
        return self.action == StopAction.STOP

    @property
    def pause(self) -> bool:
        return self.action == StopAction.PAUSE


@dataclass(frozen=True, slots=True)
class ControlResponse:
    """The indication that ends a procedure: ``80 <request opcode> <result>``.

    ``request`` and ``result`` stay plain ints when they are not ones we know (a machine answering
    a procedure of another machine type, or a result code from a later spec): the driver treats
    anything but ``SUCCESS`` as a refusal. ``parameter`` holds any response parameter bytes.
    """

    op: ClassVar[ControlOpcode] = ControlOpcode.RESPONSE
    request: ControlOpcode | int
    result: ResultCode | int
    parameter: bytes = b""

    @property
    def ok(self) -> bool:
        return self.result == ResultCode.SUCCESS


ControlRequest: TypeAlias = RequestControl | Reset | SetTargetSpeed | SetTargetInclination | StartOrResume | StopOrPause
ControlPointMessage: TypeAlias = ControlRequest | ControlResponse


def _known(kind: type[IntEnum], value: int) -> Any:
    """``kind(value)``, or ``value`` itself when the enum has no such member."""
    try:
        return kind(value)
    except ValueError:
        return value


def decode_control_request(data: Octets) -> ControlRequest:
    """A request written to the control point (what the simulated peripheral receives).

    Strict, as a server must be: an opcode we do not implement raises ``UnknownOpcode`` (answer
    0x02), a missing, extra or wrong parameter ``InvalidParameter`` (answer 0x03).
    """
    if not data:
        raise FtmsDecodeError("empty control point request")
    op = data[0]
    n = len(data)
    try:
        code = ControlOpcode(op)
    except ValueError:
        raise UnknownOpcode(op, f"unknown control point opcode 0x{op:02x}: {_hex(data)!r}") from None
    if code is ControlOpcode.RESPONSE:
        raise UnknownOpcode(op, f"0x80 is a response, not a request: {_hex(data)!r}")
    expected = {
        ControlOpcode.SET_TARGET_SPEED: 3,
        ControlOpcode.SET_TARGET_INCLINATION: 3,
        ControlOpcode.STOP_OR_PAUSE: 2,
    }.get(code, 1)
    if n != expected:
        raise InvalidParameter(op, f"{code.name.lower()} takes {expected} bytes, got {n}: {_hex(data)!r}")
    if code is ControlOpcode.SET_TARGET_SPEED:
        return SetTargetSpeed(_OP_U16.unpack(data)[1])
    if code is ControlOpcode.SET_TARGET_INCLINATION:
        return SetTargetInclination(_OP_S16.unpack(data)[1])
    if code is ControlOpcode.STOP_OR_PAUSE:
        try:
            return StopOrPause(StopAction(data[1]))
        except ValueError:
            raise InvalidParameter(op, f"stop_or_pause takes 0x01 or 0x02, got 0x{data[1]:02x}") from None
    if code is ControlOpcode.REQUEST_CONTROL:
        return RequestControl()
    if code is ControlOpcode.RESET:
        return Reset()
    return StartOrResume()


def decode_control_response(data: Octets) -> ControlResponse:
    """The response indication ``80 <request opcode> <result> [parameter]``."""
    if len(data) < _RESPONSE.size or data[0] != ControlOpcode.RESPONSE:
        raise FtmsDecodeError(f"a control point response is 80 <opcode> <result>: {_hex(data)!r}")
    _, request, result = _RESPONSE.unpack_from(data)
    return ControlResponse(_known(ControlOpcode, request), _known(ResultCode, result), bytes(data[3:]))


def decode_control_point(data: Octets) -> ControlPointMessage:
    """Either direction: a response when the opcode is 0x80, else a request."""
    if data and data[0] == ControlOpcode.RESPONSE:
        return decode_control_response(data)
    return decode_control_request(data)


def encode_control_point(message: ControlPointMessage) -> bytes:
    """The bytes to write (a request) or indicate (a response)."""
    try:
        if isinstance(message, SetTargetSpeed):
            return _OP_U16.pack(message.op, message.speed_raw)
        if isinstance(message, SetTargetInclination):
            return _OP_S16.pack(message.op, message.incline_raw)
        if isinstance(message, StopOrPause):
            return bytes((message.op, StopAction(message.action)))
        if isinstance(message, ControlResponse):
            return _RESPONSE.pack(message.op, message.request, message.result) + message.parameter
    except (struct.error, ValueError) as exc:
        raise FtmsEncodeError(f"cannot encode {message!r}: {exc}") from exc
    return bytes((message.op,))


def encode_set_target_speed(speed: Speed, rounding: Rounding, *, increment_raw: int = 1) -> bytes:
    """``02 <u16 0.01 km/h>`` for ``speed``, rounded as asked (rule S2).

    1.2 mph rounded DOWN is ``02 c1 00`` (1.93 km/h), 0.8 mph rounded UP is ``02 81 00``
    (1.29 km/h) (ftms.md "Reverse envelope on FTMS").
    """
    return encode_control_point(SetTargetSpeed.from_speed(speed, rounding, increment_raw=increment_raw))


# --- Fitness Machine Status (0x2ADA) -------------------------------------------------------------


class StatusOpcode(IntEnum):
    """What a machine reports on its own (ftms.md "Fitness Machine Status")."""

    RESET = 0x01
    STOPPED_OR_PAUSED_BY_USER = 0x02
    STOPPED_BY_SAFETY_KEY = 0x03
    STARTED_OR_RESUMED_BY_USER = 0x04
    TARGET_SPEED_CHANGED = 0x05
    TARGET_INCLINE_CHANGED = 0x06
    CONTROL_PERMISSION_LOST = 0xFF


@dataclass(frozen=True, slots=True)
class MachineStatus:
    """One Fitness Machine Status notification.

    ``op`` is a plain int for an opcode we do not model: FTMS defines many more (target power,
    heart rate, spin down …) and a machine sending one breaks no rule, so it decodes to a value for
    the driver to log and ignore, never to an error. ``value`` is the parameter as a number (the
    stop/pause code, the speed in 0.01 km/h, the incline in 0.1 %); ``trailing`` holds the bytes
    not decoded: the whole parameter of an opcode we do not model, or padding.
    """

    op: StatusOpcode | int
    value: int | None = None
    trailing: bytes = b""

    @property
    def stop(self) -> bool:
        """Stopped (not paused) by the user. A missing or unknown parameter counts as a stop: the
        belt may have stopped, and treating it so is the safe reading (rules S10, S11)."""
        return self.op == StatusOpcode.STOPPED_OR_PAUSED_BY_USER and self.value != StopAction.PAUSE

    @property
    def pause(self) -> bool:
        return self.op == StatusOpcode.STOPPED_OR_PAUSED_BY_USER and self.value == StopAction.PAUSE

    @property
    def speed_kmh(self) -> float | None:
        if self.op != StatusOpcode.TARGET_SPEED_CHANGED or self.value is None:
            return None
        return self.value / 100

    @property
    def speed(self) -> Speed | None:
        if self.op != StatusOpcode.TARGET_SPEED_CHANGED or self.value is None:
            return None
        return _KMH_STEP.from_count(self.value)

    @property
    def incline_pct(self) -> float | None:
        if self.op != StatusOpcode.TARGET_INCLINE_CHANGED or self.value is None:
            return None
        return self.value / 10


def decode_machine_status(data: Octets) -> MachineStatus:
    """One status notification; see ``MachineStatus`` for unknown opcodes and leniency."""
    if not data:
        raise FtmsDecodeError("empty Fitness Machine Status")
    op = _known(StatusOpcode, data[0])
    n = len(data)
    if op == StatusOpcode.STOPPED_OR_PAUSED_BY_USER:
        # Lenient: a machine that leaves the parameter out still reports a stop.
        return MachineStatus(op, data[1] if n > 1 else None, bytes(data[2:]))
    if op in (StatusOpcode.TARGET_SPEED_CHANGED, StatusOpcode.TARGET_INCLINE_CHANGED):
        if n < 3:
            raise FtmsDecodeError(f"{op.name.lower()} needs a 16-bit parameter: {_hex(data)!r}")
        layout = _U16 if op == StatusOpcode.TARGET_SPEED_CHANGED else _S16
        return MachineStatus(op, layout.unpack_from(data, 1)[0], bytes(data[3:]))
    return MachineStatus(op, None, bytes(data[1:]))


def encode_machine_status(status: MachineStatus) -> bytes:
    op, value = int(status.op), status.value
    if not 0 <= op <= 0xFF:
        raise FtmsEncodeError(f"status opcode must fit a byte: {op!r}")
    try:
        if op in (StatusOpcode.TARGET_SPEED_CHANGED, StatusOpcode.TARGET_INCLINE_CHANGED):
            if value is None:
                raise FtmsEncodeError(f"status 0x{op:02x} needs a value")
            layout = _OP_U16 if op == StatusOpcode.TARGET_SPEED_CHANGED else _OP_S16
            head = layout.pack(op, value)
        elif op == StatusOpcode.STOPPED_OR_PAUSED_BY_USER and value is not None:
            head = bytes((op, value))
        elif value is not None:
            raise FtmsEncodeError(f"status 0x{op:02x} takes no value, got {value!r}")
        else:
            head = bytes((op,))
    except (struct.error, ValueError) as exc:
        raise FtmsEncodeError(f"cannot encode {status!r}: {exc}") from exc
    return head + status.trailing


# --- Training Status (0x2AD3) --------------------------------------------------------------------


class TrainingStatusCode(IntEnum):
    """Training Status field (FTMS v1.0 §4.10.1.2; the same list as pyftms)."""

    OTHER = 0x00
    IDLE = 0x01
    WARMING_UP = 0x02
    LOW_INTENSITY_INTERVAL = 0x03
    HIGH_INTENSITY_INTERVAL = 0x04
    RECOVERY_INTERVAL = 0x05
    ISOMETRIC = 0x06
    HEART_RATE_CONTROL = 0x07
    FITNESS_TEST = 0x08
    SPEED_OUTSIDE_CONTROL_REGION_LOW = 0x09
    SPEED_OUTSIDE_CONTROL_REGION_HIGH = 0x0A
    COOL_DOWN = 0x0B
    WATT_CONTROL = 0x0C
    MANUAL_MODE = 0x0D
    PRE_WORKOUT = 0x0E
    POST_WORKOUT = 0x0F


_STRING_PRESENT: Final = 0x01


@dataclass(frozen=True, slots=True)
class TrainingStatus:
    """Flags ``u8`` (bit 0: a string follows; bit 1: it continues elsewhere), status ``u8``, and
    the optional UTF-8 string. ``status`` is a plain int for a code we do not know."""

    status: TrainingStatusCode | int
    text: str | None = None
    flags: int = AUTO_FLAGS

    def __post_init__(self) -> None:
        if self.flags == AUTO_FLAGS:
            object.__setattr__(self, "flags", _STRING_PRESENT if self.text is not None else 0)


def decode_training_status(data: Octets) -> TrainingStatus:
    """Lenient on the string: bad UTF-8 is replaced, not refused (it is for display only)."""
    if len(data) < 2:
        raise FtmsDecodeError(f"Training Status needs flags and status, got {_hex(data)!r}")
    flags = data[0]
    text = bytes(data[2:]).decode("utf-8", "replace") if flags & _STRING_PRESENT else None
    return TrainingStatus(_known(TrainingStatusCode, data[1]), text, flags)


def encode_training_status(value: TrainingStatus) -> bytes:
    if bool(value.flags & _STRING_PRESENT) != (value.text is not None):
        raise FtmsEncodeError(f"flags bit 0 must say whether a string follows: {value!r}")
    try:
        head = bytes((value.flags, int(value.status)))
        return head + (value.text.encode("utf-8") if value.text is not None else b"")
    except (ValueError, UnicodeEncodeError) as exc:
        raise FtmsEncodeError(f"cannot encode {value!r}: {exc}") from exc


# --- advertisement service data (ftms.md "Service and characteristics") --------------------------


class MachineType(IntFlag):
    """Fitness Machine Type field of the advertisement (FTMS v1.0 §3.1.2)."""

    TREADMILL = 1 << 0
    CROSS_TRAINER = 1 << 1
    STEP_CLIMBER = 1 << 2
    STAIR_CLIMBER = 1 << 3
    ROWER = 1 << 4
    INDOOR_BIKE = 1 << 5


@dataclass(frozen=True, slots=True)
class FtmsAdvertisement:
    """The FTMS service data of an advertisement: flags ``u8``, machine type ``u16``."""

    flags: int
    machine_type: MachineType

    @property
    def available(self) -> bool:
        """Flags bit 0: the machine is available (not in use by another client)."""
        return bool(self.flags & 0x01)

    @property
    def treadmill(self) -> bool:
        return MachineType.TREADMILL in self.machine_type


def parse_service_data(data: Octets) -> FtmsAdvertisement:
    """Lenient: ftms.md says some machines send the type bytes reversed or only one byte. The
    defined types all sit in the low byte, so the type bytes are ORed (as pyftms does); a type that
    is missing altogether is 0 (unknown). Bytes after the type are ignored."""
    if not data:
        raise FtmsDecodeError("empty FTMS service data")
    machine_type = 0
    for byte in bytes(data[1:3]):
        machine_type |= byte
    return FtmsAdvertisement(data[0], MachineType(machine_type))


def encode_service_data(value: FtmsAdvertisement) -> bytes:
    """The standard form: flags, then the type as ``u16`` little-endian."""
    try:
        return bytes((value.flags,)) + _U16.pack(int(value.machine_type))
    except (struct.error, ValueError) as exc:
        raise FtmsEncodeError(f"cannot encode {value!r}: {exc}") from exc
