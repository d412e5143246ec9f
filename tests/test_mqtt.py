"""The MQTT face against a real, private Mosquitto: issue 6's acceptance, one test each.

Every test runs the real controller on a simulated belt and the real bridge; assertions go through
a separate aiomqtt client (``Watcher``), which subscribes with retain-as-published so a retained
message shows its flag even when it arrives live. Waiting is always on messages, the hub, the
broker's log or the bridge's connection count, with a timeout, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from helpers import (
    free_port,
    hold_set_incline,
    mqtt_decode,
    running,
    until_controller,
    watching,
)
from mqtt_broker import Mosquitto, broker_fixture  # noqa: F401  (the ``broker`` fixture)

from retrotread.api.mqtt import MAX_COMMAND_BYTES, LinkState, MqttBridge, forget
from retrotread.daemon.controller import Controller
from retrotread.drivers import open_driver
from retrotread.drivers.errors import ConfigError
from retrotread.drivers.units import KMH_PER_MPH
from retrotread.safety import Mode

STATE_KEYS = {"id", "mode", "driver", "connected", "belt", "target_mph", "envelope_mph", "stop", "session", "ts", "seq"}
SESSION_KEYS = {"id", "plan", "phase", "set", "sets", "remaining_s", "elapsed_s", "ends_at"}
RESULT_KEYS = {"cmd", "id", "ok", "error", "rule"}
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ helpers


def _raw(payload: Any) -> bytes:
    return payload if isinstance(payload, bytes | bytearray) else str(payload).encode()


def belt_mph(controller: Controller) -> float:
    belt = controller.snapshot().belt
    return belt.speed_mph if belt else 0.0


# ------------------------------------------------------------------ acceptance 1


async def test_status_state_telemetry_and_a_session_timer_with_events(broker: Mosquitto) -> None:
    """Issue 6 (1): status online (retained), state, telemetry; during a 3x1s/1s session the timer
    ticks on its retained topic and every set has its set_started and set_completed events."""
    base = "retrotread/a1"
    async with running(broker, "a1", "sim://manual?rate_hz=20", Mode.DEADMILL) as (controller, _):
        async with watching(broker, f"{base}/#") as w:
            _, status, text = await w.wait(f"{base}/status")
            assert text == "online" and status.retain
            _, state_msg, state = await w.wait(f"{base}/state")
            assert state_msg.retain and set(state) >= STATE_KEYS and state["id"] == "a1"
            _, telemetry_msg, telemetry = await w.wait(f"{base}/telemetry")
            assert not telemetry_msg.retain
            assert set(telemetry) == {"speed_mph", "incline_pct", "distance_m", "ts", "seq"}

            await w.publish(f"{base}/cmd/session", json.dumps({"plan": "3x1s/1s,countdown=0s", "id": "go"}))
            result = await w.result("go", base)
            assert result["ok"] is True, result
            assert set(result) >= RESULT_KEYS and result["session"]["sets"] == 3
            await w.wait(f"{base}/event", lambda e: e["kind"] == "session_completed", within=20)

        timer_msgs = [m for m in w.messages if m.topic.value == f"{base}/timer"]
        assert timer_msgs and all(m.retain for m in timer_msgs)
        timers = [mqtt_decode(m.payload) for m in timer_msgs]
        assert all(set(t) >= SESSION_KEYS for t in timers)
        phases = [(t["phase"], t["set"]) for t in timers]
        for n in (1, 2, 3):
            assert ("work", n) in phases
        # After "done" the timer goes back to idle (the idle view stays the latest once a session ends).
        in_session = [p for p in phases if p[0] != "idle"]
        assert ("rest", 1) in phases and ("rest", 2) in phases and in_session[-1][0] == "done"
        # Ticking: the remaining time counts down within a phase (published every second).
        work1 = [t["remaining_s"] for t in timers if (t["phase"], t["set"]) == ("work", 1)]
        assert work1 == sorted(work1, reverse=True)
        events = w.on(f"{base}/event")
        for kind in ("set_started", "set_completed"):
            assert sorted(e["set"] for e in events if e["kind"] == kind) == [1, 2, 3]
        assert all({"kind", "rule", "reason", "ts"} <= set(e) for e in events), [
            e for e in events if not {"kind", "rule", "reason", "ts"} <= set(e)
        ]
        assert controller.session is None


# ------------------------------------------------------------------ acceptance 2


@contextlib.asynccontextmanager
async def daemon(
    broker: Mosquitto, tid: str, extra_env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The real daemon: `retrotread run --mqtt URL`, with a state directory of its own."""
    with tempfile.TemporaryDirectory(prefix="retrotread-state-") as state:
        env = {**os.environ, "RETROTREAD_DAEMON__ID": tid, "RETROTREAD_DAEMON__STATE_DIR": state, **(extra_env or {})}
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("retrotread")),
            "run",
            "--driver",
            "sim://motorized?rate_hz=20",
            "--http",
            f"127.0.0.1:{free_port()}",
            "--mqtt",
            broker.url,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("control", ["stop", "full"])
