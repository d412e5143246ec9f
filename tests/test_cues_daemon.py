"""Cues and the idle timer through a real ``retrotread run`` and its real SSE stream."""

from __future__ import annotations

from typing import Any

import pytest
from daemon_proc import Daemon, EventTap, Frame, daemon

pytestmark = pytest.mark.slow


def tap_of(d: Daemon) -> EventTap:
    """The daemon's event stream, read with its token."""
    return EventTap(d.url, d.http.headers)


def cues(frames: list[Frame]) -> list[dict[str, Any]]:
    return [p for k, p in frames if k == "cue"]


def timers(frames: list[Frame]) -> list[dict[str, Any]]:
    return [p for k, p in frames if k == "timer"]


def test_an_sse_client_hears_go_and_set_done_during_a_short_session() -> None:
    with daemon("--driver", "none", "--mode", "deadmill") as d:
        tap = tap_of(d)
        try:
            resp = d.post("/api/v1/session", {"plan": "2x1s/1s,countdown=0s"})
            assert resp.status_code == 201, resp.text
            sid = resp.json()["id"]
            frames = tap.until(lambda f: any(c["kind"] == "session_done" for c in cues(f)))
        finally:
            tap.close()
    said = [(c["kind"], c["text"], c["set"]) for c in cues(frames)]
    assert said == [
        ("go", "Set 1 of 2. Push.", 1),
        ("set_done", "Set 1 done. Rest 1 second.", 1),
        ("countdown", "1", 2),
        ("go", "Set 2 of 2. Push.", 2),
        # A timer with no treadmill measured nothing: no distance is said (none is invented).
        ("session_done", "Session complete. 2 sets.", 2),
    ]
    assert all(c["session"] == sid and c["ts"].endswith("Z") for c in cues(frames))


def test_the_cues_settings_choose_what_a_session_says() -> None:
    env = {"RETROTREAD_CUES__ENABLED": '["go", "session_done"]'}
    with daemon("--driver", "none", "--mode", "deadmill", env=env) as d:
        tap = tap_of(d)
        try:
            assert d.post("/api/v1/session", {"plan": "2x1s/1s,countdown=0s"}).status_code == 201
            frames = tap.until(lambda f: any(c["kind"] == "session_done" for c in cues(f)))
        finally:
            tap.close()
    assert [c["kind"] for c in cues(frames)] == ["go", "go", "session_done"]


def test_idle_is_the_first_timer_a_reader_gets_at_start_up() -> None:
    with daemon("--driver", "none", "--mode", "deadmill") as d:
        tap = tap_of(d)
        try:
            frames = tap.until(lambda f: bool(timers(f)))
        finally:
            tap.close()
        assert d.state()["session"] is None
    first = timers(frames)[0]
    assert (first["phase"], first["set"], first["id"], first["ends_at"]) == ("idle", None, 0, None)


def test_a_finished_session_is_never_served_as_the_current_timer() -> None:
    with daemon("--driver", "none", "--mode", "deadmill") as d:
        watching = tap_of(d)
        try:
            assert d.post("/api/v1/session", {"plan": "1x1s,countdown=0s"}).status_code == 201
            seen = watching.until(lambda f: any(t["phase"] == "done" for t in timers(f)))
        finally:
            watching.close()
        assert timers(seen)[-1]["phase"] == "done"  # a reader who was there sees the end
        d.until(lambda s: s["session"] is None)
        later = tap_of(d)  # one who comes afterwards is told there is no session
        try:
            frames = later.until(lambda f: bool(timers(f)))
        finally:
            later.close()
        assert timers(frames)[0]["phase"] == "idle"
        assert d.state()["session"] is None


def test_a_pause_a_resume_and_a_latched_stop_are_heard_in_order() -> None:
    with daemon("--driver", "none", "--mode", "deadmill") as d:
        tap = tap_of(d)
        try:
            assert d.post("/api/v1/session", {"plan": "1x60s,countdown=0s"}).status_code == 201
            assert d.post("/api/v1/session/pause").status_code == 200
            assert d.post("/api/v1/session/resume").status_code == 200
            assert d.post("/api/v1/estop", {"reason": "fell"}).status_code < 300
            frames = tap.until(lambda f: any(c["kind"] == "stop" for c in cues(f)))
        finally:
            tap.close()
    heard = [(c["kind"], c["text"]) for c in cues(frames)]
    assert heard == [
        ("go", "Set 1 of 1. Push."),
        ("paused", "Paused."),
        ("resumed", "Resumed."),
        ("stop", "Emergency stop."),
    ]
    stop = cues(frames)[-1]
    assert (stop["reason"], stop["set"]) == ("estop", 1)  # the latch's reason, safety.md's spelling
