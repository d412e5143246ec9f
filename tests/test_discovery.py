"""The Home Assistant discovery payload, checked against the rules Home Assistant's MQTT
integration applies (``homeassistant/components/mqtt``, Core 2025.4: ``discovery.py``,
``schemas.py``, the platforms' schemas), written out in ``ha_rules`` below.

The rules that matter and were got wrong before (issue 13): a device-level ``qos`` is not passed
down to the components (it is not among ``SHARED_OPTIONS``), so each component needs its own; a
component left out of a later payload stays in Home Assistant and keeps working, only a
platform-only entry ``{"p": ...}`` deletes it; entity names are shown after the device name
(``has_entity_name``), so they must not repeat it.
"""

from __future__ import annotations

import json

import pytest
from ha_rules import ha_rules

from retrotread.api.discovery import (
    EVENT_TYPES,
    PHASES,
    device_config,
    diagnostic_keys,
    discovery_payload,
    drives_belt,
    help_url,
    published,
)
from retrotread.daemon.plans import PRESETS
from retrotread.daemon.snapshot import StateSnapshot, StopView
from retrotread.safety.envelope import Envelope

BASE = "retrotread/gym-3"


def snapshot(
    mode: str = "reverse", envelope: tuple[float, float] | None = (0.8, 1.2), driver: str = "csafe:///dev/ttyUSB0"
) -> StateSnapshot:
    return StateSnapshot(
        id="gym-3",
        mode=mode,  # type: ignore[arg-type]
        driver=driver,
        connected=True,
        armed=True,
        belt=None,
        target_mph=None,
        envelope_mph=envelope,
        envelope_kmh=Envelope.reverse(*envelope).kmh if envelope is not None else None,  # as the daemon makes it
        stop=StopView(latched=False),
        session=None,
        ts="2026-11-21T15:03:46.423Z",
        seq=1,
    )


CASES = [
    ("reverse", (0.8, 1.2), "csafe:///dev/ttyUSB0", "full"),
    ("reverse", (0.8, 1.2), "csafe:///dev/ttyUSB0", "stop"),
    ("deadmill", None, "pulse:///dev/ttyACM0", "full"),
    ("deadmill", None, "pulse:///dev/ttyACM0", "stop"),
    ("reverse", (0.8, 1.2), "none://", "full"),
]


@pytest.mark.parametrize(("mode", "envelope", "driver", "control"), CASES)
def test_every_payload_follows_home_assistants_rules(
    mode: str, envelope: tuple[float, float] | None, driver: str, control: str
) -> None:
    config = device_config(
        snapshot(mode, envelope, driver),
        base_topic=BASE,
        control=control,  # type: ignore[arg-type]
        configuration_url="http://gym-3.lan:8080/",
        support_url="https://example.org/retrotread/issues",
    )
    assert ha_rules(config) == []
    assert all(c["qos"] == 1 for c in config["cmps"].values())


def test_what_the_user_always_gets() -> None:
    """interfaces.md, Home Assistant: belt speed, distance, incline, moving, link, stop latched,
    stop reason, session phase, set, time remaining, ends at, mode and the event entity."""
    for mode, envelope, driver, control in CASES:
        cmps = device_config(snapshot(mode, envelope, driver), base_topic=BASE, control=control)["cmps"]  # type: ignore[arg-type]
        assert {
            "belt_speed",
            "distance",
            "incline",
            "moving",
            "link",
            "stop_latched",
            "stop_reason",
            "session_phase",
            "set",
            "time_remaining",
            "session_ends_at",
            "mode",
            "events",
        } <= set(cmps)
    cmps = device_config(snapshot(), base_topic=BASE)["cmps"]
    assert cmps["session_ends_at"]["device_class"] == "timestamp"
    assert cmps["session_ends_at"]["state_topic"] == f"{BASE}/timer"
    assert "idle" in cmps["session_phase"]["options"] and set(PHASES) == set(cmps["session_phase"]["options"])
    assert "'%d of %d'" in cmps["set"]["value_template"]
    events = cmps["events"]
    assert events["p"] == "event" and events["state_topic"] == f"{BASE}/event"
    assert {"estop", "set_started", "cue", "command_refused"} <= set(events["event_types"]) == set(EVENT_TYPES)
    assert "json_attributes_topic" in cmps["stop_reason"]


def test_control_stop_offers_only_the_stops() -> None:
    cmps = device_config(snapshot(), base_topic=BASE, control="stop")["cmps"]
    commanding = {k for k, c in cmps.items() if "command_topic" in c}
    assert commanding == {"emergency_stop", "stop"}
    assert cmps["emergency_stop"]["command_topic"] == f"{BASE}/cmd/estop"
    assert json.loads(cmps["emergency_stop"]["payload_press"]) == {"reason": "home-assistant"}