async def test_s16_the_daemons_mqtt_control_setting_is_the_bridges_policy(broker: Mosquitto, control: str) -> None:
    """mqtt.control from the daemon's settings reaches its MQTT face: the default takes only the
    stops and says how to enable the rest; "full" takes a start."""
    tid = f"pol-{control}"
    base = f"retrotread/{tid}"
    extra = {"RETROTREAD_MQTT__CONTROL": control} if control == "full" else {}
    topics = (f"{base}/status", f"{base}/cmd/result", f"{base}/telemetry")
    async with daemon(broker, tid, extra), watching(broker, *topics) as w:
        await w.wait(f"{base}/status", lambda s: s == "online", within=20)
        # S4: a start needs the belt read still for 1 s; "online" can come before the first reading.
        _, _, first = await w.wait(f"{base}/telemetry", within=20)
        await w.wait(f"{base}/telemetry", lambda t: t["seq"] >= first["seq"] + 40, within=20)
        await w.publish(f"{base}/cmd/start", json.dumps({"speed_mph": 1.0, "id": "go"}))
        answer = await w.result("go", base, within=15)
        if control == "full":
            assert answer["ok"] is True, answer
        else:
            assert answer["ok"] is False and answer["rule"] == "S16" and "mqtt.control" in answer["error"]
        await w.publish(f"{base}/cmd/estop", json.dumps({"id": "halt"}))
        assert (await w.result("halt", base))["ok"] is True  # the stop, whatever the policy


@pytest.mark.slow
async def test_kill_9_leaves_offline_by_the_will(broker: Mosquitto) -> None:
    """Issue 6 (2): a daemon killed with SIGKILL is announced offline by the broker (its will)."""
    base = "retrotread/k9"
    async with daemon(broker, "k9") as proc, watching(broker, f"{base}/status") as w:
        i, _, _ = await w.wait(f"{base}/status", lambda s: s == "online", within=20)
        mark = len(broker.lines)
        proc.kill()
        _, msg, _ = await w.wait(f"{base}/status", lambda s: s == "offline", since=i + 1)
        assert msg.retain
        await broker.wait_for_log(r"Client retrotread-k9 closed its connection", since=mark)
    async with watching(broker, f"{base}/status") as fresh:
        _, msg, text = await fresh.wait(f"{base}/status")
        assert text == "offline" and msg.retain


@pytest.mark.slow
async def test_sigterm_publishes_offline_from_the_daemon_itself(broker: Mosquitto) -> None:
    """Issue 6 (2): on SIGTERM the daemon publishes ``offline`` itself, then disconnects cleanly
    (a clean DISCONNECT discards the will, so the broker's log shows who published it)."""
    base = "retrotread/term"
    async with daemon(broker, "term") as proc, watching(broker, f"{base}/status") as w:
        i, _, _ = await w.wait(f"{base}/status", lambda s: s == "online", within=20)
        mark = len(broker.lines)
        proc.send_signal(signal.SIGTERM)
        _, msg, _ = await w.wait(f"{base}/status", lambda s: s == "offline", since=i + 1)
        assert msg.retain
        _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        # 'offline' is 7 bytes; r1 = retained.
        own = (
            r"Received PUBLISH from retrotread-term \(d0, q1, r1, m\d+, 'retrotread/term/status', \.\.\. \(7 bytes\)\)"
        )
        await broker.wait_for_log(own, since=mark)
        await broker.wait_for_log(r"Received DISCONNECT from retrotread-term", since=mark)


# ------------------------------------------------------------------ acceptance 3


async def test_s16_a_retained_start_never_starts_the_belt(broker: Mosquitto) -> None:
    """Issue 6 (3), S16: a retained start left on the broker before the bridge starts is ignored,
    and so is one published retained while it runs (MQTT 5: retain-as-published)."""
    base = "retrotread/r16"
    async with watching(broker, f"{base}/cmd/result") as w:
        await w.publish(f"{base}/cmd/start", json.dumps({"speed_mph": 1.0, "id": "old"}), retain=True)
        async with running(broker, "r16", standstill_first=True) as (controller, mqtt):
            # Commands are handled in order: once the probe is answered, the retained start was seen.
            await w.publish(f"{base}/cmd/stop", json.dumps({"id": "probe"}))
            assert (await w.result("probe", base))["ok"] is True
            assert mqtt.retained_ignored == 1

            await w.publish(f"{base}/cmd/start", json.dumps({"speed_mph": 1.0, "id": "live-retained"}), retain=True)
            await w.publish(f"{base}/cmd/stop", json.dumps({"id": "probe2"}))
            await w.result("probe2", base)
            assert mqtt.retained_ignored == 2

            assert not [r for r in w.on(f"{base}/cmd/result") if r.get("cmd") == "start"]
            snap = controller.snapshot()
            assert snap.target_mph is None and controller.supervisor.target is None
            assert belt_mph(controller) == 0.0


