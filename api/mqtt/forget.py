"""Removing a treadmill from a broker for good (``retrotread mqtt forget``)."""

from __future__ import annotations

import os

import aiomqtt

from retrotread.api.mqtt.address import TIMEOUT_S, BrokerError, parse_broker_url, plain_client
from retrotread.api.mqtt.topics import Topics


async def forget(
    url: str,
    treadmill_id: str,
    *,
    base_topic_prefix: str = "retrotread",
    discovery_prefix: str = "homeassistant",
    timeout_s: float = TIMEOUT_S,
) -> None:
    """Remove a treadmill from the broker: empty retained payloads on its discovery config (Home
    Assistant deletes the device), ``state``, ``timer``, ``plan`` and ``status``. For a daemon that is gone
    for good; a running one puts them back when it next (re)connects. Raises ``BrokerError``."""
    broker = parse_broker_url(url)
    topics = Topics.of(treadmill_id, base_topic_prefix, discovery_prefix)
    # Never the daemon's own id: the broker would disconnect the daemon to let us in.
    identifier = f"retrotread-{treadmill_id}-forget-{os.getpid()}"
    client = plain_client(broker, identifier, broker.tls_context(), timeout_s)
    try:
        async with client:
            for topic in (topics.discovery, topics.state, topics.timer, topics.plan, topics.status):
                await client.publish(topic, b"", qos=1, retain=True)
    except aiomqtt.MqttError as exc:
        raise BrokerError(f"MQTT broker {broker.where}: {exc}") from exc