def test_control_full_offers_speed_reset_plan_and_the_session_buttons() -> None:
    cmps = device_config(snapshot(envelope=(0.9, 1.1)), base_topic=BASE, control="full")["cmps"]
    number = cmps["target_speed"]
    assert number["device_class"] == "speed" == cmps["belt_speed"]["device_class"]
    assert (number["min"], number["max"]) == (1.45, 1.77)  # 0.9..1.1 mph = 1.448..1.770 km/h, inwards
    assert number["unit_of_measurement"] == "km/h"
    assert number["command_template"] == '{"speed_kmh": {{ value }}}'  # the daemon converts (daemon/commands.py)
    assert cmps["reset"]["command_topic"] == f"{BASE}/cmd/reset"
    assert cmps["plan"]["options"] == list(PRESETS)
    assert cmps["plan"]["command_topic"] == cmps["plan"]["state_topic"] == f"{BASE}/plan"
    for action in ("start", "pause", "resume", "skip", "abort"):
        button = cmps[f"session_{action}"]
        assert button["command_topic"] == f"{BASE}/cmd/session"
        assert json.loads(button["payload_press"]) == {"action": action}


@pytest.mark.parametrize(
    ("mode", "envelope", "driver"), [("deadmill", None, "pulse:///dev/ttyACM0"), ("reverse", (0.8, 1.2), "none://")]
)
def test_s13_deadmill_and_none_never_offer_to_drive_or_stop_the_belt(
    mode: str, envelope: tuple[float, float] | None, driver: str
) -> None:
    snap = snapshot(mode, envelope, driver)
    assert not drives_belt(snap)
    for control in ("stop", "full"):
        cmps = device_config(snap, base_topic=BASE, control=control)["cmps"]
        assert not {"emergency_stop", "stop", "target_speed", "reset"} & set(cmps)
        assert not [c for c in cmps.values() if str(c.get("command_topic", "")).endswith(("/estop", "/stop", "/speed"))]


def test_a_component_gone_is_sent_once_as_a_platform_only_entry() -> None:
    """HA deletes a component only when it comes as ``{"p": platform}``; ``published`` reads what
    a payload defines, so the entries it sends to delete are never deleted again."""
    before = published(device_config(snapshot(), base_topic=BASE, control="full"))
    assert before["emergency_stop"] == "button" and before["target_speed"] == "number"
    now = device_config(snapshot("deadmill", None), base_topic=BASE, control="full", removed=before)
    cmps = now["cmps"]
    for key in ("emergency_stop", "stop", "reset"):
        assert cmps[key] == {"p": "button"}
    assert cmps["target_speed"] == {"p": "number"}
    assert cmps["plan"]["p"] == "select" and len(cmps["plan"]) > 1  # still offered: not removed
    assert ha_rules(now) == []
    after = published(now)
    assert not {"emergency_stop", "stop", "reset", "target_speed"} & set(after)
    again = device_config(snapshot("deadmill", None), base_topic=BASE, control="full", removed=after)
    assert not [k for k, c in again["cmps"].items() if set(c) == {"p"}]
    assert published({"cmps": "x"}) == {} and published(None) == {}


def test_the_device_is_the_treadmill_and_the_origin_is_us() -> None:
    config = device_config(snapshot(), base_topic=BASE, support_url="https://example.org/help", sw_version="1.2.3")
    dev = config["dev"]
    assert dev["identifiers"] == ["retrotread_gym-3"] and dev["name"] == "gym-3"
    assert (dev["manufacturer"], dev["model"], dev["sw_version"]) == ("unknown", "unknown", "1.2.3")
    assert "configuration_url" not in dev
    assert config["o"] == {"name": "retrotread", "sw_version": "1.2.3", "support_url": "https://example.org/help"}
    known = device_config(
        snapshot(), base_topic=BASE, maker="Life Fitness", model="95T", configuration_url="http://gym-3.lan:8080/"
    )["dev"]
    assert (known["manufacturer"], known["model"], known["configuration_url"]) == (
        "Life Fitness",
        "95T",
        "http://gym-3.lan:8080/",
    )
    assert config["availability_topic"] == f"{BASE}/status"
    assert json.loads(discovery_payload(snapshot(), base_topic=BASE)) == device_config(snapshot(), base_topic=BASE)


def test_a_bad_control_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="control"):
        device_config(snapshot(), base_topic=BASE, control="some")  # type: ignore[arg-type]


CSAFE_DEVICE: dict[str, object] = {
    "maker": "CSAFE manufacturer 82",
    "model": "class 3 model 1",
    "firmware": "1.0",
    "units": "mph",
    "hours_of_use": 8710.0,
    "odometer_m": 41233500.0,
    "error_code": 0,
    "service_code": 0,
}


def _with_device(device: dict[str, object] | None) -> StateSnapshot:
    return snapshot().model_copy(update={"device": device})


