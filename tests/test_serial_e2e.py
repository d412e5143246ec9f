"""Issue 4's acceptance points: the real daemon on the serial drivers, against `retrotread sim-device`.

Two processes per test, as a user would run them: ``retrotread sim-device csafe|pulse --link TMP/...``
and ``retrotread run --driver csafe://TMP/...``, driven over HTTP. Readiness is the processes'
banner lines; every other wait polls the API with a deadline (a condition, never a fixed sleep).
The simulated console writes what it received to ``RETROTREAD_SIM_TRACE``, which is how a test sees
the first frame after a reconnect; SIGUSR1 to ``sim-device`` strikes its next fault at once.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import pytest
from helpers import free_port, poll_until

from retrotread.daemon.auth import read_token
from retrotread.sims.serial_serve import TRACE_ENV

pytestmark = pytest.mark.slow

RETROTREAD = Path(sys.executable).with_name("retrotread")
STATE = "state"
T = TypeVar("T")


class Proc:
    """A child process: stdout read line by line with a deadline, stderr kept in a file."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(RETROTREAD), *args], stdout=subprocess.PIPE, stderr=self._log, env=env, text=True
        )

    def line(self, within: float = 20.0) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], within)
        if not ready:
            raise AssertionError(f"{self.name} printed nothing within {within} s:\n{self.tail()}")
        text = self.proc.stdout.readline()
        if not text:
            raise AssertionError(f"{self.name} exited ({self.proc.poll()}):\n{self.tail()}")
        return text

    def tail(self) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start ``retrotread`` subcommands; every one is stopped (SIGTERM, then kill) at teardown."""
    procs: list[Proc] = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RETROTREAD_")}
    base_env["XDG_STATE_HOME"] = str(tmp_path / STATE)

    def start(name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, list(args), tmp_path, {**base_env, **(env or {})})
        procs.append(proc)
        return proc

    yield start
    for proc in reversed(procs):
        proc.stop()


def daemon(spawn: Callable[..., Proc], driver_url: str, mode: str, state_home: Path) -> httpx.Client:
    """``retrotread run`` on ``driver_url``, answering /healthz; a client for it (use it in ``with``)."""
    port = free_port()
    proc = spawn("daemon", "run", "--driver", driver_url, "--mode", mode, "--http", f"127.0.0.1:{port}")
    banner = proc.line()
    assert driver_url in banner, banner
    base = f"http://127.0.0.1:{port}"
    poll_until(lambda: _health(base), bool, what="/healthz")
    # The daemon made its API token in its state directory on start (XDG_STATE_HOME/retrotread).
    token = read_token(state_home / "retrotread")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base, timeout=5.0, headers=headers)


def _health(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def state_of(client: httpx.Client) -> Callable[[], dict[str, Any]]:
    return lambda: dict(client.get("/api/v1/state").json())


def speed(s: dict[str, Any]) -> float:
    belt = s.get("belt") or {}
    return float(belt.get("speed_mph", 0.0))


def start_when_allowed(client: httpx.Client, mph: float) -> httpx.Response:
    """POST start, waiting out S4 (the belt must read 0 for 1 s after the daemon connects)."""
    return poll_until(
        lambda: client.post("/api/v1/belt/start", json={"speed_mph": mph}),
        lambda r: not (r.status_code == 409 and r.json().get("rule") == "S4"),
        what="start past S4",
    )


def test_csafe_daemon_S1_refusals_S5_estop_latches_S6_until_reset(tmp_path: Path, spawn: Callable[..., Proc]) -> None:
    link = tmp_path / "ttyTREAD"
    device = spawn("sim-device", "sim-device", "csafe", "--link", str(link))
    assert str(link) in device.line()
    client = daemon(spawn, f"csafe://{link}", "reverse", tmp_path / STATE)
    with client:
        state = state_of(client)
        connected = poll_until(
            state, lambda s: s["connected"] and s["belt"] is not None, what="connected with a sample"
        )
        # The console identified itself at connect (GetVersion): the machine's own data, issue 14.
        assert connected["device"] is not None and connected["device"]["model"]

        started = start_when_allowed(client, 1.0)
        assert started.status_code == 202, started.text
        poll_until(state, lambda s: speed(s) > 0.5, what="the belt moving")

        for body in ({"speed_mph": 1.5}, {"speed_mph": 0.5}):
            refused = client.post("/api/v1/belt/start", json=body)
            assert refused.status_code == 409 and refused.json()["rule"] == "S1", refused.text
        nan = client.post(
            "/api/v1/belt/speed", content=b'{"speed_mph": NaN}', headers={"content-type": "application/json"}
        )
        assert nan.status_code in (409, 422) and nan.json()["rule"] == "S1", nan.text
        fast = client.post("/api/v1/belt/start", json={"speed_mph": "fast"})
        assert fast.status_code == 422 and fast.json()["rule"] == "S1", fast.text
        assert {"error", "rule"} <= set(fast.json())

        assert client.post("/api/v1/estop", json={"reason": "e2e"}).status_code == 202
        latched = state()
        assert latched["stop"]["latched"] and latched["stop"]["rule"] == "S5"
        again = client.post("/api/v1/belt/start", json={"speed_mph": 1.0})
        assert again.status_code == 409 and again.json()["rule"] == "S6", again.text
        early = client.post("/api/v1/estop/reset")
        assert early.status_code == 409 and early.json()["rule"] == "S6", early.text  # moving, or moved < 2 s ago

        poll_until(state, lambda s: speed(s) == 0, what="the belt at 0")
        reset = poll_until(lambda: client.post("/api/v1/estop/reset"), lambda r: r.status_code == 200, within=20)
        assert reset.json()["ok"]
        after = state()
        assert not after["stop"]["latched"]
        assert speed(after) == 0 and after["target_mph"] is None  # a reset never starts the belt
        restarted = start_when_allowed(client, 1.0)
        assert restarted.status_code == 202, restarted.text


def test_csafe_daemon_S9_unplug_mid_run_latches_and_the_first_frame_back_is_a_stop(
    tmp_path: Path, spawn: Callable[..., Proc]
) -> None:
    link = tmp_path / "ttyTREAD"
    trace = tmp_path / "console.jsonl"
    device = spawn(
        "sim-device", "sim-device", "csafe", "--link", str(link), "--fault", "unplug@9999", env={TRACE_ENV: str(trace)}
    )
    assert "unplug@9999" in device.line()
    client = daemon(spawn, f"csafe://{link}", "reverse", tmp_path / STATE)
    with client:
        state = state_of(client)
        poll_until(state, lambda s: s["connected"] and s["belt"] is not None, what="connected with a sample")
        assert start_when_allowed(client, 1.0).status_code == 202
        poll_until(state, lambda s: speed(s) > 0.5, what="the belt moving")

        device.proc.send_signal(signal.SIGUSR1)  # the cable comes out now, mid-run
        lost = poll_until(state, lambda s: s["stop"]["latched"], within=5, what="the S9 latch")
        assert lost["stop"]["rule"] == "S9" and lost["stop"]["reason"] == "link-lost"
        back = poll_until(state, lambda s: s["connected"], within=20, what="the reconnect")
        assert back["stop"]["latched"] and back["stop"]["rule"] == "S9"  # a reconnect never clears the latch
        poll_until(state, lambda s: speed(s) < 0.05, what="the belt stopped after the reconnect")

    records = [json.loads(line) for line in trace.read_text().splitlines()]
    events = [r["event"] for r in records]
    replugged = events.index("replugged")
    assert events.index("unplugged") < replugged
    frames_back = [r for r in records[replugged + 1 :] if r["event"] == "frame"]
    assert frames_back, "the daemon wrote nothing after the reconnect"
    assert frames_back[0]["stop"] is True, frames_back[0]  # S9: the first command after a reconnect
    assert frames_back[0]["commands"] == ["SetSpeed", "GoFinished"]
    before = [r for r in records[:replugged] if r["event"] == "frame" and r["speed_mph"]]
    assert max(r["speed_mph"] for r in before) <= 1.2  # S2: nothing above the envelope on the wire


def test_pulse_daemon_deadmill_session_records_two_sets_with_distance(
    tmp_path: Path, spawn: Callable[..., Proc]
) -> None:
    link = tmp_path / "ttyPULSE"
    device = spawn("sim-device", "sim-device", "pulse", "--link", str(link))
    assert str(link) in device.line()
    client = daemon(spawn, f"pulse://{link}?m_per_pulse=0.25", "deadmill", tmp_path / STATE)
    with client:
        state = state_of(client)
        poll_until(state, lambda s: s["connected"] and speed(s) > 0.5, what="the pushed belt measured")
        created = client.post("/api/v1/session", json={"plan": "2x3s/2s,countdown=0s"})
        assert created.status_code == 201, created.text
        history = poll_until(
            lambda: client.get("/api/v1/history").json(),
            lambda h: bool(h) and h[0]["outcome"] == "completed",
            within=30,
            what="the session completed",
        )
    sets = history[0]["sets"]
    assert [s["set"] for s in sets] == [1, 2]
    assert all(s["outcome"] == "completed" and s["distance_m"] > 0 for s in sets), sets
    assert history[0]["driver"].startswith("pulse://")
