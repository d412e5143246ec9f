"""The command line, run as a user runs it: real processes, real HTTP."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from daemon_proc import daemon, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep each test's history and token out of the user's own state directory."""
    monkeypatch.setenv("RETROTREAD_DAEMON__STATE_DIR", str(tmp_path / "state"))


def test_deadmill_standalone_times_sets_and_prints_a_summary() -> None:
    out = run_cli("deadmill", "--driver", "sim://manual?rate_hz=20", "--plan", "2x2s/1s,countdown=0s", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["outcome"] == "completed"
    assert [s["set"] for s in record["sets"]] == [1, 2]
    for s in record["sets"]:
        assert s["work_s"] == pytest.approx(2.0)  # from monotonic deadlines, not summed sleeps
        assert s["distance_m"] > 0
        assert 0 < s["avg_mph"] <= s["max_mph"]
    started = [s["started_mono"] for s in record["sets"]]
    assert started[1] - started[0] == pytest.approx(3.0)  # 2 s work + 1 s rest, on the plan


def test_deadmill_view_says_the_sessions_last_cue_before_its_summary() -> None:
    # The session's end and its last cue are published together; the view must not leave before it.
    out = run_cli("deadmill", "--driver", "sim://manual?rate_hz=20", "--plan", "1x2s/0s,countdown=0s", "--plain")
    assert out.returncode == 0, out.stderr
    assert "cue: Set 1 of 1. Push." in out.stderr
    assert "cue: Session complete." in out.stderr


def test_deadmill_with_no_driver_is_a_timer_that_invents_nothing() -> None:
    out = run_cli("deadmill", "--plan", "1x1s,countdown=0s", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["driver"] == "none://"  # a simulator runs only when it is named
    [only] = record["sets"]
    assert only["outcome"] == "completed" and only["work_s"] == pytest.approx(1.0)
    assert only["distance_m"] is None and only["avg_mph"] is None and only["max_mph"] is None


def test_deadmill_table_shows_each_set() -> None:
    out = run_cli("deadmill", "--plan", "1x1s,countdown=0s")
    assert out.returncode == 0, out.stderr
    for column in ("work s", "distance m", "avg mph", "max mph", "completed"):
        assert column in out.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["deadmill", "--plan", "3xlots"], "plan"),
        (["run", "--driver", "nope://x", "--http", "127.0.0.1:1"], "unknown driver scheme"),
        (["run", "--driver", "sim://motorized?fault=melt@3"], "unknown kind"),
        (["status", "--url", "http://127.0.0.1:9"], "cannot reach the daemon"),
    ],
)
def test_errors_are_one_line_and_exit_1(args: list[str], needle: str) -> None:
    out = run_cli(*args)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_usage_errors_exit_2() -> None:
    assert run_cli("session", "dance").returncode == 2
    assert run_cli().returncode == 2


def test_bad_config_value_names_the_key(tmp_path: pytest.TempPathFactory) -> None:
    cfg = tmp_path / "bad.toml"  # type: ignore[operator]
    cfg.write_text("[safety]\nenvelope_max_mph = 1.5\n")
    out = run_cli("run", "--config", str(cfg))
    assert out.returncode == 1
    assert "safety.envelope_max_mph" in out.stderr and "1.5" in out.stderr and "never widened" in out.stderr
    out = run_cli("run", env={"RETROTREAD_HTTP__LISTEN": "nowhere"})
    assert out.returncode == 1 and "http.listen" in out.stderr


def test_client_commands_drive_a_running_daemon() -> None:
    with daemon("--driver", "sim://motorized?rate_hz=20", "--mode", "reverse") as d:
        url = ["--url", d.url]
        out = run_cli("session", "start", "3x60s/60s", *url)  # this test's own state dir: no token there
        assert out.returncode == 1 and "401" in out.stderr
        os.environ.update(d.env)  # undone by the monkeypatch fixture
        out = run_cli("status", "--json", *url)
        assert out.returncode == 0 and json.loads(out.stdout)["mode"] == "reverse"
        out = run_cli("session", "start", "3x60s/60s", *url)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["plan"] == "3x60s/60s"
        out = run_cli("session", "pause", *url)
        assert out.returncode == 0 and json.loads(out.stdout)["paused"] is True
        left = json.loads(out.stdout)["remaining_s"]
        out = run_cli("session", "extend", "1m", *url)
        assert out.returncode == 0 and json.loads(out.stdout)["remaining_s"] == left + 60
        out = run_cli("session", "extend", "a while", *url)
        assert out.returncode == 1 and "a while" in out.stderr  # refused in the terminal
        out = run_cli("estop", *url)
        assert out.returncode == 0 and "STOP" in out.stdout
        assert d.state()["stop"]["latched"]
        out = run_cli("session", "start", "deadmill", *url)
        assert out.returncode == 1 and "S6" in out.stderr
        d.until(lambda s: not s["belt"]["moving"])
        out = run_cli("status", *url)
        assert "LATCHED" in out.stdout


def test_decode_reads_stdin_one_json_line_per_frame() -> None:
    out = run_cli("decode", "csafe", "-", input_text="f1 25 03 78 00 12 4c f2\nzz\n")
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    assert "error" in json.loads(lines[1])
    assert out.returncode == 1
