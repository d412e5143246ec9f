"""Cues and the idle timer through a real ``retrotread run`` and its real SSE stream."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from daemon_proc import Daemon, daemon

pytestmark = pytest.mark.slow

Frame = tuple[str, dict[str, Any]]


class SseTap:
    """Reads ``GET /api/v1/events`` on a thread and keeps every frame as (event kind, payload)."""

    def __init__(self, d: Daemon) -> None:
        self.frames: list[Frame] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._client = httpx.Client(base_url=d.url, headers=dict(d.http.headers), timeout=httpx.Timeout(5, read=None))
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("event stream did not open")

    def _run(self) -> None:
        kind = ""
        try:
            with self._client.stream("GET", "/api/v1/events") as resp:
                self._ready.set()
                for line in resp.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("event:"):
                        kind = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        with self._cond:
                            self.frames.append((kind, json.loads(line.split(":", 1)[1])))
                            self._cond.notify_all()
        except httpx.HTTPError:
            return
        finally:
            self._ready.set()

    def wait(self, predicate: Callable[[list[Frame]], bool], within: float = 20.0) -> list[Frame]:
        """Until ``predicate(frames so far)`` holds: a condition with a deadline."""
        deadline = time.monotonic() + within
        with self._cond:
            while not predicate(self.frames):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not seen within {within} s; got {self.frames}")
                self._cond.wait(left)
            return list(self.frames)

    def close(self) -> None:
        self._stop.set()
        self._client.close()


def cues(frames: list[Frame]) -> list[dict[str, Any]]:
    return [p for k, p in frames if k == "cue"]


def timers(frames: list[Frame]) -> list[dict[str, Any]]:
    return [p for k, p in frames if k == "timer"]


def test_an_sse_client_hears_go_and_set_done_during_a_short_session() -> None:
    with daemon("--driver", "none", "--mode", "deadmill") as d:
        tap = SseTap(d)
        try:
            resp = d.post("/api/v1/session", {"plan": "2x1s/1s,countdown=0s"})
            assert resp.status_code == 201, resp.text
            sid = resp.json()["id"]
            frames = tap.wait(lambda f: any(c["kind"] == "session_done" for c in cues(f)))
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
        tap = SseTap(d)
        try:
            assert d.post("/api/v1/session", {"plan": "2x1s/1s,countdown=0s"}).status_code == 201
            frames = tap.wait(lambda f: any(c["kind"] == "session_done" for c in cues(f)))
        finally:
            tap.close()
    assert [c["kind"] for c in cues(frames)] == ["go", "go", "session_done"]


def test_idle_is_the_first_timer_a_reader_gets_at_start_up() -> None:
    with daemon("--driver", "none", "--mode", "deadmill") as d:
        tap = SseTap(d)
        try:
            frames = tap.wait(lambda f: bool(timers(f)))
        finally:
            tap.close()
        assert d.state()["session"] is None
    first = timers(frames)[0]
    assert (first["phase"], first["set"], first["id"], first["ends_at"]) == ("idle", None, 0, None)


def test_a_finished_session_is_never_served_as_the_current_timer() -> None:
    with daemon("--driver", "none", "--mode", "deadmill") as d:
        watching = SseTap(d)
        try:
            assert d.post("/api/v1/session", {"plan": "1x1s,countdown=0s"}).status_code == 201
            seen = watching.wait(lambda f: any(t["phase"] == "done" for t in timers(f)))
        finally:
            watching.close()
        assert timers(seen)[-1]["phase"] == "done"  # a reader who was there sees the end
        d.until(lambda s: s["session"] is None)
        later = SseTap(d)  # one who comes afterwards is told there is no session
        try:
            frames = later.wait(lambda f: bool(timers(f)))
        finally:
            later.close()
        assert timers(frames)[0]["phase"] == "idle"
        assert d.state()["session"] is None


def test_a_pause_a_resume_and_a_latched_stop_are_heard_in_order() -> None:
    with daemon("--driver", "none", "--mode", "deadmill") as d:
        tap = SseTap(d)
        try:
            assert d.post("/api/v1/session", {"plan": "1x60s,countdown=0s"}).status_code == 201
            assert d.post("/api/v1/session/pause").status_code == 200
            assert d.post("/api/v1/session/resume").status_code == 200
            assert d.post("/api/v1/estop", {"reason": "fell"}).status_code < 300
            frames = tap.wait(lambda f: any(c["kind"] == "stop" for c in cues(f)))
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
