"""Discovery against a real Home Assistant Core (issue 13 point 4; issue 14 point 4's HA part).

Opt-in: ``RETROTREAD_HA_CORE=1 .venv/bin/pytest tests/test_ha_core.py``. The first run builds
Home Assistant's venv (pyenv's Python 3.13, ``homeassistant`` from PyPI; a few minutes), later
runs reuse it (``~/.cache/retrotread/ha-core-<version>/``). One Home Assistant and one private
Mosquitto serve the module (``ha_core.py``); each test runs real ``retrotread run`` daemons on
them under an id of its own and checks what a user would see, through Home Assistant's REST API
(states, services) and its websocket (state changes, the entity and device registries).

The last test reads Home Assistant's whole log for complaints about our payloads, so it runs after
the others (pytest keeps the file's order).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import Daemon
from ha_core import (
    ENABLE_ENV,
    HA_VERSION,
    RETROTREAD,
    Broker,
    HomeAssistant,
    MqttTap,
    enabled,
    ensure_venv,
    retrotread_run,
    run_cli,
)

from retrotread.drivers.units import KMH_PER_MPH

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not enabled(),
        reason=f"a real Home Assistant Core {HA_VERSION} (built once from PyPI): set {ENABLE_ENV}=1 to run it",
    ),
    # The first run builds Home Assistant's venv in the first test's set-up.
    pytest.mark.timeout(1200),
]

MOTORIZED = ("--driver", "sim://motorized?rate_hz=20", "--mode", "reverse")
MANUAL = ("--driver", "sim://manual?rate_hz=20", "--mode", "deadmill")
FULL = {"RETROTREAD_MQTT__CONTROL": "full"}

# What a user always gets (interfaces.md): (platform, entity name) → device class (None: none).
ALWAYS = {
    ("sensor", "Belt speed"): "speed",
    ("sensor", "Incline"): None,
    ("sensor", "Distance"): "distance",
    ("binary_sensor", "Belt moving"): "moving",
    ("binary_sensor", "Link"): "connectivity",
    ("binary_sensor", "Stop latched"): "problem",
    ("sensor", "Stop reason"): None,
    ("sensor", "Session phase"): "enum",
    ("sensor", "Set"): None,
    ("sensor", "Time remaining"): "duration",
    ("sensor", "Session ends at"): "timestamp",
    ("sensor", "Mode"): "enum",
    ("event", "Events"): None,
}
STOPS = {("button", "Emergency stop"), ("button", "Stop belt")}
DRIVING = {("number", "Target speed"), ("button", "Reset stop")}
SESSION = {("select", "Plan")} | {
    ("button", n) for n in ("Start session", "Pause session", "Resume session", "Skip phase", "Abort session")
}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def eid(tid: str, platform: str, name: str) -> str:
    """The entity id Home Assistant makes with has_entity_name: device name, then entity name."""
    return f"{platform}.{slug(tid)}_{slug(name)}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


@pytest.fixture(scope="module")
def ha(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeAssistant]:
    hass = ensure_venv()
    home = HomeAssistant(hass, tmp_path_factory.mktemp("ha-config"), broker.port)
    home.start()
    yield home
    home.stop()
    home.http.close()


@pytest.fixture
def tap(broker: Broker) -> Iterator[MqttTap]:
    t = MqttTap(broker.port, "retrotread/#", "homeassistant/#")
    yield t
    t.close()


def ours(ha: HomeAssistant, tid: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in ha.states().items() if k.split(".", 1)[1].startswith(slug(tid) + "_")}


def wait_entities(ha: HomeAssistant, tid: str, wanted: set[tuple[str, str]], within: float = 30) -> dict[str, Any]:
    """Until every wanted entity exists and is available (the daemon's state has arrived)."""
    ids = {eid(tid, p, n) for p, n in wanted}
    return dict(
        ha.until(
            lambda: ours(ha, tid),
            lambda s: ids <= set(s) and all(s[i]["state"] != "unavailable" for i in ids),
            within,
            f"{sorted(ids)} available",
        )
    )


def press(ha: HomeAssistant, tid: str, name: str) -> None:
    answer = ha.service("button", "press", entity_id=eid(tid, "button", name))
    assert answer.status_code == 200, answer.text


def refused(ha: HomeAssistant, tid: str, since: int, rule: str | None = None) -> dict[str, Any]:
    """The next ``command_refused`` the event entity shows, from websocket change ``since`` on."""
    assert ha.ws is not None
    events = eid(tid, "event", "Events")
    _, new = ha.ws.wait_change(
        lambda e, s: (
            e == events
            and s is not None
            and s["attributes"].get("event_type") == "command_refused"
            and (rule is None or s["attributes"].get("rule") == rule)
        ),
        since=since,
    )
    assert new is not None
    return dict(new["attributes"])


def start_belt(ha: HomeAssistant, d: Daemon, mph: float = 1.0) -> None:
    """Over HTTP, asked again while S4 refuses it (the belt must read 0 for 1 s after connecting)."""
    answer = ha.until(
        lambda: d.post("/api/v1/belt/start", {"speed_mph": mph}),
        lambda r: not (r.status_code == 409 and r.json().get("rule") == "S4"),
        what="start past S4",
    )
    assert answer.status_code == 202, answer.text
    d.until(lambda s: s["belt"]["moving"])


def test_stop_control_what_a_user_sees(ha: HomeAssistant, broker: Broker, tap: MqttTap) -> None:
    """``mqtt.control = "stop"`` (the default): the sensors with their device classes, names after
    the device (has_entity_name), the device block, the idle timer, only the two stops; a refused
    command on the event entity; Stop belt stops it; Emergency stop latches, sent at QoS 1."""
    tid = "ha-stop"
    assert ha.ws is not None
    with retrotread_run(broker, tid, *MOTORIZED) as d:
        states = wait_entities(ha, tid, set(ALWAYS) | STOPS)
        assert set(states) == {eid(tid, p, n) for p, n in set(ALWAYS) | STOPS}, "only the stops may command"
        for (platform, name), device_class in ALWAYS.items():
            attributes = states[eid(tid, platform, name)]["attributes"]
            assert attributes.get("device_class") == device_class, (name, attributes)
            assert attributes["friendly_name"] == f"{tid} {name}"  # the device's name once, then the entity's
        speed = states[eid(tid, "sensor", "Belt speed")]
        assert speed["attributes"]["unit_of_measurement"] == "km/h"  # Home Assistant in metric
        assert float(speed["state"]) == 0.0
        # The idle timer at start-up: no session, nothing counting.
        assert states[eid(tid, "sensor", "Session phase")]["state"] == "idle"
        for name in ("Set", "Time remaining", "Session ends at"):
            assert states[eid(tid, "sensor", name)]["state"] == "unknown", name
        assert states[eid(tid, "sensor", "Stop reason")]["state"] == "none"
        assert states[eid(tid, "sensor", "Mode")]["state"] == "reverse"
        registry = ha.entities()
        link = registry[eid(tid, "binary_sensor", "Link")]
        assert link["entity_category"] == "diagnostic" and link["unique_id"] == f"retrotread_{tid}_link"
        assert registry[eid(tid, "sensor", "Mode")]["entity_category"] == "diagnostic"
        # The simulator says nothing of itself: no diagnostic sensor is invented for it.
        assert not [e for e in registry if e.startswith(f"sensor.{slug(tid)}_") and "firmware" in e]
        device = ha.device(f"retrotread_{tid}")
        assert device is not None
        assert (device["name"], device["manufacturer"], device["model"]) == (tid, "unknown", "unknown")
        assert device["sw_version"] == metadata.version("retrotread")
        assert device["configuration_url"] == d.url + "/"
        # The origin as Home Assistant read it (its discovery log line): "Visit support" is our help page.
        needle = f"support URL: {d.url}/static/help.html"
        ha.until(ha.log, lambda text: needle in text, what="the origin's support URL in Home Assistant's log")

        # A command the policy does not take: refused, and Home Assistant's event entity says why.
        mark = len(ha.ws.changes)
        tap.publish(f"retrotread/{tid}/cmd/start", json.dumps({"speed_mph": 1.0}))
        event = refused(ha, tid, mark)
        assert event["cmd"] == "start" and "mqtt.control" in event["reason"], event

        start_belt(ha, d)
        press(ha, tid, "Stop belt")
        d.until(lambda s: not s["belt"]["moving"])

        mark = len(tap.messages)
        press(ha, tid, "Emergency stop")
        d.until(lambda s: s["stop"]["latched"])
        _, payload, qos, retained = tap.wait(f"retrotread/{tid}/cmd/estop", since=mark)
        assert qos == 1 and not retained, "the stop leaves Home Assistant at QoS 1"
        assert json.loads(payload) == {"reason": "home-assistant"}
        ha.until(lambda: ha.state(eid(tid, "binary_sensor", "Stop latched")), lambda s: s["state"] == "on")
        reason = ha.until(lambda: ha.state(eid(tid, "sensor", "Stop reason")), lambda s: s["state"] != "none")
        assert reason["attributes"]["latched"] is True and re.search(r"\(S\d+\)$", reason["state"]), reason


def test_full_control_number_plan_session_and_reset(ha: HomeAssistant, broker: Broker, tap: MqttTap) -> None:
    """``mqtt.control = "full"``: the target speed number in km/h (Home Assistant in metric) sends
    the daemon the right mph; the plan select and the session buttons run a session; a session is
    shown as set "2 of 3" with its end time; cues reach the event entity; a reset within 2 s is
    refused with its rule, and a later one clears the stop."""
    tid = "ha-full"
    assert ha.ws is not None
    with retrotread_run(broker, tid, *MOTORIZED, env=FULL) as d:
        states = wait_entities(ha, tid, set(ALWAYS) | STOPS | DRIVING | SESSION)
        assert set(states) == {eid(tid, p, n) for p, n in set(ALWAYS) | STOPS | DRIVING | SESSION}
        number = states[eid(tid, "number", "Target speed")]["attributes"]
        speed_unit = states[eid(tid, "sensor", "Belt speed")]["attributes"]["unit_of_measurement"]
        assert number["unit_of_measurement"] == speed_unit == "km/h", (number, speed_unit)
        assert (number["min"], number["max"]) == (1.29, 1.93)  # the envelope 0.8..1.2 mph, inwards

        start_belt(ha, d)
        mark = len(tap.messages)
        # 1.7 km/h: a speed on the simulator's 0.1 km/h grid, so the daemon keeps it as it is.
        answer = ha.service("number", "set_value", entity_id=eid(tid, "number", "Target speed"), value=1.7)
        assert answer.status_code == 200, answer.text
        _, sent, _, _ = tap.wait(f"retrotread/{tid}/cmd/speed", since=mark)
        assert json.loads(sent) == {"speed_kmh": 1.7}, sent  # the number's own unit; the daemon converts
        target = d.until(lambda s: s["target_mph"] is not None and abs(s["target_mph"] - 1.0) > 0.01)
        assert abs(target["target_mph"] - 1.7 / KMH_PER_MPH) < 0.001, target
        shown = ha.until(lambda: ha.state(eid(tid, "number", "Target speed")), lambda s: s["state"] == "1.7")
        assert shown["attributes"]["unit_of_measurement"] == "km/h"
        press(ha, tid, "Stop belt")
        d.until(lambda s: not s["belt"]["moving"])

        # The plan select and the session buttons, pressed as a user does.
        answer = ha.service("select", "select_option", entity_id=eid(tid, "select", "Plan"), option="phase1")
        assert answer.status_code == 200, answer.text
        ha.until(lambda: ha.state(eid(tid, "select", "Plan")), lambda s: s["state"] == "phase1")
        press(ha, tid, "Start session")
        d.until(lambda s: s["session"] is not None and s["session"]["plan"] == "phase1")
        press(ha, tid, "Pause session")
        d.until(lambda s: s["session"]["paused"])
        press(ha, tid, "Resume session")
        d.until(lambda s: not s["session"]["paused"])
        phase = d.state()["session"]["phase"]
        press(ha, tid, "Skip phase")
        d.until(lambda s: s["session"] is None or s["session"]["phase"] != phase)
        press(ha, tid, "Abort session")
        d.until(lambda s: s["session"] is None or s["session"]["phase"] == "aborted")
        ha.until(lambda: ha.state(eid(tid, "sensor", "Session phase")), lambda s: s["state"] in ("aborted", "idle"))

        # A session of three short sets: "2 of 3", its end, and its cues on the event entity.
        mark = len(ha.ws.changes)
        began = datetime.now(UTC)
        tap.publish(f"retrotread/{tid}/cmd/session", json.dumps({"plan": "3x3s/1s,countdown=0s"}))
        ha.ws.wait_change(
            lambda e, s: e == eid(tid, "sensor", "Set") and s is not None and s["state"] == "2 of 3", since=mark
        )
        ends = ha.state(eid(tid, "sensor", "Session ends at"))
        assert ends is not None and ends["state"] not in ("unknown", "unavailable"), ends
        assert began < datetime.fromisoformat(ends["state"]) < began.replace(year=began.year + 1)
        _, cue = ha.ws.wait_change(
            lambda e, s: (
                e == eid(tid, "event", "Events") and s is not None and s["attributes"].get("event_type") == "cue"
            ),
            since=mark,
        )
        assert cue is not None and cue["attributes"]["text"], cue
        ha.ws.wait_change(
            lambda e, s: e == eid(tid, "sensor", "Session phase") and s is not None and s["state"] == "done",
            since=mark,
            within=40,
        )

        # Emergency stop, then an immediate reset: refused (S6), the event entity says so; later it works.
        press(ha, tid, "Emergency stop")
        d.until(lambda s: s["stop"]["latched"])
        mark = len(ha.ws.changes)
        press(ha, tid, "Reset stop")
        event = refused(ha, tid, mark, rule="S6")
        assert event["cmd"] == "reset" and event["reason"], event
        assert d.state()["stop"]["latched"]
        events, latched = eid(tid, "event", "Events"), eid(tid, "binary_sensor", "Stop latched")

        def answered(e: str, s: dict[str, Any] | None) -> bool:
            if s is None:
                return False
            return (e == latched and s["state"] == "off") or (
                e == events and s["attributes"].get("event_type") in ("command_refused", "reset")
            )

        def reset_pressed() -> bool:
            """One press, answered: refused again (S6, within 2 s of the stop) or the stop clears."""
            assert ha.ws is not None
            mark = len(ha.ws.changes)
            press(ha, tid, "Reset stop")
            ha.ws.wait_change(answered, since=mark)
            return not d.state()["stop"]["latched"]

        ha.until(reset_pressed, bool, within=20, what="a reset pressed after S6's 2 s")
        assert not d.state()["stop"]["latched"]
        ha.until(lambda: ha.state(eid(tid, "binary_sensor", "Stop latched")), lambda s: s["state"] == "off")


def test_csafe_console_data_as_diagnostic_sensors(ha: HomeAssistant, broker: Broker, tmp_path: Path) -> None:
    """Issue 14.4 in Home Assistant: a (simulated) CSAFE console's version, units and counters as
    diagnostic entities, and its maker and model in the device block."""
    tid = "ha-csafe"
    link = tmp_path / "ttyTREAD"
    command = [RETROTREAD, "sim-device", "csafe", "--link", str(link)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as device:
        try:
            assert device.stdout is not None and str(link) in device.stdout.readline()
            with retrotread_run(broker, tid, "--driver", f"csafe://{link}", "--mode", "reverse") as d:
                snapshot = d.until(lambda s: s["connected"] and s.get("device"))
                known = snapshot["device"]
                names = {
                    "Firmware": "firmware",
                    "Console units": "units",
                    "Hours of use": "hours_of_use",
                    "Odometer": "odometer_m",
                    "Error code": "error_code",
                    "Service code": "service_code",
                }
                wanted = {("sensor", n) for n, field in names.items() if field in known}
                assert {("sensor", "Firmware"), ("sensor", "Hours of use"), ("sensor", "Odometer")} <= wanted, known
                states = wait_entities(ha, tid, set(ALWAYS) | wanted)
                registry = ha.entities()
                for _, name in wanted:
                    assert registry[eid(tid, "sensor", name)]["entity_category"] == "diagnostic", name
                assert states[eid(tid, "sensor", "Firmware")]["state"] == known["firmware"]
                hours = states[eid(tid, "sensor", "Hours of use")]
                assert hours["attributes"]["unit_of_measurement"] == "h"
                assert float(hours["state"]) == float(known["hours_of_use"])
                odometer = states[eid(tid, "sensor", "Odometer")]
                assert odometer["attributes"]["unit_of_measurement"] == "km"
                assert abs(float(odometer["state"]) - known["odometer_m"] / 1000) < 0.05
                # Nothing the console does not say: no serial number sensor.
                assert "serial" not in known and eid(tid, "sensor", "Serial number") not in states
                dev = ha.device(f"retrotread_{tid}")
                assert dev is not None
                assert (dev["manufacturer"], dev["model"]) == (known["maker"], known["model"])
        finally:
            device.send_signal(signal.SIGTERM)


def test_a_mode_change_deletes_the_belt_controls(ha: HomeAssistant, broker: Broker) -> None:
    """Issue 13 (1): restarted in deadmill mode, the stop, emergency stop, target speed and reset
    are gone from Home Assistant (not left unavailable, not still pressable)."""
    tid = "ha-mode"
    with retrotread_run(broker, tid, *MOTORIZED, env=FULL):
        wait_entities(ha, tid, set(ALWAYS) | STOPS | DRIVING | SESSION)
    with retrotread_run(broker, tid, *MANUAL, env=FULL):
        gone = {eid(tid, p, n) for p, n in STOPS | DRIVING}
        ha.until(lambda: set(ours(ha, tid)), lambda ids: not ids & gone, 30, f"{sorted(gone)} deleted")
        assert not gone & set(ha.entities()), "deleted from the entity registry too"
        states = wait_entities(ha, tid, set(ALWAYS) | SESSION)
        assert states[eid(tid, "sensor", "Mode")]["state"] == "deadmill"


def test_home_assistants_birth_brings_discovery_back(ha: HomeAssistant, broker: Broker, tap: MqttTap) -> None:
    """Issue 13 (3): Home Assistant restarts while the retained discovery is gone; its birth message
    (``homeassistant/status`` = ``online``) makes the daemon publish it again, and the entities
    come back live (not restored from the registry as unavailable)."""
    tid = "ha-birth"
    topic = f"homeassistant/device/{tid}/config"
    with retrotread_run(broker, tid, *MOTORIZED):
        wait_entities(ha, tid, set(ALWAYS) | STOPS)
        ha.stop()
        tap.publish(topic, b"", retain=True)  # nobody is listening: the broker just forgets it
        mark = len(tap.messages)
        ha.start()
        birth = tap.wait("homeassistant/status", lambda p: p == b"online", since=mark)
        tap.wait(topic, lambda p: bool(p), since=tap.messages.index(birth))
        states = wait_entities(ha, tid, set(ALWAYS) | STOPS)
        assert not [s for s in states.values() if s["attributes"].get("restored")]
        assert states[eid(tid, "sensor", "Session phase")]["state"] == "idle"


def test_mqtt_forget_removes_the_device(ha: HomeAssistant, broker: Broker) -> None:
    tid = "ha-forget"
    with retrotread_run(broker, tid, *MOTORIZED):
        wait_entities(ha, tid, set(ALWAYS) | STOPS)
    assert ha.device(f"retrotread_{tid}") is not None
    out = run_cli("mqtt", "forget", "--mqtt", broker.url, "--id", tid)
    assert out.returncode == 0, out.stderr
    ha.until(lambda: ha.device(f"retrotread_{tid}"), lambda dev: dev is None, 30, "device removed")
    assert ours(ha, tid) == {}
    assert not [e for e in ha.entities() if e.split(".", 1)[1].startswith(slug(tid) + "_")]


def test_home_assistants_log_has_no_complaint_about_our_payloads(ha: HomeAssistant) -> None:
    """After everything above: no warning or error from the MQTT integration or the template
    engine (a template that did not render, a payload it refused, a discovery it could not use)."""
    complaints = [
        line
        for line in ha.log().splitlines()
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)
        and re.search(r"mqtt|template|discovery|retrotread|ha[-_](stop|full|csafe|mode|birth|forget)", line, re.I)
    ]
    assert complaints == [], "\n".join(complaints)
    assert "from external application retrotread" in ha.log()
