"""The MQTT face's pure parts: broker URLs, topics, and the Home Assistant discovery payload."""

from __future__ import annotations

import pytest

from retrotread.api.mqtt import BrokerAddress, Topics, parse_broker_url
from retrotread.drivers.errors import ConfigError


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


# The discovery payload's own tests are in test_discovery.py (checked against Home Assistant's rules).