async def test_s5_s6_estop_over_mqtt_stops_latches_and_answers(broker: Mosquitto) -> None:
    """Issue 6 (3): cmd/estop stops the belt and latches (state.stop.latched); results answer each."""
    base = "retrotread/e5"
    async with running(broker, "e5", standstill_first=True) as (controller, _):
        async with watching(broker, f"{base}/cmd/result", f"{base}/state", f"{base}/event") as w:
            await w.publish(f"{base}/cmd/start", json.dumps({"speed_mph": 1.0, "id": "go"}))
            assert (await w.result("go", base))["ok"] is True
            await until_controller(controller, lambda: belt_mph(controller) > 0.85)

            await w.publish(f"{base}/cmd/estop", json.dumps({"reason": "test", "id": "e1"}))
            result = await w.result("e1", base)
            assert result == {"cmd": "estop", "id": "e1", "ok": True, "error": None, "rule": None}
            _, msg, state = await w.wait(f"{base}/state", lambda s: s["stop"]["latched"])
            # S5: latched as "estop" before the payload is read; then the reason given is noted
            # (once the controller can: Controller.note_stop_reason, issue 10).
            assert msg.retain and state["stop"]["reason"] == "estop" and state["stop"]["rule"] == "S5"
            if hasattr(controller, "note_stop_reason"):
                await w.wait(f"{base}/event", lambda e: e["kind"] == "estop_reason" and e["reason"] == "test")
            await until_controller(controller, lambda: belt_mph(controller) < 0.01)

            await w.publish(f"{base}/cmd/start", json.dumps({"speed_mph": 1.0, "id": "again"}))
            again = await w.result("again", base)
            assert again["ok"] is False and again["rule"] == "S6"
            # An emergency stop twice is still one latched stop, answered twice (idempotent).
            await w.publish(f"{base}/cmd/estop", b"")
            _, _, second = await w.wait(f"{base}/cmd/result", lambda r: r["cmd"] == "estop" and r["id"] is None)
            assert second["ok"] is True and controller.snapshot().stop.latched


