"""FTMS values as JSON: the presentation half of ``retrotread decode ftms-*`` (issue 11.8).

``drivers.ftms.codec`` holds the wire format (bytes to values and back); this module turns those
values into one JSON-able dict each, with the field names of ``docs/interfaces.md`` (absent fields
omitted, "not available" fields null), and ``describe`` does both steps for one frame.

Like the codec it does no I/O and imports nothing of ours beyond ``drivers``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any, Final, TypeAlias

from retrotread.drivers.ftms.codec import (
    ControlPointMessage,
    ControlResponse,
    FitnessMachineFeature,
    FtmsAdvertisement,
    MachineStatus,
    MachineType,
    Octets,
    RequestControl,
    Reset,
    SetTargetInclination,
    SetTargetSpeed,
    StartOrResume,
    StatusOpcode,
    StopOrPause,
    SupportedInclinationRange,
    SupportedSpeedRange,
    TrainingStatus,
    TreadmillData,
    decode_control_point,
    decode_feature,
    decode_inclination_range,
    decode_machine_status,
    decode_speed_range,
    decode_training_status,
    decode_treadmill_data,
    flag_names,
    treadmill_fields,
)
from retrotread.drivers.units import Speed

__all__ = [
    "DESCRIBE_KINDS",
    "advertisement_json",
    "control_point_json",
    "describe",
    "feature_json",
    "inclination_range_json",
    "machine_status_json",
    "speed_range_json",
    "to_json",
    "training_status_json",
    "treadmill_data_json",
]

JsonDict: TypeAlias = dict[str, Any]


def _mph(kmh: float | None) -> float | None:
    return None if kmh is None else Speed.from_kmh(kmh).mph


def _name(value: int) -> str:
    """An enum member's lower-case name, or the hex of a value we have no name for."""
    return value.name.lower() if isinstance(value, IntEnum) else f"0x{value:02x}"


def treadmill_data_json(record: TreadmillData) -> JsonDict:
    """Fields named as in interfaces.md. A field the flags leave out is omitted and one the packet
    marks "not available" is null; ``speed_kmh``/``speed_mph`` are always there (null in a part
    that says More Data, like the vector ``09001900f1ff``)."""
    flags = record.flags
    out: JsonDict = {
        "flags": f"0x{flags:04x}",
        "more_data": record.more_data,
        "speed_kmh": record.speed_kmh,
        "speed_mph": _mph(record.speed_kmh),
    }
    announced = treadmill_fields(flags)
    for name in announced:
        if name != "speed_kmh":
            out[name] = getattr(record, name)
    if "average_speed_kmh" in announced:
        out["average_speed_mph"] = _mph(record.average_speed_kmh)
    instantaneous, average = "instantaneous_pace_raw" in announced, "average_pace_raw" in announced
    if instantaneous or average:
        out["pace_bytes"] = record.pace_bytes
        if record.pace_bytes == 1:
            if instantaneous:
                out["instantaneous_pace_km_per_min"] = record.instantaneous_pace_km_per_min
            if average:
                out["average_pace_km_per_min"] = record.average_pace_km_per_min
    if record.trailing:
        out["trailing"] = record.trailing.hex()
    return out


def machine_status_json(status: MachineStatus) -> JsonDict:
    op = status.op
    out: JsonDict = {"op": _name(op) if isinstance(op, IntEnum) else "unknown"}
    if not isinstance(op, IntEnum):
        out["opcode"] = f"0x{op:02x}"
    elif op is StatusOpcode.STOPPED_OR_PAUSED_BY_USER:
        out["stop"] = status.stop
        out["pause"] = status.pause
    elif op is StatusOpcode.TARGET_SPEED_CHANGED:
        out["speed_kmh"] = status.speed_kmh
        out["speed_mph"] = _mph(status.speed_kmh)
    elif op is StatusOpcode.TARGET_INCLINE_CHANGED:
        out["incline_pct"] = status.incline_pct
    if status.trailing:
        out["trailing"] = status.trailing.hex()
    return out


