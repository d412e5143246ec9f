"""The daemon on ``ftms+sim://``: issue 5, acceptance 3 and 4.

Acceptance 3 runs ``retrotread run`` as a real process and talks to it over HTTP; polling its
state over HTTP (with a deadline) is the only way to watch another process. The fault tests run
the real app in process (``create_app`` + its lifespan + httpx's ASGI transport) and wait on the
controller's hub, with timeouts, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import free_port, wait_until

from retrotread.api.app import create_app
from retrotread.daemon.auth import read_token
from retrotread.daemon.controller import Controller
from retrotread.daemon.hub import Subscription
from retrotread.drivers import Speed, open_driver
from retrotread.safety import Mode, SafetyConfig
from retrotread.sims.faults import FaultKind
from retrotread.sims.ftms import SimFtmsDriver

RETROTREAD = str(Path(sys.executable).with_name("retrotread"))
RAW_JSON = {"content-type": "application/json"}

# -- in process --------------------------------------------------------------------------------


@dataclass
class Rig:
    client: httpx.AsyncClient
    controller: Controller
    updates: Subscription
    driver: SimFtmsDriver

    async def until(self, predicate: Callable[[], Any], within: float = 20.0) -> Any:
        return await wait_until(predicate, self.updates, within)

    def speed(self) -> float:
        belt = self.controller.snapshot().belt
        return belt.speed_mph if belt else 0.0

    def latched_by(self) -> str | None:
        stop = self.controller.snapshot().stop
        return stop.rule if stop.latched else None

    async def start_belt(self, mph: float = 1.0) -> None:
        """Start as soon as the supervisor allows it (S4: after a second of standstill)."""
        sup = self.controller.supervisor
        await self.until(lambda: sup.armed and sup.last_motion_age(self.controller.clock()) is None)
        await self.until(lambda: self.controller.samples_seen > 0)
        while True:
            resp = await self.client.post("/api/v1/belt/start", json={"speed_mph": mph})
            if resp.status_code == 202:
                return
            assert resp.json()["rule"] == "S4", resp.text  # not yet at standstill long enough
            await self.updates.next(within=5.0)


@contextlib.asynccontextmanager
async def rig(driver: SimFtmsDriver) -> AsyncIterator[Rig]:
    app = create_app(lambda: Controller(driver, treadmill_id="ftms", safety=SafetyConfig(mode=Mode.REVERSE)))
    async with app.router.lifespan_context(app):
        controller: Controller = app.state.controller
        updates = controller.hub.subscribe(maxsize=100_000)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield Rig(client, controller, updates, driver)


def sim(url: str) -> SimFtmsDriver:
    driver = open_driver(url)
    assert isinstance(driver, SimFtmsDriver)
    return driver


async def test_s10_safety_key_latches() -> None:
    async with rig(sim("ftms+sim://?rate_hz=20&fault=key@1")) as r:
        await r.until(lambda: r.latched_by() == "S10")
        assert r.controller.snapshot().stop.reason == "safety-key"
        resp = await r.client.post("/api/v1/belt/start", json={"speed_mph": 1.0})
        assert resp.status_code == 409 and resp.json()["rule"] == "S6"


async def test_s10_control_lost_latches() -> None:
    async with rig(sim("ftms+sim://?rate_hz=20&lose_control=1")) as r:
        await r.until(lambda: r.latched_by() == "S10")
        assert r.controller.snapshot().stop.reason == "control-lost"


async def test_s10_a_stop_on_the_console_stops_the_daemon_without_latching() -> None:
    async with rig(sim("ftms+sim://?rate_hz=20")) as r:
        await r.start_belt()
        await r.until(lambda: r.speed() > 0.9)
        r.driver.peripheral.console_stop()
        await r.until(lambda: r.controller.snapshot().target_mph is None)
        assert not r.controller.snapshot().stop.latched
        await r.until(lambda: r.speed() < 0.01)


async def test_s8_stalled_telemetry_trips_while_the_belt_is_commanded() -> None:
    async with rig(sim("ftms+sim://?rate_hz=20")) as r:
        await r.start_belt()
        await r.until(lambda: r.speed() > 0.9)
        r.driver.peripheral.strike(FaultKind.STALL)
        await r.until(lambda: r.latched_by() == "S8")
        assert r.controller.snapshot().stop.reason == "stale"
        await r.until(lambda: not r.driver.peripheral.running)  # the stop still reached the machine


async def test_s8_garbage_is_no_sample() -> None:
    async with rig(sim("ftms+sim://?rate_hz=20")) as r:
        await r.start_belt()
        await r.until(lambda: r.speed() > 0.9)
        r.driver.peripheral.strike(FaultKind.GARBAGE)
        await r.until(lambda: r.latched_by() == "S8")
        assert r.driver.bad_packets > 0


async def test_s7_runaway_belt_trips_overspeed() -> None:
    async with rig(sim("ftms+sim://?rate_hz=20")) as r:
        await r.start_belt()
        await r.until(lambda: r.speed() > 0.9)
        r.driver.peripheral.strike(FaultKind.RUNAWAY)
        await r.until(lambda: r.latched_by() == "S7")
        await r.until(lambda: r.speed() < 0.01)  # FTMS Stop overrides the runaway


async def test_s9_reboot_latches_and_the_belt_ends_stopped() -> None:
    async with rig(sim("ftms+sim://?rate_hz=20")) as r:
        await r.start_belt()
        await r.until(lambda: r.speed() > 0.9)
        r.driver.peripheral.strike(FaultKind.REBOOT)
        await r.until(lambda: r.latched_by() == "S9")
        await r.until(lambda: r.controller.reconnects >= 1 and r.controller.snapshot().connected)
        # The machine resumes its belt on its own after the reboot; the daemon stops it again.
        await r.until(lambda: r.driver.peripheral.connections == 2 and not r.driver.peripheral.running)
        after = [w.hex for w in r.driver.peripheral.writes if w.conn == 2]
        assert after[0] == "0801"
        assert r.controller.snapshot().stop.latched


async def test_s2_speeds_on_the_wire_stay_inside_the_envelope() -> None:
    async with rig(sim("ftms+sim://?rate_hz=20&increment=0.1")) as r:
        await r.start_belt(0.8)
        resp = await r.client.post("/api/v1/belt/speed", json={"speed_mph": 1.2})
        assert resp.status_code == 202
        await r.until(lambda: r.speed() > 1.15)
        speeds = [w.request.speed for w in r.driver.peripheral.writes if w.hex.startswith("02")]  # type: ignore[union-attr]
        assert speeds[0] == Speed.from_kmh(1.3)  # 0.8 mph rounds up to 1.3 km/h
        assert max(speeds) == Speed.from_kmh(1.9)  # 1.2 mph rounds down to 1.9 km/h (190)
        assert max(s.mph for s in speeds) <= 1.2
        await r.client.post("/api/v1/estop")


# -- a real daemon process -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def daemon(driver_url: str, log: Path) -> AsyncIterator[httpx.AsyncClient]:
    """``retrotread run`` on ``driver_url`` in reverse mode, on a free port, with its state (the API
    token, history) under ``log``'s directory; a client that sends the token. Killed on the way out."""
    port = free_port()
    state_dir = log.parent / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETROTREAD_")}
    env["RETROTREAD_DAEMON__STATE_DIR"] = str(state_dir)
    with log.open("w") as stderr:
        proc = await asyncio.create_subprocess_exec(
            RETROTREAD,
            "run",
            "--driver",
            driver_url,
            "--mode",
            "reverse",
            "--http",
            f"127.0.0.1:{port}",
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(20):
                banner = (await proc.stdout.readline()).decode()
            assert "ftms+sim://" in banner, f"no banner; see {log}"
            token = read_token(state_dir)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as client:
                yield client
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(10):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def poll(client: httpx.AsyncClient, predicate: Callable[[dict[str, Any]], Any], within: float = 20.0) -> Any:
    """The state, once ``predicate(state)`` holds. Polling is the only way to watch another process."""
    async with asyncio.timeout(within):
        while True:
            state = (await client.get("/api/v1/state")).json()
            if predicate(state):
                return state
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_acceptance_3_s1_s5_s6_over_http_on_ftms(tmp_path: Path) -> None:
    async with daemon("ftms+sim://?rate_hz=10", tmp_path / "daemon.log") as client:
        await poll(client, lambda s: s["connected"] and s["armed"] and s["belt"] is not None)
        async with asyncio.timeout(20):
            while (resp := await client.post("/api/v1/belt/start", json={"speed_mph": 1.0})).status_code != 202:
                assert resp.json().get("rule") == "S4", resp.text  # standstill for a second first
                await asyncio.sleep(0.1)
        await poll(client, lambda s: s["belt"]["speed_mph"] > 0.9)

        for bad in ("1.5", "0.5", "NaN"):  # raw JSON: httpx's json= refuses NaN
            resp = await client.post("/api/v1/belt/speed", content=f'{{"speed_mph": {bad}}}', headers=RAW_JSON)
            assert resp.status_code in (409, 422), resp.text
            assert resp.json()["rule"] == "S1" and resp.json()["error"]
        resp = await client.post("/api/v1/belt/speed", content='{"speed_mph": "fast"}', headers=RAW_JSON)
        assert resp.status_code in (409, 422) and resp.json()["rule"] == "S1"

        assert (await client.post("/api/v1/estop")).status_code == 202
        state = await poll(client, lambda s: s["belt"]["speed_mph"] < 0.01)
        assert state["stop"]["latched"] and state["stop"]["rule"] == "S5"
        resp = await client.post("/api/v1/belt/start", json={"speed_mph": 1.0})
        assert resp.status_code == 409 and resp.json()["rule"] == "S6"
        async with asyncio.timeout(20):
            while (resp := await client.post("/api/v1/estop/reset")).status_code != 200:
                assert resp.status_code == 409 and resp.json()["rule"] == "S6", resp.text  # 2 s of stillness first
                await asyncio.sleep(0.1)
        state = (await client.get("/api/v1/state")).json()
        assert not state["stop"]["latched"] and state["belt"]["speed_mph"] == 0.0  # a reset never starts the belt


@pytest.mark.slow
async def test_acceptance_4_unplug_latches_s9_and_the_first_write_after_reconnect_is_a_stop(tmp_path: Path) -> None:
    trace = tmp_path / "control-point.jsonl"
    url = f"ftms+sim://?rate_hz=10&fault=unplug@3&trace={trace}"
    async with daemon(url, tmp_path / "daemon.log") as client:
        await poll(client, lambda s: s["stop"]["latched"])
        state = (await client.get("/api/v1/state")).json()
        assert state["stop"]["rule"] == "S9" and state["stop"]["reason"] == "link-lost"
        await poll(client, lambda s: s["connected"] and s["belt"] is not None)
        writes = [json.loads(line) for line in trace.read_text().splitlines()]
        after = [w for w in writes if w["conn"] == 2]
        assert after and after[0]["hex"] == "0801", writes
        assert next(w["hex"] for w in writes if w["conn"] == 1) == "00"  # Request Control opens the first link
        state = (await client.get("/api/v1/state")).json()
        assert state["stop"]["latched"]  # the daemon never restarts a belt by itself (S9)
        resp = await client.post("/api/v1/belt/start", json={"speed_mph": 1.0})
        assert resp.status_code == 409 and resp.json()["rule"] == "S6"


@pytest.mark.slow
async def test_acceptance_4_safety_key_over_http(tmp_path: Path) -> None:
    async with daemon("ftms+sim://?rate_hz=10&fault=key@2", tmp_path / "daemon.log") as client:
        state = await poll(client, lambda s: s["stop"]["latched"])
        assert state["stop"]["rule"] == "S10" and state["stop"]["reason"] == "safety-key"
