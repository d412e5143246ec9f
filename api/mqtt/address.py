"""Where the broker is: ``mqtt://`` and ``mqtts://`` URLs taken apart, and the socket options every
client of ours uses."""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import aiomqtt

from retrotread.drivers.errors import ConfigError, TreadError

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
TIMEOUT_S = 5.0  # connect, subscribe, and the acknowledgement of one QoS 1 publish
# paho leaves Nagle's algorithm on: a small packet written while the previous one is unacknowledged
# then waits for the peer's delayed ACK (40 ms on Linux). Telemetry and results are small packets.
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class BrokerError(TreadError):
    """The MQTT broker could not be reached, or refused us (for one-shot calls such as ``forget``)."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """An ``mqtt://`` or ``mqtts://`` URL, taken apart. ``protocol`` None means MQTT 5, else 3.1.1."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    protocol: Literal["5", "3.1.1"] | None = None

    @property
    def where(self) -> str:
        """The URL without credentials, for logs and errors."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"MQTT CA file {self.ca_file!r}: {exc}") from exc


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://[user[:pass]@]host[:port]`` (1883) or ``mqtts://...`` (8883, TLS with the system CAs).

    Query options: ``ca=PATH`` (mqtts only: trust this CA file instead), ``protocol=5|3.1.1``
    (default: MQTT 5, falling back to 3.1.1 when the broker refuses it).
    """
    shown = _redact(url)
    hint = "expected mqtt://[user:pass@]host[:port] or mqtts://...[?ca=PATH]"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"MQTT URL {shown!r}: {exc}; {hint}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"MQTT URL {shown!r}: unknown scheme {parts.scheme!r}; {hint}")
    if not parts.hostname:
        raise ConfigError(f"MQTT URL {shown!r}: no host; {hint}")
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(f"MQTT URL {shown!r}: unexpected path {parts.path!r}; {hint}")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigError(f"MQTT URL {shown!r}: malformed query {parts.query!r}; {hint}") from None
    unknown = sorted(set(query) - {"ca", "protocol"})
    if unknown:
        raise ConfigError(f"MQTT URL {shown!r}: unknown option {unknown[0]!r}; allowed: ca, protocol")
    tls = parts.scheme == "mqtts"
    ca = query.get("ca", [None])[-1]
    if ca is not None and not tls:
        raise ConfigError(f"MQTT URL {shown!r}: ca= needs mqtts://")
    protocol: Literal["5", "3.1.1"] | None = None
    match query.get("protocol", [None])[-1]:
        case None:
            pass
        case "5":
            protocol = "5"
        case "3.1.1":
            protocol = "3.1.1"
        case other:
            raise ConfigError(f"MQTT URL {shown!r}: protocol={other!r}; allowed: 5, 3.1.1")
    return BrokerAddress(
        host=parts.hostname,
        port=port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
        username=parts.username or None,
        password=parts.password,
        tls=tls,
        ca_file=ca or None,
        protocol=protocol,
    )


def _redact(url: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def plain_client(
    broker: BrokerAddress, identifier: str, tls_context: ssl.SSLContext | None, timeout_s: float = TIMEOUT_S
) -> aiomqtt.Client:
    """An MQTT 3.1.1 client of ``broker`` with a clean session, no will and our socket options: the
    links that are no treadmill (the floor view, ``forget``), with no presence of their own to keep."""
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=True,
        timeout=timeout_s,
        tls_context=tls_context,
        socket_options=NO_DELAY,
    )
