"""Fault injection: the real daemon (`retrotread run`) on the simulated belt, one fault each.

Each test asserts the stop, its reason and its rule, in the state and in the event stream.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import Daemon, EventTap, daemon

pytestmark = pytest.mark.slow

FAULT_AT_S = 4


@pytest.fixture
def running() -> Iterator[Any]:
    """A factory: a daemon on sim://motorized with a fault, the belt brought to 1.0 mph."""
    stack: list[tuple[Any, EventTap]] = []

    def make(fault: str, extra: str = "") -> tuple[Daemon, EventTap]:
        cm = daemon("--driver", f"sim://motorized?rate_hz=20&fault={fault}{extra}", "--mode", "reverse")
        d = cm.__enter__()
        tap = EventTap(d.url)
        stack.append((cm, tap))
        start_belt(d)
        return d, tap

    yield make
    for cm, tap in reversed(stack):
        tap.close()
        cm.__exit__(None, None, None)


def start_belt(d: Daemon, mph: float = 1.0) -> None:
    # S4: a start is held (202) until the belt has read 0 for a second; ask until one is taken.
    d.until(lambda s: d.post("/api/v1/belt/start", {"speed_mph": mph}).status_code == 202, within=10)
    d.until(lambda s: s["belt"] is not None and s["belt"]["speed_mph"] > 0.9)  # None before the first reading


def latched(d: Daemon, reason: str, rule: str) -> dict[str, Any]:
    return d.until(lambda s: s["stop"]["latched"] and s["stop"]["reason"] == reason and s["stop"]["rule"] == rule)


def estop_event(tap: EventTap, reason: str, rule: str) -> dict[str, Any]:
    return tap.wait(lambda e: e["kind"] == "estop" and e["reason"] == reason and e["rule"] == rule)


def test_s7_runaway_belt_trips_overspeed(running: Any) -> None:
    d, tap = running(f"runaway@{FAULT_AT_S}")
    latched(d, "overspeed", "S7")
    estop_event(tap, "overspeed", "S7")
    state = d.until(lambda s: s["belt"]["speed_mph"] < 0.05)
    assert state["target_mph"] is None


def test_s8_stalled_telemetry_trips_stale(running: Any) -> None:
    d, tap = running(f"stall@{FAULT_AT_S}")
    latched(d, "stale", "S8")
    estop_event(tap, "stale", "S8")
    # Telemetry never comes back, so the stop cannot be confirmed: that is loud, not silent.
    fault = tap.wait(lambda e: e["kind"] == "fault")
    assert (fault["reason"], fault["rule"]) == ("stop-unconfirmed", "S5")


def test_s8_garbage_on_the_link_counts_as_no_samples(running: Any) -> None:
    d, tap = running(f"garbage@{FAULT_AT_S}")
    latched(d, "stale", "S8")
    estop_event(tap, "stale", "S8")


def test_s9_unplugged_link_latches_and_reconnects_to_a_stop(running: Any, tmp_path: Path) -> None:
    trace = tmp_path / "device.jsonl"
    d, tap = running(f"unplug@{FAULT_AT_S}", f"&trace={trace}")
    latched(d, "link-lost", "S9")
    estop_event(tap, "link-lost", "S9")
    tap.wait(lambda e: e["kind"] == "reconnected" and e["rule"] == "S9")
    d.until(lambda s: s["connected"])
    cmds = [json.loads(line) for line in trace.read_text().splitlines()]
    unplugged = next(i for i, c in enumerate(cmds) if c["cmd"] == "fault:unplug")
    after = [c["cmd"] for c in cmds[unplugged + 1 :]]
    assert after and after[0] == "estop"  # the first command the device hears again is a stop
    assert "start" not in after and "speed" not in after  # nothing replayed


def test_s10_safety_key_latches(running: Any) -> None:
    d, tap = running(f"key@{FAULT_AT_S}")
    latched(d, "safety-key", "S10")
    estop_event(tap, "safety-key", "S10")


def test_s11_reboot_that_resumes_the_belt_ends_stopped_and_latched(running: Any, tmp_path: Path) -> None:
    trace = tmp_path / "device.jsonl"
    d, tap = running(f"reboot@{FAULT_AT_S}", f"&trace={trace}")
    estop_event(tap, "link-lost", "S9")
    estop_event(tap, "uncommanded", "S11")
    state = latched(d, "uncommanded", "S11")
    state = d.until(lambda s: s["belt"]["speed_mph"] < 0.05 and s["stop"]["latched"])
    assert state["stop"]["reason"] == "uncommanded"
    cmds = [json.loads(line)["cmd"] for line in trace.read_text().splitlines()]
    resumed = cmds.index("device:resume")
    assert "estop" in cmds[resumed + 1 :]  # the device's own resume was stopped by the daemon


def test_s10_a_device_that_ignores_commands_is_stopped_then_reported(running: Any, tmp_path: Path) -> None:
    trace = tmp_path / "device.jsonl"
    d, tap = running(f"ignore@{FAULT_AT_S}", f"&trace={trace}")
    wait_trace(trace, "fault:ignore")
    assert d.post("/api/v1/belt/speed", {"speed_mph": 1.1}).status_code == 202
    stop = tap.wait(lambda e: e["kind"] == "stop" and e["rule"] == "S10")
    assert stop["reason"] == "rejected"
    # Nothing the daemon sends is obeyed now: after 5 s it says so, loudly, and latches.
    fault = tap.wait(lambda e: e["kind"] == "fault")
    assert (fault["reason"], fault["rule"]) == ("stop-unconfirmed", "S5")
    latched(d, "stop-unconfirmed", "S5")


def wait_trace(trace: Path, cmd: str, within: float = 20.0) -> None:
    """Wait for the simulated device to log ``cmd`` in its trace file (polled with a deadline)."""
    deadline = time.monotonic() + within
    while not (trace.exists() and any(json.loads(line)["cmd"] == cmd for line in trace.read_text().splitlines())):
        assert time.monotonic() < deadline, f"{cmd} not in {trace}"
        time.sleep(0.05)


def test_s15_sigterm_stops_the_belt_before_exit(tmp_path: Path) -> None:
    trace = tmp_path / "device.jsonl"
    with daemon("--driver", f"sim://motorized?rate_hz=20&trace={trace}", "--mode", "reverse") as d:
        start_belt(d)
        d.signal(signal.SIGTERM)
        assert d.proc.wait(10) == 0
        assert "S15" in d.log()
    cmds = [json.loads(line) for line in trace.read_text().splitlines()]
    assert cmds[-1]["cmd"] == "estop" and cmds[-1]["value"] == 0.0


def test_s15_a_belt_moving_at_start_latches_uncommanded() -> None:
    with daemon("--driver", "sim://motorized?rate_hz=20&initial_mph=1.0", "--mode", "reverse") as d:
        state = latched(d, "uncommanded", "S15")
        assert state["stop"]["since"] is not None
        d.until(lambda s: s["belt"] is not None and s["belt"]["speed_mph"] < 0.05)
