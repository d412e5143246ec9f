"""Which MQTT broker ``retrotread demo`` talks to, and the embedded one it starts when there is none.

In order (interfaces.md): the broker the user gave (``--mqtt URL``; ``none`` turns MQTT off), else
one already listening on 127.0.0.1:1883, else an embedded loopback broker (amqtt, the optional
``broker`` extra) bound to 127.0.0.1 only. Without the extra, MQTT is off and one line says how
to get a broker. ``demo_broker()`` is an async context manager: the embedded broker lives exactly
as long as the ``async with``.

This module must not be used by ``retrotread run``: a daemon under systemd talks to the broker it
is configured with, and must never open a listening socket the user did not ask for, nor bind
anything but loopback. amqtt speaks MQTT 3.1.1 only, so the bridge is told so in the URL (a
retained command is then recognized when it is delivered at subscribe time, the S16 case).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from retrotread.api.mqtt import parse_broker_url

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
MQTT_PORT = 1883
PROBE_S = 0.5  # a local broker answers a TCP connect at once; this only bounds a firewall's silence
INSTALL_HINT = "pip install 'retrotread[broker]' for an embedded one, or apt install mosquitto"


@dataclass(frozen=True, slots=True)
class BrokerChoice:
    url: str | None
    """The URL for ``MqttBridge``, or None: MQTT is off."""
    source: Literal["given", "local", "embedded", "off"]
    note: str
    """One line for the banner: where MQTT goes, or why it is off and how to turn it on."""


@contextlib.asynccontextmanager
async def demo_broker(url: str | None, *, host: str = LOOPBACK, port: int = MQTT_PORT) -> AsyncIterator[BrokerChoice]:
    """The broker for the demo; starts and stops an embedded one when needed (see the module doc)."""
    if url and url.strip().lower() == "none":
        yield BrokerChoice(None, "off", "MQTT: off (--mqtt none)")
        return
    if url:
        yield BrokerChoice(url, "given", f"MQTT: {parse_broker_url(url).where}")
        return
    local = f"mqtt://{host}:{port}"
    if await _listening(host, port):
        yield BrokerChoice(local, "local", f"MQTT: the broker already listening on {host}:{port}")
        return
    try:
        amqtt_broker = importlib.import_module("amqtt.broker")
    except ImportError:
        yield BrokerChoice(None, "off", f"MQTT: off (no broker on {host}:{port}; {INSTALL_HINT})")
        return
    for name in ("amqtt", "transitions"):
        # amqtt narrates every connection at INFO; the demo's log is for the treadmill.
        logging.getLogger(name).setLevel(logging.WARNING)
    broker = amqtt_broker.Broker(_embedded_config(host, port))
    try:
        await broker.start()
    except Exception as exc:  # amqtt's BrokerError, or an OSError when the port was taken meanwhile
        yield BrokerChoice(None, "off", f"MQTT: off (embedded broker on {host}:{port} failed: {exc})")
        return
    try:
        yield BrokerChoice(
            f"{local}?protocol=3.1.1", "embedded", f"MQTT: embedded loopback broker on {host}:{port} (amqtt)"
        )
    finally:
        await broker.shutdown()


def _embedded_config(host: str, port: int) -> dict[str, Any]:
    if host not in (LOOPBACK, "::1", "localhost"):
        raise ValueError(f"the embedded broker binds loopback only, not {host!r}")
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        # Anonymous on loopback only; no $SYS publisher or packet logger.
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def _listening(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(PROBE_S):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def subscribe_hint(url: str, treadmill_id: str, base_topic_prefix: str = "retrotread") -> str:
    """A ``mosquitto_sub`` line that shows everything one treadmill publishes (no password in it)."""
    b = parse_broker_url(url)
    argv = ["mosquitto_sub", "-h", b.host, "-p", str(b.port), "-t", f"{base_topic_prefix}/{treadmill_id}/#", "-v"]
    if b.username:
        argv += ["-u", b.username, "-P", "PASSWORD"]
    if b.tls:
        argv += ["--cafile", b.ca_file] if b.ca_file else ["--capath", "/etc/ssl/certs"]
    return shlex.join(argv)
