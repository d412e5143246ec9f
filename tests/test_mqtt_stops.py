"""S5 over MQTT: a stop is never refused (issue 10).

Whatever the bytes, size or encoding of a live message on ``cmd/estop``, the stop is latched and
written to the device before the payload is parsed, and answered ``ok``; the same for ``cmd/stop``
(a controlled stop, not latched).

The property test runs a real ``retrotread run --mqtt`` daemon against a private Mosquitto, and
reads the latch from the daemon's retained ``state`` and the wire from the simulated device's trace.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from concurrent.futures import Future
from pathlib import Path

import httpx
import pytest
from helpers import MqttDaemon, hold_set_incline, mqtt_daemon, running, watching
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mqtt_broker import Mosquitto, broker_fixture  # noqa: F401  (the ``broker`` fixture)

from retrotread.api.mqtt import MAX_COMMAND_BYTES
from retrotread.api.mqtt.bridge import COMMANDS_WAITING
from retrotread.daemon.controller import Controller
from retrotread.drivers.units import Speed
from retrotread.sims.driver import SimBeltDriver

ROOT = Path(__file__).resolve().parent.parent

# Each is a payload the stop must survive: plain words (a wall button, Home Assistant's default
# "PRESS"), JSON that is not an object or has the wrong shape, too big, not UTF-8, deeply nested;
# with the reason then noted ("estop": none given, nothing noted; "unreadable": none could be read).
ODD_PAYLOADS: list[tuple[str, bytes, str]] = [
    ("empty", b"", "estop"),
    ("an empty object", b"{}", "estop"),
    ("plain STOP", b"STOP", "unreadable"),
    ("PRESS", b"PRESS", "unreadable"),
    ("true", b"true", "unreadable"),
    ("null", b"null", "unreadable"),
    ("a list", b"[1, 2]", "unreadable"),
    ("reason not a string", b'{"reason": 5}', "unreadable"),
    ("an unknown field", b'{"reason": "x", "speed_mph": 3}', "x"),
    ("reason too long", json.dumps({"reason": "r" * 5000}).encode(), "unreadable"),
    ("over the bound", b"x" * (MAX_COMMAND_BYTES + 1), "unreadable"),
    ("a megabyte", b"\x00" * 1_000_000, "unreadable"),
    ("not UTF-8", b"\xff\xfe\xfa", "unreadable"),
    ("UTF-16 JSON", '{"reason": "utf16"}'.encode("utf-16"), "utf16"),
    ("deep nesting", b"[" * 100_000, "unreadable"),
    ("truncated JSON", b'{"reason": "cut', "unreadable"),
]


def sim_of(controller: Controller) -> SimBeltDriver:
    driver = controller._driver  # the real simulated device the controller writes to
    assert isinstance(driver, SimBeltDriver)
    return driver


def sent_since(driver: SimBeltDriver, mark: int) -> list[str]:
    return [kind for _, kind, _ in driver.commands[mark:]]


async def test_s5_every_estop_payload_latches_writes_and_is_answered_ok(broker: Mosquitto) -> None:
    """Each odd payload on cmd/estop: latched, ESTOP written to the device, answered ok (S5); then
    a reason that does not parse is noted as unreadable (an ``estop_reason`` event), one that does
    is noted as given."""
    base = "retrotread/st1"
    async with (
        running(broker, "st1") as (controller, mqtt),
        watching(broker, f"{base}/cmd/result", f"{base}/event") as w,
    ):
        driver = sim_of(controller)
        noted = hasattr(controller, "note_stop_reason")
        for label, payload, reason in [*ODD_PAYLOADS, ("a good one", b'{"reason": "hand", "id": "g"}', "hand")]:
            mark, since = len(driver.commands), len(w.messages)
            await w.publish(f"{base}/cmd/estop", payload)
            _, _, result = await w.wait(f"{base}/cmd/result", lambda r: r["cmd"] == "estop", since=since)
            assert result["ok"] is True and result["error"] is None, (label, result)
            stop = controller.snapshot().stop
            assert stop.latched, label
            assert "estop" in sent_since(driver, mark), label
            assert stop.reason == "estop" and stop.rule == "S5", (label, stop)  # latched before reading
            if noted and reason != "estop":  # Controller.note_stop_reason (issue 10) is there
                await w.wait(
                    f"{base}/event",
                    lambda e, r=reason: e["kind"] == "estop_reason" and e["reason"] == r,
                    since=since,
                )
            if label == "a good one":
                assert result["id"] == "g"
            reset = await controller.reset()
            assert reset.refusal is None, (label, reset.refusal)
        assert mqtt.connected


async def test_s5_every_stop_payload_stops_and_is_answered_ok(broker: Mosquitto) -> None:
    """Each odd payload on cmd/stop: the stop is written to the device and answered ok."""
    base = "retrotread/st2"
    async with (
        running(broker, "st2", standstill_first=True) as (controller, _),
        watching(broker, f"{base}/cmd/result") as w,
    ):
        driver = sim_of(controller)
        # The first one stops a running belt; the rest a still one (a stop is written all the same).
        assert (await controller.start_belt(Speed.from_mph(1.0))).refusal is None
        for label, payload, _ in ODD_PAYLOADS:
            mark, since = len(driver.commands), len(w.messages)
            await w.publish(f"{base}/cmd/stop", payload)
            _, _, result = await w.wait(f"{base}/cmd/result", lambda r: r["cmd"] == "stop", since=since)
            assert result["ok"] is True and result["error"] is None, (label, result)
            assert "stop" in sent_since(driver, mark), label
            assert controller.supervisor.target is None, label


async def test_s5_a_stop_is_never_answered_busy(broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the command queue full behind a slow command, a stop still goes out and is answered
    ok; what waited before it is answered "superseded" (S5), never run after it."""
    base = "retrotread/st4"
    async with running(broker, "st4") as (controller, _), watching(broker, f"{base}/cmd/result") as w:
        driver = sim_of(controller)
        entered, release = hold_set_incline(monkeypatch, controller)
        await w.publish(f"{base}/cmd/incline", json.dumps({"incline_pct": 0, "id": "slow"}))
        async with asyncio.timeout(10):
            await entered.wait()
        for i in range(COMMANDS_WAITING + 1):  # the last one is answered busy: the queue is full
            await w.publish(f"{base}/cmd/reset", json.dumps({"id": f"q{i}"}))
        busy = await w.result(f"q{COMMANDS_WAITING}", base)
        assert busy["ok"] is False and "waiting" in busy["error"]
        mark = len(driver.commands)
        await w.publish(f"{base}/cmd/stop", b"STOP")
        _, _, stopped = await w.wait(f"{base}/cmd/result", lambda r: r["cmd"] == "stop")
        assert stopped["ok"] is True and "stop" in sent_since(driver, mark)
        first = await w.result("q0", base)
        assert first["ok"] is False and first["rule"] == "S5" and "superseded by a stop" in first["error"]
        release.set()
        assert (await w.result("slow", base))["ok"] is True


