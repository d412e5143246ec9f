"""TCX (Garmin Training Center XML v2), written with ``xml.etree.ElementTree``.

One Activity (``Sport="Other"``: the schema's Sport_t has only Running, Biking and Other, and this is
walking, backward), one Lap per work set, trackpoints from the 1 Hz trace with distance and, in the
``ActivityExtension/v2`` namespace, speed (``TPX/Speed``; the lap's ``LX/AvgSpeed``). The Activity's
and each Lap's ``Notes`` say it was walked backward and, for a simulator, ``simulated``.

Nothing invented: a timer-only lap has no ``DistanceMeters`` or ``MaximumSpeed`` (the schema asks
for a distance; importers take the lap without one, and a made-up 0 would read as "stood still").
``Calories`` is required by the schema and written as 0, which TCX readers take as "not measured".
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime

from retrotread.daemon.export import measured, parse_ts, set_points, simulated, work_sets
from retrotread.daemon.history_writer import TracePoint
from retrotread.daemon.snapshot import SessionRecord

TCD = "http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2"
AX = "http://www.garmin.com/xmlschemas/ActivityExtension/v2"
MPH_TO_MPS = 0.44704

XSI = "http://www.w3.org/2001/XMLSchema-instance"
# The tree is built with plain names and the namespace declarations written as attributes: ElementTree's
# own namespace handling needs a process-wide registry (register_namespace) to write a default namespace.


def _t(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _sub(parent: ET.Element, tag: str, text: str | None = None, ns: str = "") -> ET.Element:
    el = ET.SubElement(parent, f"{ns}:{tag}" if ns else tag)
    if text is not None:
        el.text = text
    return el


def _num(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


def notes(record: SessionRecord) -> str:
    what = f"retrotread {record.plan} ({record.mode}), walked backward"
    return f"{what}; simulated ({record.driver})" if simulated(record) else what


def to_tcx(record: SessionRecord, trace: Sequence[TracePoint]) -> bytes:
    belt = measured(record, trace)
    root = ET.Element("TrainingCenterDatabase", {"xmlns": TCD, "xmlns:ax": AX, "xmlns:xsi": XSI})
    activity = _sub(_sub(root, "Activities"), "Activity")
    activity.set("Sport", "Other")
    _sub(activity, "Id", _t(parse_ts(record.started_at).timestamp()))
    for s in work_sets(record):
        lap = _sub(activity, "Lap")
        lap.set("StartTime", _t(parse_ts(s.started_at).timestamp()))
        _sub(lap, "TotalTimeSeconds", _num(s.work_s))
        if belt and s.distance_m is not None and s.max_mph is not None:
            _sub(lap, "DistanceMeters", _num(s.distance_m))
            _sub(lap, "MaximumSpeed", _num(s.max_mph * MPH_TO_MPS))
        _sub(lap, "Calories", "0")
        pts = set_points(s, trace)
        hrs = [p.hr for p in pts if p.hr is not None]
        if hrs:
            _sub(_sub(lap, "AverageHeartRateBpm"), "Value", str(round(sum(hrs) / len(hrs))))
            _sub(_sub(lap, "MaximumHeartRateBpm"), "Value", str(max(hrs)))
        _sub(lap, "Intensity", "Active")
        _sub(lap, "TriggerMethod", "Time")
        if pts:
            track = _sub(lap, "Track")
            for p in pts:
                tp = _sub(track, "Trackpoint")
                _sub(tp, "Time", _t(p.ts))
                if belt and p.distance_m is not None:
                    _sub(tp, "DistanceMeters", _num(p.distance_m))
                if p.hr is not None:
                    _sub(_sub(tp, "HeartRateBpm"), "Value", str(p.hr))
                if belt and p.speed_mph is not None:
                    tpx = _sub(_sub(tp, "Extensions"), "TPX", ns="ax")
                    _sub(tpx, "Speed", _num(p.speed_mph * MPH_TO_MPS), ns="ax")
        _sub(lap, "Notes", f"set {s.set}: {s.outcome}" + ("; simulated" if simulated(record) else ""))
        if belt and s.avg_mph is not None:
            lx = _sub(_sub(lap, "Extensions"), "LX", ns="ax")
            _sub(lx, "AvgSpeed", _num(s.avg_mph * MPH_TO_MPS), ns="ax")
    _sub(activity, "Notes", notes(record))
    creator = _sub(activity, "Creator")
    creator.set("xsi:type", "Device_t")
    _sub(creator, "Name", "retrotread simulator" if simulated(record) else "retrotread")
    _sub(creator, "UnitId", "0")
    _sub(creator, "ProductID", "0")
    version = _sub(creator, "Version")
    for tag in ("VersionMajor", "VersionMinor"):
        _sub(version, tag, "0")
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data