async def test_s5_estop_never_waits_behind_a_slow_command(broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """An emergency stop is carried out while an earlier command is still running; commands queued
    before it are answered "superseded" (S5) and never run after it."""
    base = "retrotread/sl"
    async with running(broker, "sl") as (controller, _):
        entered, release = hold_set_incline(monkeypatch, controller)
        async with watching(broker, f"{base}/cmd/result") as w:
            await w.publish(f"{base}/cmd/incline", json.dumps({"incline_pct": 0, "id": "slow"}))
            async with asyncio.timeout(10):
                await entered.wait()
            await w.publish(f"{base}/cmd/reset", json.dumps({"id": "queued"}))
            await w.publish(f"{base}/cmd/estop", json.dumps({"id": "stop-now"}))
            assert (await w.result("stop-now", base))["ok"] is True
            assert controller.snapshot().stop.latched
            queued = await w.result("queued", base)
            assert queued["ok"] is False and queued["rule"] == "S5" and "superseded" in queued["error"]
            assert "slow" not in [r["id"] for r in w.on(f"{base}/cmd/result")]  # still running
            release.set()
            assert (await w.result("slow", base))["id"] == "slow"
            assert controller.snapshot().stop.latched  # the reset queued before the stop never ran


def _fuzz_payloads(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    names = ["estop", "reset", "start", "speed", "stop", "incline", "session", "fly", "START", "", "ünï", "result2"]
    values: list[Any] = [
        None,
        True,
        False,
        0,
        -1,
        1,
        1.0,
        1.1,
        2.5,
        1e308,
        -1e308,
        10**30,
        10**400,
        "1.0",
        "NaN",
        "Infinity",
        "",
        "fast",
        [],
        [1.0],
        {},
        {"a": 1},
        "x" * 300,
        0.8,
        1.2,
        "deadmill",
        "3x1s/1s",
        "pause",
        "abort",
    ]
    keys = [
        "speed_mph",
        "incline_pct",
        "reason",
        "plan",
        "sets",
        "work_s",
        "rest_s",
        "countdown_s",
        "action",
        "id",
        "token",
        "extra",
        "",
    ]
    out: list[tuple[str, bytes]] = []
    for _ in range(n):
        name = rng.choice(names)
        kind = rng.randrange(9)
        if kind == 0:
            payload = rng.randbytes(rng.randrange(0, 64))
        elif kind == 1:
            payload = b"\xff\xfe" + rng.randbytes(8)  # not UTF-8
        elif kind == 2:
            payload = json.dumps(rng.choice([[1, 2], 3, "str", None, True, [{"speed_mph": 1.0}]])).encode()
        elif kind == 3:
            body = {rng.choice(keys): rng.choice(values) for _ in range(rng.randrange(1, 4))}
            payload = json.dumps(body).encode()
        elif kind == 4:
            raw = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-0", "1" * 400, '"NaN"', "null"])
            payload = f'{{"{rng.choice(keys)}": {raw}, "id": {rng.randrange(10**6)}}}'.encode()
        elif kind == 5:
            payload = b'{"plan": "' + b"9" * rng.randrange(5000, 70000) + b'"}'  # huge
        elif kind == 6:
            payload = b"[" * rng.randrange(100, 4000)  # deep nesting
        elif kind == 7:
            payload = json.dumps({"id": rng.choice([1.5, [1], {"a": 1}, "y" * 500, 2**70, True])}).encode()
        else:
            payload = json.dumps({"speed_mph": rng.uniform(-5, 5), "id": rng.randrange(10**6)}).encode()
        out.append((name, payload))
    return out


async def test_s16_a_thousand_malformed_commands_are_each_answered(broker: Mosquitto) -> None:
    """Issue 6 (3): 1,000 random payloads (bytes, wrong shapes, huge numbers, NaN, huge and deep
    bodies, unknown names) leave the bridge running, each one answered; a last valid one works."""
    base = "retrotread/fz"
    rng = random.Random(6)
    payloads = _fuzz_payloads(rng, 1000)
    async with running(broker, "fz") as (controller, mqtt), watching(broker, f"{base}/cmd/result") as w:
        for name, payload in payloads:
            await w.publish(f"{base}/cmd/{name}", payload)
        await w.wait(f"{base}/cmd/result", lambda _: len(w.on(f"{base}/cmd/result")) >= 1000, within=60)
        results = w.on(f"{base}/cmd/result")
        assert len(results) == 1000 and mqtt.answered == 1000
        for r in results:
            assert isinstance(r, dict) and set(r) >= RESULT_KEYS, r
            assert isinstance(r["ok"], bool) and (r["ok"] or isinstance(r["error"], str))
        # S5: a stop is never refused, whatever its body; nearly all the others are malformed.
        stops = [r for r in results if r["cmd"] in ("estop", "stop")]
        assert stops and all(r["ok"] for r in stops)
        others = [r for r in results if r["cmd"] not in ("estop", "stop")]
        assert sum(not r["ok"] for r in others) > 0.95 * len(others)

        await w.publish(f"{base}/cmd/stop", json.dumps({"id": "final"}))
        final = await w.result("final", base)
        assert final["ok"] is True and mqtt.connected
        assert controller.snapshot().connected


# ------------------------------------------------------------------ acceptance 4


async def test_broker_restart_mid_session_reconnects_and_republishes(broker: Mosquitto) -> None:
    """Issue 6 (4): the broker restarts (forgetting every retained message) in the middle of a
    session; the bridge reconnects, status, state, timer and discovery are retained and current
    again, and the session carries on to its normal end."""
    base = "retrotread/rs"
    tid = "rs"
    async with running(broker, tid, "sim://manual?rate_hz=20", Mode.DEADMILL) as (controller, mqtt):
        async with watching(broker, f"{base}/#") as w:
            await w.publish(f"{base}/cmd/session", json.dumps({"plan": "2x3s/1s,countdown=0s", "id": "s"}))
            started = await w.result("s", base)
            assert started["ok"] is True, started
            sid = started["session"]["id"]
            await w.wait(f"{base}/timer", lambda t: t["phase"] == "work" and t["set"] == 1)
            await w.wait(f"{base}/state")
            before = max(s["seq"] for s in w.on(f"{base}/state"))

        await broker.restart()
        await mqtt.wait_connected(count=2, within=30)
        # While away the bridge kept draining the hub itself: nothing piled up for the hub to drop.
        assert mqtt.updates_dropped == 0

        async with watching(
            broker, f"{base}/status", f"{base}/state", f"{base}/timer", f"homeassistant/device/{tid}/config"
        ) as fresh:
            _, msg, status = await fresh.wait(f"{base}/status")
            assert status == "online" and msg.retain
            _, msg, _state = await fresh.wait(f"{base}/state", lambda s: s["seq"] > before)
            assert msg.retain
            _, msg, timer = await fresh.wait(f"{base}/timer")
            assert msg.retain and timer["id"] == sid
            _, msg, config = await fresh.wait(f"homeassistant/device/{tid}/config")
            assert msg.retain and config["dev"]["identifiers"] == [f"retrotread_{tid}"]

        await until_controller(controller, lambda: controller.session is None, within=30)
        record = controller.history.get(sid)
        assert record is not None and record.outcome == "completed"
        assert [s.outcome for s in record.sets] == ["completed", "completed"]
        assert not controller.snapshot().stop.latched


async def test_broker_down_at_start_then_up_logs_once_each_way(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """The bridge never raises on broker trouble: started with no broker, it retries quietly and
    connects when one appears, logging the failure once and the recovery once."""
    failed = asyncio.Event()

    class Flag(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retrying" in record.getMessage():
                failed.set()

    flag = Flag()
    logging.getLogger("retrotread.api.mqtt").addHandler(flag)
    await broker.stop()
    try:
        with caplog.at_level(logging.DEBUG, logger="retrotread.api.mqtt"):
            async with Controller(open_driver("sim://motorized?rate_hz=20"), treadmill_id="late") as controller:
                async with MqttBridge(controller, broker.url, backoff_max_s=1.0) as mqtt:
                    async with asyncio.timeout(10):
                        await failed.wait()
                    assert not mqtt.connected
                    # Between tries it waits (down) or is trying again (opening), never further.
                    assert mqtt.link_state in (LinkState.DOWN, LinkState.OPENING)
                    await broker.start()
                    await mqtt.wait_connected(within=20)
                    assert mqtt.link_state is LinkState.UP
                await mqtt.wait_link(LinkState.DOWN, within=5)  # closed
    finally:
        logging.getLogger("retrotread.api.mqtt").removeHandler(flag)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("retrotread.api.mqtt") and r.levelno >= logging.WARNING
    ]
    assert len([m for m in warnings if "retrying" in m]) == 1, warnings
    assert len([m for m in warnings if "connected again" in m]) == 1, warnings
    where = f"mqtt://127.0.0.1:{broker.port}"
    assert all(where in m for m in warnings), warnings  # each names the broker


# ------------------------------------------------------------------ acceptance 5


async def test_discovery_config_and_forget(broker: Mosquitto) -> None:
    """Issue 6 (5): one retained discovery message with dev, o and cmps (each with p and unique_id),
    the number's range is the envelope; Home Assistant's birth re-publishes it; forget() clears it."""
    tid = "hd"
    topic = f"homeassistant/device/{tid}/config"
    async with running(broker, tid) as (controller, _):
        envelope = controller.snapshot().envelope_mph
        assert envelope is not None
        async with watching(broker, topic) as w:
            _, msg, config = await w.wait(topic)
            assert msg.retain
            assert config["dev"]["identifiers"] == [f"retrotread_{tid}"]
            assert {"name", "manufacturer", "model", "sw_version"} <= set(config["dev"])
            assert config["o"]["name"] == "retrotread" and config["o"]["sw_version"]
            assert config["availability_topic"] == f"retrotread/{tid}/status"
            cmps = config["cmps"]
            assert all("p" in c and "unique_id" in c for c in cmps.values())
            assert len({c["unique_id"] for c in cmps.values()}) == len(cmps)
            number = cmps["target_speed"]
            # Home Assistant's MQTT number converts no unit: the envelope in km/h, rounded inwards.
            lo, hi = (e * KMH_PER_MPH for e in envelope)
            assert (number["p"], number["unit_of_measurement"]) == ("number", "km/h")
            assert lo <= number["min"] < lo + 0.01 and hi - 0.01 < number["max"] <= hi, number
            assert number["command_topic"] == f"retrotread/{tid}/cmd/speed"
            assert cmps["emergency_stop"]["command_topic"] == f"retrotread/{tid}/cmd/estop"
            assert cmps["belt_speed"]["state_topic"] == f"retrotread/{tid}/state"
            assert cmps["time_remaining"]["state_topic"] == f"retrotread/{tid}/timer"

            await w.publish("homeassistant/status", b"online")
            _, again, _ = await w.wait(topic, since=1)
            assert again.retain

    await forget(broker.url, tid)
    async with watching(broker, topic, f"retrotread/{tid}/state") as fresh:
        await fresh.publish("sentinel/x", b"here", retain=True)
        await fresh.subscribe("sentinel/x")
        await fresh.wait("sentinel/x")
        assert not fresh.on(topic) and not fresh.on(f"retrotread/{tid}/state")


# ------------------------------------------------------------------ more


async def test_s16_control_stop_takes_only_the_stops_and_says_how_to_enable_the_rest(broker: Mosquitto) -> None:
    """Issue 13 (2): with mqtt.control = "stop" (the default) only stop and estop are taken over
    MQTT, and only those entities are offered; a refused command says how to enable it, on
    cmd/result and as a command_refused event (the event entity reads BASE/event)."""
    base = "retrotread/tk"
    config_topic = "homeassistant/device/tk/config"
    async with running(broker, "tk", control="stop", token="ignored") as (_controller, mqtt):
        assert mqtt.control == "stop"
        async with watching(broker, f"{base}/cmd/result", f"{base}/event", config_topic) as w:
            _, _, config = await w.wait(config_topic)
            offered = {k for k, c in config["cmps"].items() if "command_topic" in c}
            assert offered == {"emergency_stop", "stop"}
            for i, (cmd, body) in enumerate(
                [
                    ("speed", {"speed_mph": 1.0}),
                    ("start", {"speed_mph": 1.0}),
                    ("reset", {}),
                    ("session", {"plan": "deadmill"}),
                ]
            ):
                await w.publish(f"{base}/cmd/{cmd}", json.dumps({**body, "id": i}))
                refused = await w.result(i, base)
                assert refused["ok"] is False and refused["rule"] == "S16", refused
                assert 'mqtt.control = "full"' in refused["error"]
                _, _, event = await w.wait(
                    f"{base}/event", lambda e, c=cmd, n=i: e.get("kind") == "command_refused" and e.get("id") == n
                )
                assert event["cmd"] == cmd and event["reason"] == refused["error"] and event["rule"] == "S16"
                assert set(event) >= {"kind", "rule", "reason", "ts"}
            await w.publish(f"{base}/cmd/stop", json.dumps({"id": "s"}))
            assert (await w.result("s", base))["ok"] is True
            await w.publish(f"{base}/cmd/estop", json.dumps({"id": "e"}))
            assert (await w.result("e", base))["ok"] is True


async def test_s16_control_full_takes_every_command_without_a_token(broker: Mosquitto) -> None:
    """Issue 13 (2): with "full" the broker's ACL is the guard: no token in the body (Home
    Assistant could not send one), and the target speed, reset, plan and session controls are offered."""
    base = "retrotread/tf"
    config_topic = "homeassistant/device/tf/config"
    async with running(broker, "tf", control="full", token="sesame") as (_controller, _):
        async with watching(broker, f"{base}/cmd/result", config_topic) as w:
            _, _, config = await w.wait(config_topic)
            assert {"target_speed", "reset", "plan", "session_start", "session_abort"} <= set(config["cmps"])
            await w.publish(f"{base}/cmd/estop", json.dumps({"id": 1}))
            assert (await w.result(1, base))["ok"] is True
            await w.publish(f"{base}/cmd/start", json.dumps({"speed_mph": 1.0, "id": 2}))
            passed = await w.result(2, base)
            assert passed["ok"] is False and passed["rule"] == "S6"  # past the policy, refused by the latch


async def test_session_actions_and_bad_bodies_over_mqtt(broker: Mosquitto) -> None:
    base = "retrotread/sa"
    async with running(broker, "sa", "sim://manual?rate_hz=20", Mode.DEADMILL) as (controller, _):
        async with watching(broker, f"{base}/cmd/result") as w:

            async def send(cmd: str, body: Any, cmd_id: str) -> dict[str, Any]:
                await w.publish(f"{base}/cmd/{cmd}", json.dumps({**body, "id": cmd_id}))
                return await w.result(cmd_id, base)

            assert (await send("session", {"action": "pause"}, "p0"))["error"] == "no session is running"
            bad = await send("session", {"plan": "3xfast"}, "bad")
            assert bad["ok"] is False and "3xfast" in bad["error"]
            both = await send("session", {"plan": "deadmill", "action": "pause"}, "both")
            assert both["ok"] is False and "either" in both["error"]
            started = await send("session", {"sets": 2, "work_s": 60, "rest_s": 30, "countdown_s": 0}, "go")
            assert started["ok"] is True and started["session"]["sets"] == 2
            assert (await send("session", {"plan": "deadmill"}, "twice"))["ok"] is False
            paused = await send("session", {"action": "pause"}, "p")
            assert paused["ok"] is True and paused["session"]["paused"] is True
            assert (await send("session", {"action": "resume"}, "r"))["session"]["paused"] is False
            assert (await send("session", {"action": "skip"}, "k"))["session"]["phase"] == "rest"
            extended = await send("extend", {"seconds": 45}, "e")
            assert extended["ok"] is True and extended["session"]["remaining_s"] > 30  # the rest was 30 s
            assert (await send("extend", {"seconds": "45"}, "e2"))["ok"] is False
            aborted = await send("session", {"action": "abort"}, "a")
            assert aborted["ok"] is True and aborted["session"]["phase"] == "aborted"
            assert controller.session is None

            speed = await send("speed", {"speed_mph": "NaN"}, "nan-string")
            assert speed["ok"] is False and speed["rule"] == "S1" and "speed_mph" in speed["error"]
            await w.publish(f"{base}/cmd/speed", b'{"speed_mph": NaN, "id": "nan"}')
            nan = await w.result("nan", base)
            assert nan["ok"] is False and nan["rule"] in ("S1", "S13")  # deadmill refuses any speed
            # A stop takes no arguments, and is never refused for its body (S5): extra fields are ignored.
            extra = await send("stop", {"speed_mph": 1}, "extra")
            assert extra["ok"] is True
            await w.publish(f"{base}/cmd/warp", json.dumps({"id": "w"}))
            assert "unknown command 'warp'" in (await w.result("w", base))["error"]
            # Anything but a stop is parsed only up to the bound; a bigger body is refused, saying it.
            for name in ("start", "speed", "reset", "incline", "session"):
                since = len(w.messages)
                await w.publish(f"{base}/cmd/{name}", b" " * (MAX_COMMAND_BYTES + 1))
                _, _, big = await w.wait(f"{base}/cmd/result", lambda r, n=name: r["cmd"] == n, since=since)
                assert big["ok"] is False and f"at most {MAX_COMMAND_BYTES}" in big["error"], big
            assert controller.session is None


async def test_telemetry_is_written_in_the_samples_iteration_without_a_cross_thread_hop(
    broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16.2: a QoS 0 sample goes to paho and onto the socket at once: no
    ``call_soon_threadsafe`` (a self-pipe write and an extra loop iteration) for the bridge's
    socket, no task per message; and whenever paho has nothing left to write, no writer stays
    registered (one left behind would fire on every loop iteration)."""
    loop = asyncio.get_running_loop()
    hops: list[tuple[Any, tuple[Any, ...]]] = []
    threadsafe = loop.call_soon_threadsafe

    def counted(callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
        hops.append((callback, args))
        return threadsafe(callback, *args, context=context)

    base = "retrotread/lean"
    async with running(broker, "lean", "sim://motorized?rate_hz=50") as (_, mqtt):
        client = mqtt._client
        assert client is not None and client.direct
        fd = client._client.socket().fileno()
        async with watching(broker, f"{base}/telemetry", f"{base}/state") as w:
            await w.wait(f"{base}/telemetry")
            monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
            first = len(w.messages)
            await w.wait(f"{base}/telemetry", lambda t: True, since=first + 50, within=20)
            monkeypatch.undo()
            ours = [args for callback, args in hops if args and args[0] == fd]
            assert ours == [], f"{len(ours)} cross-thread writer registrations for the bridge's socket"
            seqs = [t["seq"] for t in w.on(f"{base}/telemetry")]
            # Telemetry and state share one sequence: every number between two readings is a state.
            states = {s["seq"] for s in w.on(f"{base}/state")}
            missing = set(range(seqs[0], seqs[-1])) - set(seqs) - states
            assert seqs == sorted(seqs) and not missing, f"readings lost: {sorted(missing)}"
            if not client._client.want_write():
                assert not loop.remove_writer(fd), "a writer stayed registered with nothing to write"
        assert mqtt.telemetry_dropped == 0


async def test_telemetry_hz_thins_the_readings_sent(broker: Mosquitto) -> None:
    """``telemetry_hz``: at most that many telemetry messages a second, each a real reading
    (its own seq), the rest skipped and counted; state and timer are not thinned."""
    base = "retrotread/thin"
    async with running(broker, "thin", "sim://motorized?rate_hz=50", telemetry_hz=5) as (_, mqtt):
        async with watching(broker, f"{base}/telemetry") as w:
            await w.wait(f"{base}/telemetry", since=5, within=20)
        seqs = [t["seq"] for t in w.on(f"{base}/telemetry")]
        # 50 readings a second thinned to 5: about ten readings per message (1 without it).
        assert (seqs[-1] - seqs[0]) / (len(seqs) - 1) >= 5, seqs
        assert mqtt.telemetry_skipped >= len(seqs)


@pytest.mark.parametrize("hz", [0, -1, float("nan"), float("inf")])
async def test_a_bad_telemetry_hz_is_a_config_error(hz: float) -> None:
    async with Controller(open_driver("sim://motorized"), treadmill_id="bad-hz") as controller:
        with pytest.raises(ConfigError, match="telemetry_hz"):
            MqttBridge(controller, "mqtt://127.0.0.1:1", telemetry_hz=hz)


@pytest.mark.parametrize("unit", ["kph", "MPH", ""])
async def test_a_bad_speed_unit_is_a_config_error(unit: str) -> None:
    async with Controller(open_driver("sim://motorized"), treadmill_id="bad-unit") as controller:
        with pytest.raises(ConfigError, match="speed_unit"):
            MqttBridge(controller, "mqtt://127.0.0.1:1", speed_unit=unit)


async def test_telemetry_to_a_stalled_broker_is_dropped_not_queued(broker: Mosquitto) -> None:
    """A broker that stops reading (SIGSTOP): once the socket holds no more, a QoS 0 sample is
    dropped (the next one is newer) instead of growing paho's queue until the keepalive gives up."""
    async with running(broker, "stall", "sim://motorized?rate_hz=10") as (_, mqtt):
        client = mqtt._client
        assert client is not None
        proc = broker._proc  # the broker process (tests/mqtt_broker.py)
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            chunk = b"x" * 65536
            results = [client.send_now("retrotread/stall/telemetry", chunk) for _ in range(2000)]
            assert False in results, "20 MB went into a stopped broker's socket"
            assert len(client._client._out_packet) <= 1
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        async with watching(broker, "retrotread/stall/telemetry") as w:
            await w.wait("retrotread/stall/telemetry", lambda t: isinstance(t, dict), within=20)


async def test_many_treadmills_share_one_broker(broker: Mosquitto) -> None:
    """Architecture, "Many treadmills": distinct client ids and topics; a command reaches one only."""
    async with running(broker, "m1") as (c1, b1), running(broker, "m2") as (c2, b2):
        assert b1.client_id != b2.client_id
        async with watching(broker, "retrotread/+/status", "retrotread/+/cmd/result") as w:
            await w.wait("retrotread/m1/status", lambda s: s == "online")
            await w.wait("retrotread/m2/status", lambda s: s == "online")
            await w.publish("retrotread/m1/cmd/estop", json.dumps({"id": "only-m1"}))
            await w.result("only-m1", "retrotread/m1")
            assert c1.snapshot().stop.latched and not c2.snapshot().stop.latched
            assert not w.on("retrotread/m2/cmd/result")


async def test_mqtts_with_a_private_ca(tmp_path: Path) -> None:
    """mqtts:// with ?ca=PATH: TLS to a broker whose certificate our own CA signed."""
    openssl = "openssl"
    ca_key, ca, key, csr, cert, ext = (tmp_path / n for n in ("ca.key", "ca.pem", "s.key", "s.csr", "s.pem", "ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for argv in (
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=retrotread test CA"],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [
            openssl,
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "1",
            "-extfile",
            ext,
        ],
    ):
        try:
            proc = await asyncio.create_subprocess_exec(
                *map(str, argv), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
        except FileNotFoundError:
            pytest.skip("openssl is not installed")
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
    tls = Mosquitto(tmp_path, extra_config=f"certfile {cert}\nkeyfile {key}\n")
    await tls.start()
    try:
        async with Controller(open_driver("sim://motorized?rate_hz=20"), treadmill_id="tls") as controller:
            url = f"mqtts://127.0.0.1:{tls.port}?ca={ca}"
            async with MqttBridge(controller, url) as mqtt:
                await mqtt.wait_connected(within=10)
                # Telemetry (QoS 0, written at once) over TLS too.
                watcher = aiomqtt.Client("127.0.0.1", tls.port, tls_context=ssl.create_default_context(cafile=ca))
                async with watcher:
                    await watcher.subscribe("retrotread/tls/telemetry")
                    async with asyncio.timeout(10):
                        async for message in watcher.messages:
                            assert set(json.loads(_raw(message.payload))) >= {"speed_mph", "seq"}
                            break
        await tls.wait_for_log(r"New client connected .* as retrotread-tls")
    finally:
        await tls.stop()


async def test_close_twice_and_clean_shutdown_leave_offline(broker: Mosquitto) -> None:
    base = "retrotread/cl"
    async with running(broker, "cl") as (_, mqtt), watching(broker, f"{base}/status") as w:
        i, _, _ = await w.wait(f"{base}/status", lambda s: s == "online")
        await mqtt.aclose()
        await mqtt.aclose()
        _, msg, _ = await w.wait(f"{base}/status", lambda s: s == "offline", since=i + 1)
        assert msg.retain and not mqtt.connected
        with pytest.raises(RuntimeError):
            await mqtt.__aenter__()