def test_the_machines_own_data_are_diagnostic_sensors() -> None:
    """Issue 14.4: what the driver read from the machine becomes a diagnostic entity each, reading
    the snapshot's ``device`` block, with the device class Home Assistant converts (hours, km)."""
    cmps = device_config(_with_device(CSAFE_DEVICE), base_topic=BASE)["cmps"]
    diag = {k: c for k, c in cmps.items() if c.get("entity_category") == "diagnostic" and k not in ("link", "mode")}
    assert set(diag) == {"firmware", "console_units", "hours_of_use", "odometer", "error_code", "service_code"}
    assert all(c["state_topic"] == f"{BASE}/state" and c["p"] == "sensor" for c in diag.values())
    assert "'firmware'" in diag["firmware"]["value_template"]
    assert (diag["hours_of_use"]["device_class"], diag["hours_of_use"]["unit_of_measurement"]) == ("duration", "h")
    assert (diag["odometer"]["device_class"], diag["odometer"]["unit_of_measurement"]) == ("distance", "km")
    assert "m / 1000" in diag["odometer"]["value_template"]
    assert diag["odometer"]["state_class"] == diag["hours_of_use"]["state_class"] == "total_increasing"
    assert diag["console_units"]["options"] == ["mph", "km/h"]
    assert ha_rules(device_config(_with_device(CSAFE_DEVICE), base_topic=BASE, control="full")) == []


@pytest.mark.parametrize(
    "device",
    [None, {}, {"maker": "Horizon", "model": "7.0AT"}, {"firmware": None, "units": "furlongs", "maker": "x"}],
)
def test_no_diagnostic_sensor_for_what_the_driver_does_not_know(device: dict[str, object] | None) -> None:
    """Nothing invented: a simulator (no ``device``) or an FTMS machine that named only its maker
    and model gets no firmware, counter or code sensors, and a unit HA's enum would refuse none."""
    cmps = device_config(_with_device(device), base_topic=BASE)["cmps"]
    diag = {k for k, c in cmps.items() if c.get("entity_category") == "diagnostic"}
    assert diag == {"link", "mode"}


def test_diagnostic_keys_name_the_components_a_device_block_makes() -> None:
    """What the bridge compares to know a reconnect read more of the machine (discovery again)."""
    assert diagnostic_keys(None) == frozenset() == diagnostic_keys({"maker": "Horizon"})
    full = device_config(_with_device(CSAFE_DEVICE), base_topic=BASE)["cmps"]
    assert diagnostic_keys(CSAFE_DEVICE) == {k for k in full if k not in ("link", "mode")} & {
        k for k, c in full.items() if c.get("entity_category") == "diagnostic"
    }
    assert diagnostic_keys({"firmware": "1.0"}) == {"firmware"}


def test_a_serial_number_goes_in_the_device_block_too() -> None:
    config = device_config(_with_device({"serial": "SN-0042", "firmware": "2.1"}), base_topic=BASE)
    assert config["dev"]["serial_number"] == "SN-0042"
    assert {"serial_number", "firmware"} <= set(config["cmps"])
    assert "serial_number" not in device_config(snapshot(), base_topic=BASE)["dev"]
    assert ha_rules(config) == []


def test_support_url_is_the_daemons_own_help_page_beside_the_dashboard() -> None:
    """No public project address exists and none is invented: Home Assistant's "Visit support"
    opens ``/static/help.html`` on the dashboard; with no dashboard known, there is none."""
    config = device_config(snapshot(), base_topic=BASE, configuration_url="http://gym-3.lan:8080/")
    assert config["o"]["support_url"] == "http://gym-3.lan:8080/static/help.html"
    assert help_url("http://[::1]:8000") == "http://[::1]:8000/static/help.html"
    assert help_url(None) is None
    assert "support_url" not in device_config(snapshot(), base_topic=BASE)["o"]
    assert ha_rules(config) == []


def test_the_target_speed_is_published_in_the_unit_the_user_reads() -> None:
    """Seen on a real Core 2025.4: Home Assistant converts a number's unit only for temperature and
    volume flow (number/const.py UNIT_CONVERTERS), so a number in mph stayed in mph beside the belt
    speed sensor it showed in km/h. The number comes in km/h (Home Assistant's default metric
    system, where the sensor is shown in km/h too) with the envelope rounded inwards, and the
    command template turns it back into mph; ``speed_unit="mph"`` is for an imperial one."""
    cmps = device_config(snapshot(), base_topic=BASE, control="full")["cmps"]
    number, sensor = cmps["target_speed"], cmps["belt_speed"]
    assert (number["unit_of_measurement"], number["min"], number["max"]) == ("km/h", 1.29, 1.93)
    assert 0.8 <= 1.29 / 1.609344 and 1.93 / 1.609344 <= 1.2  # never outside the envelope
    assert sensor["unit_of_measurement"] == "mph"  # what the daemon publishes; HA in metric shows km/h
    assert "value_json.target_kmh" in number["value_template"]  # the daemon's own km/h, no sum in HA
    assert number["command_template"] == '{"speed_kmh": {{ value }}}'
    imperial = device_config(snapshot(), base_topic=BASE, control="full", speed_unit="mph")["cmps"]
    number, sensor = imperial["target_speed"], imperial["belt_speed"]
    assert (number["unit_of_measurement"], number["min"], number["max"]) == ("mph", 0.8, 1.2)
    assert number["command_template"] == '{"speed_mph": {{ value }}}'
    assert sensor["unit_of_measurement"] == "mph"
    with pytest.raises(ValueError, match="speed_unit"):
        device_config(snapshot(), base_topic=BASE, speed_unit="knots")  # type: ignore[arg-type]
