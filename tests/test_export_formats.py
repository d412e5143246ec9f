"""FIT, TCX and CSV exports of stored sessions, each read back by an independent reader (issue 15):
fitdecode for FIT, ElementTree parsing for TCX, the csv module for CSV."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import fit_messages, write_deadmill_session

from retrotread.daemon.export import ExportError, export
from retrotread.daemon.history import SqliteHistory, TracePoint
from retrotread.daemon.snapshot import SessionRecord

TCD = "{http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2}"
AX = "{http://www.garmin.com/xmlschemas/ActivityExtension/v2}"


def stored(tmp_path: Path, driver: str, dists: list[float] | None) -> tuple[SessionRecord, list[TracePoint]]:
    """A 3 x 60 s deadmill session written through a real SqliteHistory and read back from the file."""
    sid = write_deadmill_session(tmp_path / "h.sqlite3", driver, dists)
    reader = SqliteHistory.open_readonly(tmp_path / "h.sqlite3")
    rec, trace = reader.get(sid), reader.get_trace(sid)
    reader.close()
    assert rec is not None
    return rec, trace


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
