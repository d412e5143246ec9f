"""Issue 15: a real daemon records each session's 1 Hz trace, and the exports are made from it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from daemon_proc import daemon

pytestmark = pytest.mark.slow

TCX = "{http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2}"


def test_a_session_on_a_measured_belt_stores_a_trace_that_the_tcx_export_carries() -> None:
    with daemon("--driver", "sim://manual?rate_hz=20", "--mode", "deadmill") as d:
        assert d.post("/api/v1/session", {"plan": "2x3s/1s,countdown=0s"}).status_code == 201
        d.until(lambda s: s["session"] is None)
        [record] = d.http.get("/api/v1/history").json()
        resp = d.http.get(f"/api/v1/history/{record['id']}/export", params={"format": "tcx"})
    assert resp.status_code == 200
    root = ET.fromstring(resp.content)
    points = root.findall(f".//{TCX}Trackpoint")
    assert len(points) >= 5  # 7 s of session at 1 Hz: a point a second, from the stored trace
    distances = [float(p.findtext(f"{TCX}DistanceMeters") or "nan") for p in points]
    assert distances == sorted(distances)  # cumulative: the trace never runs backwards
    stored = sum(s["distance_m"] for s in record["sets"])
    assert distances[-1] == pytest.approx(stored, abs=0.5)  # the trace's distance is the sets'


def test_a_timer_only_session_exports_times_and_no_invented_distance() -> None:
    with daemon("--driver", "none", "--mode", "deadmill") as d:
        assert d.post("/api/v1/session", {"plan": "1x2s/0s,countdown=0s"}).status_code == 201
        d.until(lambda s: s["session"] is None)
        [record] = d.http.get("/api/v1/history").json()
        resp = d.http.get(f"/api/v1/history/{record['id']}/export", params={"format": "tcx"})
    assert resp.status_code == 200
    root = ET.fromstring(resp.content)
    assert root.findall(f".//{TCX}Lap")
    assert root.findall(f".//{TCX}DistanceMeters") == []
    assert all(s["distance_m"] is None for s in record["sets"])
