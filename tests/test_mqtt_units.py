"""The MQTT face's pure parts: broker URLs, topics, and the Home Assistant discovery payload."""

from __future__ import annotations

import json

import pytest

from retrotread.api.discovery import device_config, discovery_payload, discovery_topic
from retrotread.api.mqtt import BrokerAddress, Topics, parse_broker_url
from retrotread.daemon.snapshot import StateSnapshot, StopView
from retrotread.drivers.errors import ConfigError


def snapshot(mode: str = "reverse", envelope: tuple[float, float] | None = (0.8, 1.2)) -> StateSnapshot:
    return StateSnapshot(
        id="gym-3",
        mode=mode,  # type: ignore[arg-type]
        driver="csafe:///dev/ttyUSB0",
        connected=True,
        armed=True,
        belt=None,
        target_mph=None,
        envelope_mph=envelope,
        stop=StopView(latched=False),
        session=None,
        ts="2026-11-21T15:03:46.423Z",
        seq=1,
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://localhost", BrokerAddress("localhost", 1883)),
        ("mqtt://u:p%40ss@broker.lan:1884", BrokerAddress("broker.lan", 1884, "u", "p%40ss")),
        ("mqtts://broker.lan", BrokerAddress("broker.lan", 8883, tls=True)),
        ("mqtts://h:9000?ca=/etc/ca.pem", BrokerAddress("h", 9000, tls=True, ca_file="/etc/ca.pem")),
        ("mqtt://[::1]:1883/", BrokerAddress("::1", 1883)),
        ("mqtt://h?protocol=3.1.1", BrokerAddress("h", 1883, protocol="3.1.1")),
    ],
)
def test_broker_urls(url: str, expected: BrokerAddress) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://h",
        "mqtt://",
        "mqtt://h:99999",
        "mqtt://h/path",
        "mqtt://h?ca=/x",
        "mqtt://h?qos=2",
        "mqtt://h?protocol=4",
    ],
)
def test_bad_broker_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_broker_url(url)


def test_a_bad_url_never_shows_the_password() -> None:
    with pytest.raises(ConfigError) as err:
        parse_broker_url("mqtt://user:secret@h/oops")
    assert "secret" not in str(err.value)
    assert parse_broker_url("mqtts://user:secret@h").where == "mqtts://h:8883"


def test_a_missing_ca_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_broker_url("mqtts://h?ca=/nonexistent/ca.pem").tls_context()


@pytest.mark.parametrize("tid", ["a/b", "+", "#", "", "x" * 65, "a b"])
def test_topic_levels_cannot_escape_their_treadmill(tid: str) -> None:
    with pytest.raises(ConfigError):
        Topics.of(tid)


def test_topics() -> None:
    t = Topics.of("gym-3", "floor/retrotread", "ha")
    assert (t.status, t.commands, t.result) == (
        "floor/retrotread/gym-3/status",
        "floor/retrotread/gym-3/cmd/+",
        "floor/retrotread/gym-3/cmd/result",
    )
    assert (t.discovery, t.ha_status) == ("ha/device/gym-3/config", "ha/status")
    with pytest.raises(ConfigError):
        Topics.of("x", "a/#")


def test_discovery_reverse_mode_has_controls_within_the_envelope() -> None:
    config = device_config(snapshot(envelope=(0.9, 1.1)), base_topic="retrotread/gym-3", support_url="https://x")
    assert config["dev"]["identifiers"] == ["retrotread_gym-3"]
    assert config["o"] == {"name": "retrotread", "sw_version": config["dev"]["sw_version"], "support_url": "https://x"}
    cmps = config["cmps"]
    assert {
        "belt_speed",
        "incline",
        "distance",
        "moving",
        "stop_latched",
        "target_speed",
        "emergency_stop",
        "reset",
        "set_phase",
        "set_number",
        "set_remaining",
    } <= set(cmps)
    assert all(c["unique_id"].startswith("retrotread_gym-3_") and c["p"] for c in cmps.values())
    assert (cmps["target_speed"]["min"], cmps["target_speed"]["max"], cmps["target_speed"]["step"]) == (0.9, 1.1, 0.1)
    assert cmps["target_speed"]["command_template"] == '{"speed_mph": {{ value }}}'
    assert cmps["belt_speed"]["device_class"] == "speed" and cmps["belt_speed"]["unit_of_measurement"] == "mph"
    assert cmps["stop_latched"]["device_class"] == "problem"
    assert json.loads(cmps["emergency_stop"]["payload_press"]) == {"reason": "home-assistant"}
    assert discovery_topic("gym-3") == "homeassistant/device/gym-3/config"
    assert json.loads(discovery_payload(snapshot(), base_topic="retrotread/gym-3")) == device_config(
        snapshot(), base_topic="retrotread/gym-3"
    )


def test_s13_discovery_in_deadmill_mode_offers_no_controls() -> None:
    cmps = device_config(snapshot("deadmill", None), base_topic="retrotread/gym-3")["cmps"]
    assert not {"target_speed", "emergency_stop", "stop", "reset"} & set(cmps)
    assert "belt_speed" in cmps and "set_remaining" in cmps


def test_s16_discovery_with_a_token_leaves_out_what_needs_it() -> None:
    cmps = device_config(snapshot(), base_topic="retrotread/gym-3", token_required=True)["cmps"]
    assert "target_speed" not in cmps and "reset" not in cmps
    assert "emergency_stop" in cmps and "stop" in cmps
