"""``/metrics`` carries the machine's own data (issue 14 point 4), through a real daemon.

Two processes, as a user runs them: ``retrotread sim-device csafe`` (the simulated console, which
answers GetVersion, GetUtilization, GetOdometer, GetErrorCode and GetServiceCode) and ``retrotread
run --driver csafe://...``. What ``/metrics`` says must be what the state's ``device`` block says,
and a driver whose machine says nothing exports no device metrics at all (nothing invented).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_proc import daemon
from helpers import sim_console
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

pytestmark = pytest.mark.slow


def device_samples(text: str) -> dict[str, Sample]:
    return {
        s.name: s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("retrotread_device")
    }


def test_metrics_carry_the_consoles_description_and_counters(tmp_path: Path) -> None:
    link = tmp_path / "ttyTREAD"
    with sim_console(link), daemon("--driver", f"csafe://{link}", "--mode", "reverse") as d:
        state = d.until(lambda s: s["connected"] and s["device"] and "odometer_m" in s["device"])
        device = state["device"]
        resp = d.http.get("/metrics")
        assert resp.status_code == 200
        got = device_samples(resp.text)
    info = got["retrotread_device_info"]
    assert info.value == 1.0
    assert info.labels == {
        "treadmill": state["id"],
        "maker": device.get("maker", ""),
        "model": device["model"],
        "firmware": device["firmware"],
        "serial": device.get("serial", ""),
    }
    assert got["retrotread_device_use_seconds"].value == device["hours_of_use"] * 3600
    assert got["retrotread_device_odometer_meters"].value == device["odometer_m"]
    assert got["retrotread_device_error_code"].value == device["error_code"] == 0
    assert got["retrotread_device_service_code"].value == device["service_code"] == 0


def test_a_machine_that_says_nothing_exports_no_device_metrics() -> None:
    with daemon("--driver", "sim://motorized", "--mode", "reverse") as d:
        state = d.until(lambda s: s["connected"])
        assert state["device"] is None
        resp = d.http.get("/metrics")
        assert resp.status_code == 200 and "retrotread_belt_speed_mph" in resp.text
        assert device_samples(resp.text) == {}