def control_point_json(message: ControlPointMessage) -> JsonDict:
    out: JsonDict = {"op": _name(message.op)}
    if isinstance(message, SetTargetSpeed):
        out["speed_kmh"] = message.speed_kmh
        out["speed_mph"] = _mph(message.speed_kmh)
    elif isinstance(message, SetTargetInclination):
        out["incline_pct"] = message.incline_pct
    elif isinstance(message, StopOrPause):
        out["stop"] = message.stop
        out["pause"] = message.pause
    elif isinstance(message, ControlResponse):
        out["request"] = _name(message.request)
        out["result"] = _name(message.result)
        if message.parameter:
            out["parameter"] = message.parameter.hex()
    return out


def speed_range_json(value: SupportedSpeedRange) -> JsonDict:
    return {
        "min_kmh": value.min_kmh,
        "max_kmh": value.max_kmh,
        "increment_kmh": value.increment_kmh,
        "min_mph": value.minimum.mph,
        "max_mph": value.maximum.mph,
        "increment_mph": value.increment.mph,
    }


def inclination_range_json(value: SupportedInclinationRange) -> JsonDict:
    return {
        "min_pct": value.min_pct,
        "max_pct": value.max_pct,
        "increment_pct": value.increment_pct,
    }


def feature_json(value: FitnessMachineFeature) -> JsonDict:
    return {"features": list(value.feature_names), "targets": list(value.target_names)}


def training_status_json(value: TrainingStatus) -> JsonDict:
    out: JsonDict = {"status": _name(value.status), "flags": f"0x{value.flags:02x}"}
    if value.text is not None:
        out["text"] = value.text
    return out


def advertisement_json(value: FtmsAdvertisement) -> JsonDict:
    return {
        "available": value.available,
        "treadmill": value.treadmill,
        "machine_type": flag_names(value.machine_type, MachineType),
    }


def to_json(value: object) -> JsonDict:
    """A JSON-able dict for any value this module decodes."""
    if isinstance(value, TreadmillData):
        return treadmill_data_json(value)
    if isinstance(value, MachineStatus):
        return machine_status_json(value)
    if isinstance(
        value,
        RequestControl | Reset | SetTargetSpeed | SetTargetInclination | StartOrResume | StopOrPause | ControlResponse,
    ):
        return control_point_json(value)
    if isinstance(value, SupportedSpeedRange):
        return speed_range_json(value)
    if isinstance(value, SupportedInclinationRange):
        return inclination_range_json(value)
    if isinstance(value, FitnessMachineFeature):
        return feature_json(value)
    if isinstance(value, TrainingStatus):
        return training_status_json(value)
    if isinstance(value, FtmsAdvertisement):
        return advertisement_json(value)
    raise TypeError(f"no JSON form for {type(value).__name__}")


_DESCRIBERS: Final[dict[str, Callable[[Octets], object]]] = {
    "ftms-treadmill": decode_treadmill_data,
    "ftms-status": decode_machine_status,
    "ftms-control": decode_control_point,
    "ftms-speed-range": decode_speed_range,
    "ftms-incline-range": decode_inclination_range,
    "ftms-feature": decode_feature,
    "ftms-training-status": decode_training_status,
}
DESCRIBE_KINDS: Final = tuple(_DESCRIBERS)
"""The ``KIND`` names ``describe`` takes; the first four are those of ``retrotread decode``."""


def describe(kind: str, data: Octets) -> JsonDict:
    """``retrotread decode KIND HEX``: one frame to a JSON-able dict.

    Raises a ``CodecError`` (``FtmsDecodeError``) for malformed bytes, ``ValueError`` for a kind
    not in ``DESCRIBE_KINDS`` (a usage error, exit code 2).
    """
    try:
        decoder = _DESCRIBERS[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(DESCRIBE_KINDS)}") from None
    return to_json(decoder(data))
