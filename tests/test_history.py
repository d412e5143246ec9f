"""History in SQLite, the API token, and what survives a SIGKILL."""

from __future__ import annotations

import signal
import stat
import time
from pathlib import Path

import httpx
import pytest
from daemon_proc import daemon, run_cli
from helpers import a_set

from retrotread.daemon.auth import load_or_create_token, read_token, rotate_token
from retrotread.daemon.history import SqliteHistory
from retrotread.daemon.snapshot import Event


def test_sessions_sets_and_events_round_trip(tmp_path: Path) -> None:
    store = SqliteHistory.open(tmp_path / "h.sqlite3")
    sid = store.begin("deadmill", "deadmill", "sim://manual", 3, "2026-11-21T15:00:00.000Z")
    store.checkpoint(sid, a_set(1, "interrupted", 30.0))
    store.record_set(sid, a_set(1))
    store.record_event(sid, Event(kind="set_completed", set=1, ts="2026-11-21T15:01:00.000Z", session=sid))
    store.end(sid, "completed", "2026-11-21T15:05:00.000Z")
    record = store.get(sid)
    assert record is not None
    assert record.outcome == "completed" and record.sets == (a_set(1),)
    assert record.events[0].kind == "set_completed"
    assert store.recent(5)[0].id == sid
    assert store.weekly() == [("2026-W47", "deadmill", 1)]
    store.close()


def test_a_session_a_crash_left_open_is_marked_interrupted(tmp_path: Path) -> None:
    store = SqliteHistory.open(tmp_path / "h.sqlite3")
    sid = store.begin("deadmill", "deadmill", "sim://manual", 3, "2026-11-21T15:00:00.000Z")
    store.record_set(sid, a_set(1))
    store.checkpoint(sid, a_set(2, "interrupted", 20.0))
    store.close()  # no end(): as if the process died
    again = SqliteHistory.open(tmp_path / "h.sqlite3")
    record = again.get(sid)
    assert record is not None and record.outcome == "interrupted"
    assert [s.outcome for s in record.sets] == ["completed", "interrupted"]
    again.close()


def test_token_file_is_owner_only_and_rotates(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path)
    path = tmp_path / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(tmp_path) == token == read_token(tmp_path)
    path.chmod(0o644)
    load_or_create_token(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert rotate_token(tmp_path) != token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.slow
def test_s16_running_daemon_needs_the_token_for_control_but_not_for_the_stop() -> None:
    with daemon("--driver", "sim://motorized?rate_hz=20") as d:
        state_dir = Path(d.env["RETROTREAD_DAEMON__STATE_DIR"])
        assert stat.S_IMODE((state_dir / "token").stat().st_mode) == 0o600
        with httpx.Client(base_url=d.url) as anonymous:
            assert anonymous.post("/api/v1/belt/start", json={"speed_mph": 1.0}).status_code == 401
            assert anonymous.post("/api/v1/session", json={"plan": "deadmill"}).status_code == 401
            assert anonymous.post("/api/v1/estop").status_code == 202
            assert anonymous.get("/api/v1/state").status_code == 200  # reads are free on loopback
        out = run_cli("token", env=d.env)
        assert out.stdout.strip() == (state_dir / "token").read_text().strip()


@pytest.mark.slow
def test_sigkill_mid_set_loses_at_most_the_last_seconds_of_that_set(tmp_path: Path) -> None:
    env = {"RETROTREAD_DAEMON__STATE_DIR": str(tmp_path)}
    with daemon("--driver", "sim://manual?rate_hz=20", "--mode", "deadmill", env=env) as d:
        resp = d.post("/api/v1/session", {"plan": "2x6s/1s,countdown=0s"})
        assert resp.status_code == 201
        sid = resp.json()["id"]
        d.until(
            lambda s: (
                s["session"]
                and s["session"]["set"] == 2
                and s["session"]["phase"] == "work"
                and s["session"]["elapsed_s"] >= 4.0
            )
        )
        killed_at = time.monotonic()  # CLOCK_MONOTONIC is the same clock in every process
        d.signal(signal.SIGKILL)
        d.proc.wait(10)
    with daemon("--driver", "sim://manual?rate_hz=20", "--mode", "deadmill", env=env) as d:
        record = d.http.get(f"/api/v1/history/{sid}").json()
    assert record["outcome"] == "interrupted"
    first, second = record["sets"]
    assert first["outcome"] == "completed" and first["work_s"] == pytest.approx(6.0)
    assert second["outcome"] == "interrupted"
    assert second["ended_mono"] >= killed_at - 5.0
    assert second["work_s"] >= 4.0 - 5.0 and second["distance_m"] > 0
