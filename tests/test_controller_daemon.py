"""The real daemon (`retrotread run`) on a simulated belt whose console stops by itself (issue 10).

Stop pressed on the machine mid-set (a device-reported stop, S10): the session pauses, and the
device hears no start after it until a person resumes (S9: the daemon never restarts a belt).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from daemon_proc import EventTap, daemon
from helpers import trace_commands

pytestmark = pytest.mark.slow


def test_s10_s9_a_console_stop_mid_set_pauses_the_session_and_no_start_follows_until_resume(tmp_path: Path) -> None:
    trace = tmp_path / "device.jsonl"
    url = f"sim://motorized?rate_hz=20&fault=console-stop@5&trace={trace}"
    with daemon("--driver", url, "--mode", "reverse") as d:
        tap = EventTap(d.url)
        try:
            resp = d.post("/api/v1/session", {"plan": "2x60s/5s,countdown=1s"})
            assert resp.status_code in (200, 201, 202), resp.text
            paused = tap.wait(lambda e: e["kind"] == "session_paused", within=20)
            assert paused["rule"] == "S10"
            # Past the standstill window and the S4 hold: the old daemon restarted the belt here.
            d.until(lambda s: s["belt"]["speed_mph"] < 0.05 and s["session"]["paused"])
            cmds = trace_commands(trace)
            stop_at = next(i for i, c in enumerate(cmds) if c["cmd"] == "fault:console-stop")
            t_stop = float(str(cmds[stop_at]["t"]))  # the daemon's monotonic clock is the system's
            # A negative claim needs a window: 5 s past the stop, beyond the 1 s standstill and
            # the 3 s hold of S4, polling the daemon's state until then.
            state = d.until(lambda s: time.monotonic() > t_stop + 5.0, within=15)
            after = [c["cmd"] for c in trace_commands(trace)[stop_at + 1 :]]
            assert "start" not in after and "speed" not in after, after
            assert state["session"]["paused"] and not state["stop"]["latched"]
            resp = d.post("/api/v1/session/resume")
            assert resp.status_code < 300, resp.text
            d.until(lambda s: s["belt"]["speed_mph"] > 0.75, within=15)
            after = [c["cmd"] for c in trace_commands(trace)[stop_at + 1 :]]
            assert after.count("start") == 1
        finally:
            tap.close()
