"""The floor view (issue 13.6): the tiles from broker messages, and the page in headless Chromium
over 20 simulated treadmills on one private Mosquitto, the floor a real process of its own.

Waits are on messages, log lines, the controllers' hub and the page's DOM, each with a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from browser import chromium, chromium_path
from helpers import free_port, until_controller
from mqtt_broker import Mosquitto, broker_fixture  # noqa: F401  (the ``broker`` fixture)

from retrotread.api.floor import Floor
from retrotread.api.mqtt import MqttBridge
from retrotread.daemon.commands import EStopCommand
from retrotread.daemon.controller import Controller
from retrotread.daemon.events import EventKind
from retrotread.daemon.snapshot import Event
from retrotread.drivers import open_driver

STATE = {
    "id": "a",
    "mode": "reverse",
    "connected": True,
    "belt": {"speed_mph": 1.02, "moving": True},
    "stop": {"latched": False, "reason": None, "rule": None},
}


def state(**stop: Any) -> bytes:
    return json.dumps({**STATE, "stop": {**STATE["stop"], **stop}}).encode()


def test_tiles_from_messages_sorted_by_attention() -> None:
    floor = Floor()
    for tid in ("idle", "busy", "down", "held"):
        assert floor.apply(f"retrotread/{tid}/status", b"online")
    floor.apply("retrotread/down/status", b"offline")
    assert floor.apply("retrotread/busy/state", state())
    assert floor.apply("retrotread/held/state", state(latched=True, reason="uncommanded", rule="S11"))
    timer = {"phase": "work", "set": 2, "sets": 3, "remaining_s": 41.3}
    assert floor.apply("retrotread/idle/timer", json.dumps({**timer, "phase": "idle", "set": None}).encode())
    assert floor.apply("retrotread/busy/timer", json.dumps(timer).encode())
    assert [t.id for t in floor.ordered()] == ["held", "busy", "idle", "down"]
    held = floor.tiles["held"]
    assert (held.latched, held.reason, held.rule, held.speed_mph) == (True, "uncommanded", "S11", 1.02)
    busy = floor.tiles["busy"].view()
    assert (busy["set"], busy["sets"], busy["remaining_s"], busy["running"]) == (2, 3, 41.3, True)
    assert floor.apply("retrotread/busy/event", b'{"kind": "set_started", "ts": "x"}')
    assert floor.tiles["busy"].last_event == "set_started"


def test_what_is_not_a_treadmills_message_changes_nothing() -> None:
    floor = Floor()
    floor.apply("retrotread/a/status", b"online")
    version = floor.version
    for topic, payload in [
        ("retrotread/a/state", b"not json"),
        ("retrotread/a/state", b"[1, 2]"),
        ("retrotread/a/state", b'{"belt": null}'),  # no stop block
        ("retrotread/a/timer", b'{"set": 1}'),  # no phase
        ("retrotread/a/status", b"maybe"),
        ("retrotread/a/cmd/estop", b"{}"),
        ("retrotread/a/telemetry", b'{"speed_mph": 1}'),
        ("other/a/state", state()),
        ("retrotread/a b/state", state()),
        ("retrotread/a/event", b'{"no": "kind"}'),
    ]:
        assert not floor.apply(topic, payload), topic
    assert floor.version == version
    assert floor.apply("retrotread/a/state", b'{"stop": {"latched": false}, "belt": {"speed_mph": NaN}}')
    assert floor.tiles["a"].speed_mph is None  # NaN could not be shown (nor sent as JSON)
    assert floor.apply("retrotread/a/status", b"")  # ``mqtt forget``: gone for good
    assert "a" not in floor.tiles


N = 20


@contextlib.asynccontextmanager
async def fleet(broker: Mosquitto) -> AsyncIterator[list[Controller]]:
    async with contextlib.AsyncExitStack() as stack:
        controllers: list[Controller] = []
        bridges: list[MqttBridge] = []
        for i in range(N):
            driver = open_driver("sim://motorized?rate_hz=5")
            controller = await stack.enter_async_context(Controller(driver, treadmill_id=f"t{i:02d}"))
            controllers.append(controller)
            bridges.append(await stack.enter_async_context(MqttBridge(controller, broker.url, discovery=False)))
        for bridge in bridges:
            await bridge.wait_connected(within=20)
        yield controllers


@contextlib.asynccontextmanager
async def floor_process(broker: Mosquitto) -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "retrotread.api.floor",
        "--mqtt",
        broker.url,
        "--http",
        f"127.0.0.1:{port}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while not any("Uvicorn running on" in line for line in lines):
                raw = await proc.stderr.readline()
                if not raw:
                    raise AssertionError("the floor view exited:\n" + "\n".join(lines))
                lines.append(raw.decode(errors="replace"))
        yield f"http://127.0.0.1:{port}/"
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.communicate()


@pytest.mark.slow
async def test_the_floor_page_shows_twenty_treadmills_and_a_tile_stops_its_own(broker: Mosquitto) -> None:
    if chromium_path() is None:
        pytest.skip("chromium is not installed")
    loop = asyncio.get_running_loop()
    async with fleet(broker) as controllers, floor_process(broker) as url:
        by_id = {c.id: c for c in controllers}
        figures: dict[str, float] = {}

        def latch(tid: str) -> float:
            """Latch ``tid`` from the test (as a console button would): the time it went out."""
            done = asyncio.run_coroutine_threadsafe(by_id[tid].execute(EStopCommand(), "test"), loop)
            done.result(10)
            return time.monotonic()

        def in_the_browser() -> None:
            with chromium() as page:
                page.viewport(1920, 1080, mobile=False, scale=1.0)
                page.goto(url)
                page.wait_for(f"document.querySelectorAll('.tile:not(.offline)').length === {N}", within=20)
                assert page.text("#broker") == "broker connected"
                # A change on the broker shows on its tile within a second, and sorts it first.
                sent = latch("t07")
                page.wait_for("document.querySelector('.tile[data-id=\"t07\"]').classList.contains('latched')", 5)
                figures["latched_tile_s"] = time.monotonic() - sent
                assert page.evaluate("document.querySelector('.tile').dataset.id") == "t07"
                assert "STOPPED" in (page.text('.tile[data-id="t07"] .reason') or "")
                # The STOP of one tile latches that treadmill and no other.
                page.click('.tile[data-id="t12"] .stop')
                page.wait_for("document.querySelector('.tile[data-id=\"t12\"]').classList.contains('latched')", 5)
                latched = page.evaluate("Array.from(document.querySelectorAll('.tile.latched')).map(e => e.dataset.id)")
                assert sorted(latched) == ["t07", "t12"]
                assert page.errors == []

        events = by_id["t12"].hub.subscribe(("event",), maxsize=1000, replay=False)
        await asyncio.to_thread(in_the_browser)
        await until_controller(by_id["t12"], lambda: by_id["t12"].snapshot().stop.latched, within=5)
        async with asyncio.timeout(5):  # the stop's reason, read after the latch (S5)
            async for update in events:
                event = update.payload
                if isinstance(event, Event) and event.kind == EventKind.ESTOP_REASON:
                    assert event.reason == "floor"
                    break
        by_id["t12"].hub.unsubscribe(events)
        assert sorted(c.id for c in controllers if c.snapshot().stop.latched) == ["t07", "t12"]
        print(f"floor: a latched stop reached its tile in {figures['latched_tile_s'] * 1000:.0f} ms")
        assert figures["latched_tile_s"] < 1.0
