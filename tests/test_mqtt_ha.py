"""Home Assistant over a real, private Mosquitto (issue 13, points 1-3): what a restart leaves
behind, Home Assistant's birth message, cues, the session controls, the refusals as events, and
``doctor``'s warning for full control on a broker that admits anonymous clients.

Assertions go through a separate aiomqtt client (``watching``); waits are on messages, never sleeps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ha_rules import ha_rules
from helpers import running, watching
from mqtt_broker import Mosquitto, broker_fixture  # noqa: F401  (the ``broker`` fixture)

from retrotread.api.doctor import run_checks
from retrotread.safety import Mode
from retrotread.sims.serial_serve import serve_csafe

DEADMILL = ("sim://manual?rate_hz=20", Mode.DEADMILL)


def _removals(config: dict[str, Any]) -> set[str]:
    return {k for k, c in config["cmps"].items() if set(c) == {"p"}}


async def test_a_restart_in_deadmill_mode_deletes_the_belt_controls_once(broker: Mosquitto) -> None:
    """Issue 13 (1): components a previous process published and this one does not offer are
    sent as platform-only entries (Home Assistant deletes a component only that way), once."""
    tid = "rs"
    topic = f"homeassistant/device/{tid}/config"
    async with running(broker, tid, control="full"):
        pass
    async with (
        running(broker, tid, "sim://manual?rate_hz=20", Mode.DEADMILL, control="full"),
        watching(broker, topic) as w,
    ):
        _, _, config = await w.wait(topic, lambda c: bool(_removals(c)))
        assert {"emergency_stop", "stop", "reset", "target_speed"} <= _removals(config)
        assert config["cmps"]["target_speed"] == {"p": "number"}
        assert config["cmps"]["emergency_stop"] == {"p": "button"}
        assert "plan" in config["cmps"] and len(config["cmps"]["plan"]) > 1
        assert ha_rules(config) == []
    async with (
        running(broker, tid, "sim://manual?rate_hz=20", Mode.DEADMILL, control="full"),
        watching(broker, topic) as w,
    ):
        await w.publish("homeassistant/status", b"online")  # one more publication, after the retained one
        await w.wait(topic, since=1)
        assert all(not _removals(c) for c in w.on(topic))


async def test_home_assistants_birth_brings_back_discovery_state_and_timer(broker: Mosquitto) -> None:
    """Issue 13 (3): a retained timer from an earlier process ("done, set 2 of 3") is replaced by
    the idle one at start-up; Home Assistant's birth message re-publishes discovery, state and timer."""
    tid = "bt"
    base = f"retrotread/{tid}"
    stale = {"id": 9, "plan": "deadmill", "phase": "done", "set": 2, "sets": 3, "remaining_s": 0, "elapsed_s": 0}
    async with watching(broker) as setup:
        await setup.publish(f"{base}/timer", json.dumps(stale), retain=True)
    async with running(broker, tid, "sim://manual?rate_hz=20", Mode.DEADMILL):
        async with watching(broker, f"{base}/timer") as w:
            _, msg, timer = await w.wait(f"{base}/timer")
            assert msg.retain and timer["phase"] == "idle", timer
        async with watching(broker, f"{base}/#", "homeassistant/device/bt/config") as w:
            mark = len(w.messages)
            await w.wait(f"{base}/timer")
            await w.wait(f"{base}/state")
            mark = len(w.messages)
            await w.publish("homeassistant/status", b"online")
            await w.wait("homeassistant/device/bt/config", since=mark)
            _, _, timer = await w.wait(f"{base}/timer", since=mark)
            _, _, state = await w.wait(f"{base}/state", lambda s: s["id"] == tid, since=mark)
            assert timer["phase"] == "idle" and state["mode"] == "deadmill"


async def test_cues_on_their_topic_and_on_the_event_entity(broker: Mosquitto) -> None:
    """Issue 13 (3): hub cues go to BASE/cue (not retained, QoS 1) and, for Home Assistant's event
    entity, to BASE/event as kind "cue" with their text."""
    tid = "cu"
    base = f"retrotread/{tid}"
    async with running(broker, tid, "sim://manual?rate_hz=20", Mode.DEADMILL) as (_, _mqtt):
        async with watching(broker, f"{base}/cue", f"{base}/event", f"{base}/cmd/result") as w:
            await w.publish(f"{base}/cmd/session", json.dumps({"plan": "1x1s,countdown=0s", "id": "go"}))
            assert (await w.result("go", base))["ok"] is True
            _, msg, cue = await w.wait(f"{base}/cue")
            assert not msg.retain and msg.qos == 1
            assert {"kind", "text", "set", "remaining_s", "ts"} <= set(cue)
            _, _, event = await w.wait(f"{base}/event", lambda e: e.get("kind") == "cue")
            assert event["cue"] == cue["kind"] and event["text"] == cue["text"]
            assert {"kind", "rule", "reason", "ts"} <= set(event)
            await w.wait(f"{base}/event", lambda e: e.get("kind") == "session_completed", within=20)


