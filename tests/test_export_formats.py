"""FIT, TCX and CSV exports of stored sessions, each read back by an independent reader (issue 15):
fitdecode for FIT, ElementTree parsing for TCX, the csv module for CSV."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import fitdecode
import pytest

from retrotread.daemon.export import ExportError, export
from retrotread.daemon.history import SqliteHistory, TracePoint
from retrotread.daemon.snapshot import SessionRecord, SetResult, iso

T0 = 1_790_000_000.0
MPS = 0.44704
TCD = "{http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2}"
AX = "{http://www.garmin.com/xmlschemas/ActivityExtension/v2}"


def stored(tmp_path: Path, driver: str, dists: list[float] | None) -> tuple[SessionRecord, list[TracePoint]]:
    """A 3 x 60 s deadmill session written through a real SqliteHistory and read back from the file."""
    store = SqliteHistory.open(tmp_path / "h.sqlite3")
    sid = store.begin("deadmill", "deadmill", driver, 3, iso(T0))
    starts = [5 + 120 * k for k in range(3)]  # 60 s sets, 60 s rests
    total = 0.0
    for at in range(311):  # the 1 Hz trace, rests included
        k = next((k for k, st in enumerate(starts) if st <= at <= st + 60), None)
        if dists is None:
            store.trace(sid, TracePoint(t_s=float(at), ts=T0 + at))
            continue
        done = sum(dists[j] for j, st in enumerate(starts) if st + 60 < at)
        total = done + (dists[k] * (at - starts[k]) / 60 if k is not None else 0.0)
        speed = dists[k] / 60 / MPS if k is not None else 0.0
        store.trace(sid, TracePoint(t_s=float(at), ts=T0 + at, speed_mph=speed, distance_m=total))
    for k, start in enumerate(starts):
        d = dists[k] if dists else 0.0
        speed = d / 60 / MPS
        store.record_set(
            sid,
            SetResult(
                set=k + 1,
                started_at=iso(T0 + start),
                ended_at=iso(T0 + start + 60),
                started_mono=float(start),
                ended_mono=float(start + 60),
                work_s=60.0,
                distance_m=d,
                avg_mph=speed,
                max_mph=speed * 1.1,
                outcome="completed",
            ),
        )
    store.end(sid, "completed", iso(T0 + 310))
    store.close()
    reader = SqliteHistory.open_readonly(tmp_path / "h.sqlite3")
    rec, trace = reader.get(sid), reader.get_trace(sid)
    reader.close()
    assert rec is not None
    return rec, trace


def fit_messages(data: bytes) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with fitdecode.FitReader(io.BytesIO(data), check_crc=fitdecode.CrcCheck.ENABLED) as reader:
        for frame in reader:
            if isinstance(frame, fitdecode.FitDataMessage):
                out.setdefault(frame.name, []).append({f.name: f.value for f in frame.fields})
    return out


def test_fit_has_the_activity_laps_records_totals_and_the_backward_field(tmp_path: Path) -> None:
    rec, trace = stored(tmp_path, "csafe:///dev/ttyUSB0", [42.0, 40.0, 36.0])
    msgs = fit_messages(export(rec, trace, "fit"))
    assert msgs["file_id"][0]["type"] == "activity"
    (session,) = msgs["session"]
    assert session["sport"] == "walking" and session["sub_sport"] == "treadmill"
    assert session["num_laps"] == 3 and session["total_timer_time"] == 180.0
    assert session["total_distance"] == 118.0
    assert session["direction"] == "backward" and session["simulated"] == 0
    laps = msgs["lap"]
    assert [lap["total_distance"] for lap in laps] == [42.0, 40.0, 36.0]
    assert all(lap["direction"] == "backward" for lap in laps)
    assert [lap["total_timer_time"] for lap in laps] == [60.0] * 3
    assert len(msgs["record"]) == len(trace) == 311
    assert msgs["record"][-1]["distance"] == 118.0
    assert len(msgs["activity"]) == 1


def test_fit_of_a_simulator_says_so_and_a_timer_only_session_has_no_distance(tmp_path: Path) -> None:
    rec, trace = stored(tmp_path / "a", "sim://manual", None)
    msgs = fit_messages(export(rec, trace, "fit"))
    (session,) = msgs["session"]
    assert session["simulated"] == 1
    assert session["total_timer_time"] == 180.0
    assert session.get("total_distance") is None and session.get("avg_speed") is None
    assert all(lap.get("total_distance") is None for lap in msgs["lap"])
    assert all(r.get("distance") is None and r.get("speed") is None for r in msgs["record"])


def test_tcx_has_one_lap_per_set_with_totals_trackpoints_and_speed(tmp_path: Path) -> None:
    rec, trace = stored(tmp_path, "ftms+sim://", [42.0, 40.0, 36.0])
    root = ET.fromstring(export(rec, trace, "tcx"))
    (activity,) = root.iter(f"{TCD}Activity")
    assert activity.get("Sport") == "Other"
    laps = activity.findall(f"{TCD}Lap")
    assert len(laps) == 3
    assert [float(lap.findtext(f"{TCD}DistanceMeters") or "nan") for lap in laps] == [42.0, 40.0, 36.0]
    assert sum(float(lap.findtext(f"{TCD}TotalTimeSeconds") or "nan") for lap in laps) == 180.0
    points = laps[0].findall(f"{TCD}Track/{TCD}Trackpoint")
    assert len(points) == 61  # the set's own 1 Hz points, both ends included
    speed = points[10].findtext(f"{TCD}Extensions/{AX}TPX/{AX}Speed")
    assert speed is not None and abs(float(speed) - 0.7) < 0.001
    assert "simulated" in (activity.findtext(f"{TCD}Notes") or "")
    assert all("simulated" in (lap.findtext(f"{TCD}Notes") or "") for lap in laps)


def test_tcx_of_a_timer_only_session_has_times_and_no_distance(tmp_path: Path) -> None:
    rec, trace = stored(tmp_path, "none", None)
    root = ET.fromstring(export(rec, trace, "tcx"))
    laps = list(root.iter(f"{TCD}Lap"))
    assert len(laps) == 3 and all(lap.findtext(f"{TCD}TotalTimeSeconds") == "60" for lap in laps)
    assert list(root.iter(f"{TCD}DistanceMeters")) == [] and list(root.iter(f"{AX}Speed")) == []


def test_csv_has_one_row_per_set_and_marks_simulated_and_timer_only(tmp_path: Path) -> None:
    rec, trace = stored(tmp_path / "a", "sim://manual", [42.0, 40.0, 36.0])
    rows = list(csv.DictReader(io.StringIO(export(rec, trace, "csv").decode())))
    assert [r["distance_m"] for r in rows] == ["42.0", "40.0", "36.0"]
    assert {r["simulated"] for r in rows} == {"true"} and {r["session"] for r in rows} == {str(rec.id)}
    rec, trace = stored(tmp_path / "b", "none", None)
    rows = list(csv.DictReader(io.StringIO(export(rec, trace, "csv").decode())))
    assert len(rows) == 3 and {(r["distance_m"], r["avg_mph"], r["simulated"]) for r in rows} == {("", "", "false")}
    assert {r["work_s"] for r in rows} == {"60.0"}


def test_an_unknown_format_is_a_clear_error(tmp_path: Path) -> None:
    rec, trace = stored(tmp_path, "none", None)
    with pytest.raises(ExportError, match="unknown export format 'gpx'; known: fit, tcx, csv"):
        export(rec, trace, "gpx")
