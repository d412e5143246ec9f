"""FIT with Garmin's official SDK (``garmin-fit-sdk``, its Encoder): what Strava, Garmin Connect and
intervals.icu import.

Messages, in the order the FIT activity file type wants them: file_id, developer_data_id and two
field_descriptions, start event, records from the 1 Hz trace, one lap per work set, the session
(sport walking, sub_sport treadmill), stop event, activity. No standard field can say the person
walked backward, so a developer field ``direction`` = ``backward`` is on the session and each lap;
a second one, ``simulated`` (1 or 0), says whether a simulator, not a belt, produced the numbers.
A timer-only session has times only: no distance, no speed (the SDK omits a field given as None).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from garmin_fit_sdk import Encoder

from retrotread.daemon.export import measured, parse_ts, set_points, simulated, work_sets
from retrotread.daemon.history_writer import TracePoint
from retrotread.daemon.snapshot import SessionRecord

if TYPE_CHECKING:  # the SDK's message types exist in its stubs only
    from garmin_fit_sdk.mesgs import DeveloperDataIdMesg, FieldDescriptionMesg

# Global message numbers (FIT profile, Profile['types']['mesg_num']).
FILE_ID, SESSION, LAP, RECORD, EVENT, ACTIVITY = 0, 18, 19, 20, 21, 34
FIELD_DESCRIPTION, DEVELOPER_DATA_ID = 206, 207
FIT_EPOCH_S = 631065600  # 1989-12-31T00:00:00Z, FIT's time zero, in Unix seconds
MPH_TO_MPS = 0.44704
BASE_UINT8, BASE_STRING = 0x02, 0x07  # fit_base_type ids
MANUFACTURER_DEVELOPMENT = 255
DIRECTION_KEY, SIMULATED_KEY = 0, 1  # the Encoder's keys of the two developer fields

# The developer fields' owner: a fixed application id, so every file from retrotread carries the same one.
APPLICATION_ID = list(bytes.fromhex("72657472-6f74-7265-6164-000000000001".replace("-", "")))
DEV_ID: dict[str, Any] = {
    "mesg_num": DEVELOPER_DATA_ID,
    "developer_data_index": 0,
    "application_id": APPLICATION_ID,
    "application_version": 1,
}
DIRECTION: dict[str, Any] = {
    "mesg_num": FIELD_DESCRIPTION,
    "developer_data_index": 0,
    "field_definition_number": 0,
    "fit_base_type_id": BASE_STRING,
    "field_name": "direction",
}
SIMULATED: dict[str, Any] = {
    "mesg_num": FIELD_DESCRIPTION,
    "developer_data_index": 0,
    "field_definition_number": 1,
    "fit_base_type_id": BASE_UINT8,
    "field_name": "simulated",
}


def _fit_ts(unix_s: float) -> int:
    return round(unix_s) - FIT_EPOCH_S


def _mps(mph: float | None) -> float | None:
    return None if mph is None else mph * MPH_TO_MPS


def to_fit(record: SessionRecord, trace: Sequence[TracePoint]) -> bytes:
    belt = measured(record, trace)
    sim = 1 if simulated(record) else 0
    dev = {DIRECTION_KEY: "backward", SIMULATED_KEY: sim}
    start = parse_ts(record.started_at).timestamp()
    end = parse_ts(record.ended_at).timestamp() if record.ended_at else max([start, *(p.ts for p in trace)])
    sets = work_sets(record)

    enc = Encoder()
    dev_id = cast("DeveloperDataIdMesg", DEV_ID)
    enc.add_developer_field(DIRECTION_KEY, dev_id, cast("FieldDescriptionMesg", DIRECTION))
    enc.add_developer_field(SIMULATED_KEY, dev_id, cast("FieldDescriptionMesg", SIMULATED))
    enc.write_mesg(
        {
            "mesg_num": FILE_ID,
            "type": "activity",
            "manufacturer": MANUFACTURER_DEVELOPMENT,
            "product": 1,
            "serial_number": record.id,
            "time_created": _fit_ts(start),
            "product_name": "retrotread simulator" if sim else "retrotread",
        }
    )
    enc.write_mesg(DEV_ID)
    enc.write_mesg(DIRECTION)
    enc.write_mesg(SIMULATED)
    enc.write_mesg({"mesg_num": EVENT, "timestamp": _fit_ts(start), "event": "timer", "event_type": "start"})
    for p in trace:
        enc.write_mesg(
            {
                "mesg_num": RECORD,
                "timestamp": _fit_ts(p.ts),
                "speed": _mps(p.speed_mph) if belt else None,
                "distance": p.distance_m if belt else None,
                "grade": p.incline_pct,
                "heart_rate": p.hr,
            }
        )
    for i, s in enumerate(sets):
        pts = set_points(s, trace)
        hrs = [p.hr for p in pts if p.hr is not None]
        enc.write_mesg(
            {
                "mesg_num": LAP,
                "message_index": i,
                "timestamp": _fit_ts(parse_ts(s.ended_at).timestamp()),
                "start_time": _fit_ts(parse_ts(s.started_at).timestamp()),
                "event": "lap",
                "event_type": "stop",
                "lap_trigger": "time",
                "sport": "walking",
                "sub_sport": "treadmill",
                "intensity": "active",
                "total_elapsed_time": s.ended_mono - s.started_mono,
                "total_timer_time": s.work_s,
                "total_distance": s.distance_m if belt else None,
                "avg_speed": _mps(s.avg_mph) if belt and s.avg_mph is not None else None,
                "max_speed": _mps(s.max_mph) if belt and s.max_mph is not None else None,
                "avg_heart_rate": round(sum(hrs) / len(hrs)) if hrs else None,
                "max_heart_rate": max(hrs) if hrs else None,
                "developer_fields": dev,
            }
        )
    timer_s = sum(s.work_s for s in sets)
    distance = sum(s.distance_m or 0.0 for s in sets)  # a set with no samples measured nothing
    hrs = [p.hr for p in trace if p.hr is not None]
    enc.write_mesg(
        {
            "mesg_num": SESSION,
            "message_index": 0,
            "timestamp": _fit_ts(end),
            "start_time": _fit_ts(start),
            "event": "session",
            "event_type": "stop",
            "trigger": "activity_end",
            "sport": "walking",
            "sub_sport": "treadmill",
            "total_elapsed_time": max(0.0, end - start),
            "total_timer_time": timer_s,
            "total_distance": distance if belt else None,
            "avg_speed": _mps(distance / timer_s / MPH_TO_MPS) if belt and timer_s > 0 else None,
            "max_speed": _mps(max((s.max_mph for s in sets if s.max_mph is not None), default=0.0)) if belt else None,
            "avg_heart_rate": round(sum(hrs) / len(hrs)) if hrs else None,
            "max_heart_rate": max(hrs) if hrs else None,
            "first_lap_index": 0,
            "num_laps": len(sets),
            "developer_fields": dev,
        }
    )
    enc.write_mesg({"mesg_num": EVENT, "timestamp": _fit_ts(end), "event": "timer", "event_type": "stop_all"})
    enc.write_mesg(
        {
            "mesg_num": ACTIVITY,
            "timestamp": _fit_ts(end),
            "total_timer_time": timer_s,
            "num_sessions": 1,
            "type": "manual",
            "event": "activity",
            "event_type": "stop",
        }
    )
    return enc.close()