async def test_the_plan_select_and_the_session_buttons_work_as_published(broker: Mosquitto) -> None:
    """Issue 13 (2): with full control, pressing the buttons as discovery describes them (their
    topic and payload) runs the session of the plan chosen in the select."""
    tid = "sb"
    base = f"retrotread/{tid}"
    topic = f"homeassistant/device/{tid}/config"
    async with running(broker, tid, "sim://manual?rate_hz=20", Mode.DEADMILL, control="full") as (controller, _):
        async with watching(broker, topic, f"{base}/cmd/result", f"{base}/timer") as w:
            _, _, config = await w.wait(topic)
            cmps = config["cmps"]
            select = cmps["plan"]
            await w.publish(select["command_topic"], "phase1", retain=select["retain"])

            async def press(key: str) -> dict[str, Any]:
                button = cmps[key]
                since = len(w.messages)
                await w.publish(button["command_topic"], button["payload_press"])
                _, _, result = await w.wait(f"{base}/cmd/result", lambda r: r["cmd"] == "session", since=since)
                return dict(result)

            # The choice is a retained message the bridge reads, before the press that follows it.
            started = await press("session_start")
            assert started["ok"] is True, started
            assert started["session"]["plan"] == "phase1"
            assert (await press("session_pause"))["session"]["paused"] is True
            assert (await press("session_resume"))["session"]["paused"] is False
            assert (await press("session_skip"))["ok"] is True
            aborted = await press("session_abort")
            assert aborted["ok"] is True and aborted["session"]["phase"] == "aborted"
            assert controller.session is None


async def test_a_csafe_consoles_own_data_reach_home_assistant_as_diagnostic_sensors(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Issue 14.4: a (simulated) CSAFE console on a real pty says its version, units and counters
    at connect; the discovery the bridge publishes has a diagnostic sensor for each of them (and
    none for what it does not say: no serial number), reading the ``device`` block of the state,
    and the console's maker and model in the device block."""
    tid = "cs"
    topic = f"homeassistant/device/{tid}/config"
    async with serve_csafe(tmp_path / "ttyTREAD") as console:
        driver = f"csafe://{console.link}?poll_hz=20"
        async with (
            running(broker, tid, driver) as (controller, _),
            watching(broker, topic, f"retrotread/{tid}/state") as w,
        ):
            _, _, config = await w.wait(topic, lambda c: "firmware" in c["cmps"])
            _, _, state = await w.wait(f"retrotread/{tid}/state", lambda s: bool(s.get("device")))
            device = state["device"]
            cmps = config["cmps"]
            diagnostic = {k for k, c in cmps.items() if c.get("entity_category") == "diagnostic"}
            assert {"firmware", "console_units", "hours_of_use", "odometer", "error_code", "service_code"} <= diagnostic
            assert "serial_number" not in cmps and "serial" not in device
            assert cmps["hours_of_use"]["state_topic"] == f"retrotread/{tid}/state"
            assert (config["dev"]["manufacturer"], config["dev"]["model"]) == (device["maker"], device["model"])
            assert device["firmware"] == "1.0" and device["units"] == "mph"
            assert ha_rules(config) == []
            assert controller.device is not None


def _doctor_warnings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, control: str) -> list[str]:
    monkeypatch.setenv("RETROTREAD_DAEMON__DRIVER", "sim://motorized")
    monkeypatch.setenv("RETROTREAD_DAEMON__STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RETROTREAD_MQTT__URL", url)
    monkeypatch.setenv("RETROTREAD_MQTT__CONTROL", control)
    return [f"{f.what} | {f.fix}" for f in run_checks(None) if f.level == "warn" and "anonymous" in f.what]


async def test_doctor_warns_of_full_control_on_an_anonymous_broker(
    broker: Mosquitto, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    warned = _doctor_warnings(monkeypatch, tmp_path, broker.url, "full")
    assert len(warned) == 1 and "anyone" in warned[0] and "allow_anonymous false" in warned[0]
    assert _doctor_warnings(monkeypatch, tmp_path, broker.url, "stop") == []


async def test_doctor_is_content_with_full_control_on_a_broker_with_passwords(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    passwords = tmp_path / "passwd"
    passwords.write_text("")  # no users at all: nobody gets in without one
    closed = Mosquitto(tmp_path, extra_config=f"password_file {passwords}\n")
    closed.config.write_text(closed.config.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    await closed.start()
    try:
        assert _doctor_warnings(monkeypatch, tmp_path, closed.url, "full") == []
        oks = [f.what for f in run_checks(None) if "refuses anonymous" in f.what]
        assert len(oks) == 1
    finally:
        await closed.stop()
