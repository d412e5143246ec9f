"""The HTTP face: the real FastAPI app with its lifespan, on the simulated belts.

Non-streaming calls go through httpx's ASGI transport; the event stream goes through a real
uvicorn server on a free port (an ASGI transport buffers whole responses). Waiting is always on
the controller's hub, with a timeout, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from helpers import wait_until

from retrotread.api.app import create_app
from retrotread.daemon.controller import Controller
from retrotread.daemon.hub import Subscription
from retrotread.drivers import open_driver
from retrotread.safety import Mode, SafetyConfig

SESSION_KEYS = {"id", "plan", "phase", "set", "sets", "remaining_s", "elapsed_s", "ends_at"}
STATE_KEYS = {"id", "mode", "driver", "connected", "belt", "target_mph", "envelope_mph", "stop", "session", "ts", "seq"}


@dataclass
class Rig:
    client: httpx.AsyncClient
    controller: Controller
    updates: Subscription

    async def until(self, predicate: Callable[[], Any], within: float = 15.0) -> Any:
        return await wait_until(predicate, self.updates, within)

    def speed(self) -> float:
        s = self.controller.snapshot().belt
        return s.speed_mph if s else 0.0


def factory(url: str, mode: Mode) -> Callable[[], Controller]:
    return lambda: Controller(open_driver(url), treadmill_id="test", safety=SafetyConfig(mode=mode))


@contextlib.asynccontextmanager
async def rig(
    url: str = "sim://motorized?rate_hz=50", mode: Mode = Mode.REVERSE, token: str | None = None
) -> AsyncIterator[Rig]:
    app = create_app(factory(url, mode), token=token)
    async with app.router.lifespan_context(app):
        controller: Controller = app.state.controller
        sub = controller.hub.subscribe(maxsize=10_000)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield Rig(client, controller, sub)


async def test_state_snapshot_has_the_contract_fields() -> None:
    async with rig() as r:
        resp = await r.client.get("/api/v1/state")
        assert resp.status_code == 200
        body = resp.json()
        assert set(body) >= STATE_KEYS
        assert body["envelope_mph"] == [0.8, 1.2]
        assert body["stop"] == {"latched": False, "reason": None, "rule": None, "since": None}


async def test_s1_s5_s6_reverse_mode_over_http() -> None:
    """Acceptance 3 of the walking skeleton, in process."""
    top_seen = 0.0

    def watch_max() -> float:
        nonlocal top_seen
        top_seen = max(top_seen, r.speed())
        return top_seen

    async with rig() as r:
        still = r.controller.supervisor
        await r.until(lambda: still.last_motion_age(r.controller.clock()) is None and r.controller.samples_seen > 60)
        resp = await r.client.post("/api/v1/belt/start", json={"speed_mph": 1.0})
        assert resp.status_code == 202, resp.text
        await r.until(lambda: watch_max() > 0.95)

        for bad in ("1.5", "0.5", "NaN", "Infinity", "-1"):  # raw JSON: httpx's json= refuses NaN
            resp = await r.client.post(
                "/api/v1/belt/speed",
                content=f'{{"speed_mph": {bad}}}'.encode(),
                headers={"content-type": "application/json"},
            )
            assert resp.status_code == 409, resp.text
            assert resp.json()["rule"] == "S1"
        resp = await r.client.post(
            "/api/v1/belt/speed", content=b'{"speed_mph": "fast"}', headers={"content-type": "application/json"}
        )
        assert resp.status_code == 422
        assert resp.json()["rule"] == "S1"
        resp = await r.client.post("/api/v1/belt/start", json={"speed_mph": 1.5})
        assert resp.status_code == 409 and resp.json()["rule"] == "S1"

        resp = await r.client.post("/api/v1/estop")
        assert resp.status_code == 202
        assert r.controller.snapshot().stop.latched
        await r.until(lambda: r.speed() < 0.01)
        assert watch_max() <= 1.2

        resp = await r.client.post("/api/v1/belt/start", json={"speed_mph": 1.0})
        assert resp.status_code == 409 and resp.json()["rule"] == "S6"
        resp = await r.client.post("/api/v1/estop/reset")
        assert resp.status_code == 409 and resp.json()["rule"] == "S6"
        await r.until(lambda: (still.last_motion_age(r.controller.clock()) or 0) > 2.1)
        resp = await r.client.post("/api/v1/estop/reset")
        assert resp.status_code == 200, resp.text
        assert r.speed() == 0.0  # a reset never starts the belt
        assert not r.controller.snapshot().stop.latched
        resp = await r.client.post("/api/v1/belt/start", json={"speed_mph": 1.0})
        assert resp.status_code == 202


async def test_s13_deadmill_refuses_drive_and_times_a_session_from_the_belt() -> None:
    """Acceptance 4: start and speed refused naming S13; the session measures the pushed belt."""
    async with rig("sim://manual?rate_hz=50&push=1.5", Mode.DEADMILL) as r:
        for path in ("/api/v1/belt/start", "/api/v1/belt/speed"):
            resp = await r.client.post(path, json={"speed_mph": 1.0})
            assert resp.status_code == 409
            assert resp.json()["rule"] == "S13"
        resp = await r.client.post("/api/v1/session", json={"sets": 2, "work_s": 1, "rest_s": 1, "countdown_s": 0})
        assert resp.status_code == 201, resp.text
        sid = resp.json()["id"]
        await r.until(lambda: r.controller.session is None)
        resp = await r.client.get(f"/api/v1/history/{sid}")
        record = resp.json()
        assert record["outcome"] == "completed"
        assert [s["set"] for s in record["sets"]] == [1, 2]
        for s in record["sets"]:
            assert s["outcome"] == "completed"
            assert s["work_s"] == pytest.approx(1.0)  # boundaries are the plan's deadlines
            assert s["distance_m"] > 0.3
            assert 0.5 < s["avg_mph"] <= s["max_mph"] < 2.0  # set 1 includes the push from standstill


async def test_malformed_bodies_are_422_with_a_message() -> None:
    async with rig() as r:
        for body in (b"{", b"[]", b'{"speed_mph": 1.0, "extra": 1}', b'{"speed": 1.0}'):
            resp = await r.client.post("/api/v1/belt/start", content=body, headers={"content-type": "application/json"})
            assert resp.status_code == 422, body
            assert resp.json()["error"]
        resp = await r.client.post("/api/v1/session", json={"plan": "3xfast"})
        assert resp.status_code == 422 and "plan" in resp.json()["error"]


async def test_session_actions_and_refusals() -> None:
    async with rig("sim://manual?rate_hz=50", Mode.DEADMILL) as r:
        resp = await r.client.post("/api/v1/session/pause")
        assert resp.status_code == 409 and "no session" in resp.json()["error"]
        resp = await r.client.post("/api/v1/session", json={"plan": "deadmill"})
        assert resp.status_code == 201
        assert (await r.client.post("/api/v1/session", json={"plan": "deadmill"})).status_code == 409
        body = (await r.client.post("/api/v1/session/pause")).json()
        assert body["paused"] is True and body["phase"] == "countdown"
        assert (await r.client.post("/api/v1/session/resume")).json()["paused"] is False
        body = (await r.client.post("/api/v1/session/skip")).json()
        assert (body["phase"], body["set"]) == ("work", 1)
        before = body["remaining_s"]
        body = (await r.client.post("/api/v1/session/extend", json={"seconds": 30})).json()
        assert body["phase"] == "work" and body["remaining_s"] >= before + 29
        for bad in ({"seconds": "30"}, {"seconds": 0}, {"seconds": 601}, {}, {"seconds": 30, "x": 1}):
            assert (await r.client.post("/api/v1/session/extend", json=bad)).status_code == 422, bad
        body = (await r.client.post("/api/v1/session/abort")).json()
        assert body["phase"] == "aborted"
        assert (await r.client.post("/api/v1/session/wat")).status_code == 404
        history = (await r.client.get("/api/v1/history")).json()
        assert history[0]["outcome"] == "aborted"
        assert history[0]["sets"][0]["outcome"] == "aborted"


async def test_s16_control_needs_the_token_but_the_stop_never_does() -> None:
    async with rig(token="sekrit") as r:
        resp = await r.client.post("/api/v1/belt/start", json={"speed_mph": 1.0})
        assert resp.status_code == 401
        resp = await r.client.post(
            "/api/v1/belt/start", json={"speed_mph": 1.0}, headers={"Authorization": "Bearer wrong"}
        )
        assert resp.status_code == 401
        assert (await r.client.post("/api/v1/estop")).status_code == 202
        assert (await r.client.post("/api/v1/belt/stop")).status_code == 202
        resp = await r.client.post("/api/v1/estop/reset", headers={"Authorization": "Bearer sekrit"})
        assert resp.status_code in (200, 409)
        assert (await r.client.get("/api/v1/state")).status_code == 200


async def test_healthz_and_metrics() -> None:
    async with rig() as r:
        assert (await r.client.get("/healthz")).json()["ok"] is True
        await r.client.post("/api/v1/estop")
        resp = await r.client.get("/metrics")
        assert resp.headers["content-type"].startswith("text/plain")
        text = resp.text
        for name in (
            "retrotread_belt_speed_mph",
            "retrotread_samples_total",
            "retrotread_sample_age_seconds",
            "retrotread_driver_reconnects_total",
            "retrotread_sessions_total",
        ):
            assert name in text
        assert 'retrotread_emergency_stops_total{rule="S5",treadmill="test"} 1.0' in text


@contextlib.asynccontextmanager
async def served(url: str, mode: Mode) -> AsyncIterator[str]:
    """A real uvicorn server on a socket bound before it starts: early requests wait in the backlog."""
    app = create_app(factory(url, mode))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.state.controller.hub.close()
        server.should_exit = True
        await task
        sock.close()


async def test_events_stream_state_and_timer_during_a_session() -> None:
    """Acceptance 5: SSE carries state and timer; timer is the session block of interfaces.md."""
    async with served("sim://manual?rate_hz=20", Mode.DEADMILL) as base:
        seen: dict[str, list[Any]] = {"state": [], "timer": [], "telemetry": [], "event": [], "cue": []}
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            async with client.stream("GET", "/api/v1/events") as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                resp_start = await client.post("/api/v1/session", json={"plan": "2x1s/1s,countdown=1s"})
                assert resp_start.status_code == 201
                kind = ""
                async with asyncio.timeout(15):
                    async for line in resp.aiter_lines():
                        if line.startswith("event:"):
                            kind = line.split(":", 1)[1].strip()
                        elif line.startswith("data:"):
                            data = json.loads(line.split(":", 1)[1])
                            seen[kind].append(data)
                            if kind == "event" and data["kind"] == "session_completed":
                                break
        assert seen["state"] and seen["telemetry"]
        assert set(seen["state"][-1]) >= STATE_KEYS
        phases = [(t["phase"], t["set"]) for t in seen["timer"]]
        assert ("countdown", 1) in phases and ("work", 1) in phases and ("rest", 1) in phases
        assert ("work", 2) in phases and phases[-1][0] == "done"
        for t in seen["timer"]:
            assert set(t) >= SESSION_KEYS
        kinds = [e["kind"] for e in seen["event"]]
        assert kinds.count("set_started") == 2 and kinds.count("set_completed") == 2


async def test_plans_serve_the_presets_and_the_phase_names() -> None:
    """The dashboard's list comes from here (issue 11): no preset or phase is written in the page."""
    from retrotread.daemon.plans import PRESETS

    async with rig() as r:
        resp = await r.client.get("/api/v1/plans")
        assert resp.status_code == 200
        plans = resp.json()
        assert [p["name"] for p in plans["presets"]] == list(PRESETS)
        deadmill = next(p for p in plans["presets"] if p["name"] == "deadmill")
        assert (deadmill["sets"], deadmill["work_s"], deadmill["rest_s"]) == (3, 60, 60)
        assert plans["phases"] == ["idle", "countdown", "work", "rest", "done", "aborted"]
        assert plans["running"] == ["countdown", "work", "rest"] and plans["done"] == "done"
        page = (await r.client.get("/")).text + (await r.client.get("/static/app.js")).text
        for name in PRESETS:
            assert f'"{name}"' not in page
        # Phase names come from /api/v1/plans ("countdown" is also a cue kind, which the page may name).
        assert '"work"' not in page and '"rest"' not in page and '"done"' not in page


async def test_metrics_carry_the_drivers_own_counters() -> None:
    """Driver.stats() (a mapping of counter name to count) reaches /metrics (issue 11 point 9)."""
    from retrotread.sims.driver import SimBeltDriver

    class CountingSim(SimBeltDriver):
        def stats(self) -> dict[str, int]:
            return {"bad_samples": 3, "reconnect_attempts": 2, "not_a_count": "x"}  # type: ignore[dict-item]

    def make() -> Controller:
        url = "sim://motorized?rate_hz=50"
        driver = CountingSim.from_url(urlsplit(url), {"rate_hz": "50"})
        driver.url = url
        return Controller(driver, treadmill_id="test")

    app = create_app(make)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            text = (await client.get("/metrics")).text
    assert 'retrotread_driver_events_total{counter="bad_samples",treadmill="test"} 3.0' in text
    assert 'retrotread_driver_events_total{counter="reconnect_attempts",treadmill="test"} 2.0' in text
    assert "not_a_count" not in text
