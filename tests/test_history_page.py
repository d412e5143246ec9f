"""The history page (api/static/history.html) in headless Chromium, over real history data.

The app's ``/api/v1/progress`` route is not wired yet, so the test serves its own FastAPI app under
real uvicorn: the real ``api/static`` directory, the history reads and the progress body over a
real ``SqliteHistory`` filled with sessions, and the daemon's own CSP (``default-src 'self'``), so
an inline script or style would show up as a page error. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from browser import chromium, chromium_path
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.staticfiles import StaticFiles

from retrotread.api.http_guard import CSP
from retrotread.daemon.history import SqliteHistory, TracePoint
from retrotread.daemon.progress import Progress, progress
from retrotread.daemon.snapshot import SessionRecord, SetResult, iso

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "api" / "static"
ARTIFACTS = ROOT / "test-artifacts"
MPS = 0.44704


def _session(store: SqliteHistory, when: datetime, plan: str, mode: str, driver: str, dists: list[float]) -> int:
    t0 = when.timestamp()
    sid = store.begin(plan, mode, driver, len(dists), iso(t0))
    t = 5.0
    for k, d in enumerate(dists):
        speed = d / 60 / MPS if d else None
        for i in range(61):
            dist = d * i / 60 if d else None
            store.trace(sid, TracePoint(t_s=t + i, ts=t0 + t + i, speed_mph=speed, distance_m=dist))
        store.record_set(
            sid,
            SetResult(
                set=k + 1,
                started_at=iso(t0 + t),
                ended_at=iso(t0 + t + 60),
                started_mono=t,
                ended_mono=t + 60,
                work_s=60.0,
                distance_m=d,
                avg_mph=speed or 0.0,
                max_mph=(speed or 0.0) * 1.1,
                outcome="completed",
            ),
        )
        t += 120
    store.end(sid, "completed", iso(t0 + t))
    return sid


def fill(store: SqliteHistory, today: date) -> None:
    start = datetime(today.year, today.month, today.day, 18, tzinfo=UTC) - timedelta(days=40)
    for day in range(0, 40, 3):
        when = start + timedelta(days=day)
        first = 30.0 + day * 0.4
        dists = [first, first * 0.9, first * (0.8 + day / 400)]
        _session(store, when, "deadmill", "deadmill", "csafe:///dev/ttyUSB0", dists)
    for day in range(1, 40, 2):
        _session(store, start + timedelta(days=day, hours=1), "phase1", "reverse", "csafe:///dev/ttyUSB0", [60.0, 58.0])
    _session(store, start + timedelta(days=39, hours=2), "deadmill", "deadmill", "none", [0.0, 0.0, 0.0])
    _session(store, start + timedelta(days=39, hours=3), "deadmill", "deadmill", "sim://manual", [40.0, 38.0, 35.0])


def app_over(store: SqliteHistory, today: date) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def csp(request: Request, call_next: Any) -> Response:
        resp: Response = await call_next(request)
        resp.headers["content-security-policy"] = CSP
        return resp

    @app.get("/api/v1/history", response_model=list[SessionRecord])
    async def history(limit: int = 20) -> list[SessionRecord]:
        return store.recent(limit)

    @app.get("/api/v1/history/{session_id}", response_model=SessionRecord)
    async def history_one(session_id: int) -> SessionRecord:
        rec = store.get(session_id)
        if rec is None:
            raise HTTPException(404, f"no session {session_id}")
        return rec

    @app.get("/api/v1/progress", response_model=Progress)
    async def progress_view() -> Progress:
        return progress(store.recent(1000), today)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    if chromium_path() is None:
        pytest.skip("Debian's chromium is not installed")
    today = date(2026, 3, 20)
    store = SqliteHistory.open(tmp_path / "history.sqlite3")
    fill(store, today)
    assert store.flush(10)
    try:
        with served(app_over(store, today)) as base:
            yield base
    finally:
        store.close()


@pytest.mark.parametrize(("width", "shot"), [(360, "history"), (900, "history-wide")])
def test_history_page_shows_position_strength_weeks_and_sessions(site: str, width: int, shot: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as page:
        page.viewport(width, 800)
        page.goto(site + "/static/history.html")
        try:
            page.wait_for("document.body.dataset.ready === '1'")
            assert page.text("#where").startswith("Week 6 of the program, phase 3")
            assert page.text("#suggested") == "phase3-intervals"
            # Two uPlot charts were drawn (strength, weeks), each a canvas.
            assert page.evaluate("document.querySelectorAll('.uplot canvas').length") == 2
            assert "fade" in (page.text("#strength-latest") or "")
            assert "simulated" in (page.text("#strength-latest") or "")  # the newest measured session is the sim's
            rows = page.evaluate("[...document.querySelectorAll('#sessions tbody tr')].map(r => r.textContent)")
            assert any("timer only" in r for r in rows)
            assert any("(simulated)" in r for r in rows)
            verdicts = page.evaluate("[...document.querySelectorAll('#weeks tbody tr')].map(r => r.textContent)")
            assert any("phase1" in v and "3-4" in v for v in verdicts)
            page.click("#sessions tbody tr")  # the newest: the simulator's deadmill session
            page.wait_for("!document.getElementById('detail').hidden")
            assert "simulated (sim://manual)" in (page.text("#detail-h") or "")
            assert page.evaluate("document.querySelectorAll('#sets tbody tr').length") == 3
            page.screenshot(ARTIFACTS / f"{shot}.png")
        except BaseException:
            page.screenshot(ARTIFACTS / f"{shot}-failure.png")
            raise
        assert page.errors == []
