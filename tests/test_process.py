"""The daemon process: the stop before anything that can fail (S15), every process-ending signal
stops the belt first, and start-up refuses what it cannot trust.

Each test runs the real ``retrotread run`` on the simulated belt; the simulator's trace is what the
device heard, in order.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_proc import RETROTREAD, Daemon, daemon, run_cli
from helpers import fill_disk, free_port, trace_commands

from retrotread.daemon.auth import load_or_create_token, rotate_token

pytestmark = pytest.mark.slow


def start_belt(d: Daemon, mph: float = 1.0) -> None:
    assert d.post("/api/v1/belt/start", {"speed_mph": mph}).status_code == 202
    d.until(lambda s: s["belt"] is not None and s["belt"]["speed_mph"] > 0.9)  # None before the first reading


def run_daemon(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A daemon expected to refuse to start: it must exit by itself (no HTTP wait)."""
    return subprocess.run(
        [RETROTREAD, "run", *args, "--http", f"127.0.0.1:{free_port()}", "--mqtt", "none"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RETROTREAD_DAEMON__STATE_DIR": str(state_dir)},
        check=False,
    )


# Default action: end the process. SIGHUP is a closed terminal or ssh session; the others are a
# stray kill. (SIGTERM and SIGINT have their own test in test_faults.py.)
FATAL = [signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM]


@pytest.mark.parametrize("sig", FATAL, ids=lambda s: s.name)
def test_s15_every_fatal_signal_stops_the_belt_before_exit(tmp_path: Path, sig: signal.Signals) -> None:
    trace = tmp_path / "device.jsonl"
    with daemon("--driver", f"sim://motorized?rate_hz=20&trace={trace}", "--mode", "reverse") as d:
        start_belt(d)
        d.signal(sig)
        assert d.proc.wait(10) == 128 + sig, d.log()
        assert f"{sig.name}: stopping the belt" in d.log()
    cmds = trace_commands(trace)
    assert any(c["cmd"] == "start" for c in cmds)
    assert cmds[-1]["cmd"] == "estop" and cmds[-1]["value"] == 0.0


def test_s15_a_full_disk_does_not_keep_the_stop_from_going_out(tmp_path: Path, tmpfs: Callable[..., Path]) -> None:
    """A belt left running by a killed instance, and a state directory on a full disk: the stop goes
    out first, and the daemon runs without history (loudly) rather than crash-looping under systemd."""
    trace = tmp_path / "device.jsonl"
    state = tmpfs("256k")
    state.chmod(0o700)
    load_or_create_token(state)  # the token was made on an earlier day; the history was not
    fill_disk(state)
    env = {"RETROTREAD_DAEMON__STATE_DIR": str(state)}
    driver = f"sim://motorized?rate_hz=20&initial_mph=1.0&trace={trace}"
    with daemon("--driver", driver, "--mode", "reverse", env=env) as d:
        latched = d.until(lambda s: s["stop"]["latched"])
        assert latched["stop"]["reason"] == "uncommanded"
        assert "HISTORY OFF" in d.log()
        d.until(lambda s: s["belt"]["speed_mph"] < 0.05)
    cmds = trace_commands(trace)
    assert cmds and cmds[0]["cmd"] in ("stop", "estop") and cmds[0]["value"] == 0.0


def test_a_history_that_stops_writing_is_a_health_failure_not_a_dead_loop(
    tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    """Disk full mid-session: the session goes on (the timer ticks, the belt is watched), /healthz
    answers 503 naming the history, and it is whole again once there is room."""
    state = tmpfs("1m")
    state.chmod(0o700)
    env = {"RETROTREAD_DAEMON__STATE_DIR": str(state)}
    with daemon("--driver", "sim://manual?rate_hz=20", "--mode", "deadmill", env=env) as d:
        assert d.http.get("/healthz").status_code == 200
        filler = fill_disk(state)
        assert d.post("/api/v1/session", {"plan": "3x1s/1s,countdown=0s"}).status_code == 201
        d.until(lambda s: d.http.get("/healthz").status_code == 503)
        health = d.http.get("/healthz").json()
        assert health["ok"] is False and any("history" in p for p in health["problems"])
        done = d.until(lambda s: s["session"] is None, within=30)  # the timer ran through the fault
        assert done["connected"]
        filler.unlink()
        d.until(lambda s: d.http.get("/healthz").status_code == 200, within=30)
        [record] = d.http.get("/api/v1/history").json()
        assert record["outcome"] == "completed" and len(record["sets"]) == 3  # spooled, then written


def test_s15_an_unsafe_state_directory_stops_start_up_after_the_stop(tmp_path: Path) -> None:
    trace = tmp_path / "device.jsonl"
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)  # anyone could plant a token here
    out = run_daemon(state, "--driver", f"sim://motorized?trace={trace}&initial_mph=1.0", "--mode", "reverse")
    assert out.returncode == 1
    assert "writable by others" in out.stderr and "chmod go-w" in out.stderr
    assert "Traceback" not in out.stderr
    cmds = trace_commands(trace)
    assert cmds and cmds[0]["cmd"] in ("stop", "estop")  # the stop went out before the refusal
    assert not (state / "token").exists()


def test_a_state_directory_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the directory to another user")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    out = run_daemon(state, "--driver", "sim://motorized", "--mode", "reverse")
    assert out.returncode == 1
    assert "owned by uid 65534" in out.stderr and "chown" in out.stderr


def test_run_without_a_driver_is_a_usage_error_naming_the_option_and_the_key(tmp_path: Path) -> None:
    out = run_daemon(tmp_path)
    assert out.returncode == 2
    assert "--driver" in out.stderr and "daemon.driver" in out.stderr and "retrotread demo" in out.stderr
    assert "Traceback" not in out.stderr


def test_token_rotation_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (state / "token").symlink_to(victim)
    for name in ("token.new", ".token.new"):
        (state / name).symlink_to(victim)
    with pytest.raises(ValueError, match="not a plain file"):
        load_or_create_token(state)  # the daemon refuses a token that is a link
    token = rotate_token(state)  # rotating replaces the link itself
    assert victim.read_text() == "precious\n"
    assert not (state / "token").is_symlink()
    assert (state / "token").read_text().strip() == token
    assert (state / "token").stat().st_mode & 0o777 == 0o600


def test_estop_with_no_daemon_says_the_belt_was_not_stopped() -> None:
    out = run_cli("estop", "--url", "http://127.0.0.1:9")
    assert out.returncode == 1
    assert "NOT" in out.stderr and "stopped" in out.stderr
    assert "safety key" in out.stderr