# ------------------------------------------------------------------ the property, on a real daemon


@pytest.fixture
async def real_daemon(broker: Mosquitto) -> AsyncIterator[MqttDaemon]:
    """``retrotread run --mqtt URL`` on a simulated belt whose device writes a trace."""
    async with mqtt_daemon(broker.url, "hy") as d:
        yield d


payloads = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=MAX_COMMAND_BYTES - 8, max_size=MAX_COMMAND_BYTES + 64),
    st.builds(lambda unit, n: unit * n, st.sampled_from([b"[", b"{", b"x", b"\xff", b'"']), st.integers(1, 200_000)),
    st.text(max_size=40).map(lambda s: s.encode("utf-16")),
    st.sampled_from([p for _, p, _ in ODD_PAYLOADS]),
    st.dictionaries(st.text(max_size=8), st.none() | st.booleans() | st.integers() | st.text(max_size=8)).map(
        lambda d: json.dumps(d).encode()
    ),
)


@pytest.mark.slow
async def test_s5_property_any_bytes_on_cmd_estop_latch_the_real_daemon(
    broker: Mosquitto, real_daemon: MqttDaemon
) -> None:
    """Hypothesis over the real daemon: any payload bytes on cmd/estop end with the stop latched in
    the daemon's retained state and an ``estop`` written to the device (its trace), answered ok."""
    base = "retrotread/hy"
    loop = asyncio.get_running_loop()
    async with (
        watching(broker, f"{base}/state", f"{base}/cmd/result") as w,
        httpx.AsyncClient(
            base_url=real_daemon.http, headers={"Authorization": f"Bearer {real_daemon.token}"}, timeout=10
        ) as http,
    ):
        await w.wait(f"{base}/state", lambda s: isinstance(s, dict) and s["connected"], within=20)

        async def one(payload: bytes) -> None:
            # From unlatched: reset over HTTP (MQTT control is "stop" only), seen on the state topic.
            if w.on(f"{base}/state")[-1]["stop"]["latched"]:
                since = len(w.messages)
                assert (await http.post("/api/v1/estop/reset")).status_code == 200
                await w.wait(f"{base}/state", lambda s: not s["stop"]["latched"], since=since)
            mark, since = len(real_daemon.wire()), len(w.messages)
            await w.publish(f"{base}/cmd/estop", payload)
            _, _, result = await w.wait(f"{base}/cmd/result", lambda r: r["cmd"] == "estop", since=since)
            assert result["ok"] is True, result
            _, _, state = await w.wait(f"{base}/state", lambda s: s["stop"]["latched"], since=since)
            assert state["stop"]["rule"] == "S5"
            assert "estop" in [line["cmd"] for line in real_daemon.wire()[mark:]]

        @settings(
            max_examples=50,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(payload=payloads)
        def prop(payload: bytes) -> None:
            # Hypothesis drives from a worker thread; each example runs on the test's loop, where
            # the watcher and the broker's log reader live.
            future: Future[None] = asyncio.run_coroutine_threadsafe(one(payload), loop)
            future.result(timeout=30)

        await asyncio.to_thread(prop)
    assert real_daemon.proc.returncode is None  # still running
