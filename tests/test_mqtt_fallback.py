"""The MQTT bridge against a broker that speaks only MQTT 3.1.1: it falls back, unless the URL insists.

Mosquitto speaks both versions, so the broker here is the real private Mosquitto behind
``OnlyMqtt311``, a TCP proxy that plays a 3.1.1-only broker: it reads each connection's CONNECT,
refuses protocol level 5 with a CONNACK and closes, and pipes any other level through untouched.
Two refusals, both in the specs' bytes:

- MQTT 3.1.1, 3.1.2.2 and 3.2.2.3: a server that does not support the level answers return code
  0x01 ("unacceptable protocol version"): ``20 02 00 01``. This is what a 3.1.1-only broker sends
  to an MQTT 5 CONNECT, since it cannot know the later format.
- MQTT 5, 3.1.2.2 and 3.2.2.2: reason code 0x84 ("Unsupported Protocol Version") with an empty
  property list: ``20 03 00 84 00``.

The daemon under test is the real process (``helpers.mqtt_daemon``); what it publishes is read by a
separate client on Mosquitto itself, and what it did to the belt from the simulator's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from helpers import MqttDaemon, heard, mqtt_daemon, watching
from mqtt_broker import Mosquitto, broker_fixture  # noqa: F401  (the ``broker`` fixture)

CONNECT = 0x1
REFUSED_311 = bytes([0x20, 0x02, 0x00, 0x01])  # CONNACK: no session, return code 0x01
REFUSED_5 = bytes([0x20, 0x03, 0x00, 0x84, 0x00])  # CONNACK: no session, reason 0x84, no properties
FALLBACK_LINE = r"does not speak MQTT 5; using 3\.1\.1"


async def read_packet(reader: asyncio.StreamReader) -> bytes:
    """One whole MQTT control packet: the fixed header, its Remaining Length (1-4 bytes) and the rest."""
    header = await reader.readexactly(1)
    length_bytes = b""
    length, shift = 0, 0
    while True:
        byte = await reader.readexactly(1)
        length_bytes += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80 or len(length_bytes) == 4:
            break
    return header + length_bytes + await reader.readexactly(length)


def protocol_level(packet: bytes) -> int | None:
    """The Protocol Level of a CONNECT (4 for 3.1.1, 5 for 5), or None for any other packet."""
    if packet[0] >> 4 != CONNECT:
        return None
    at = 1
    while packet[at] & 0x80:  # past the Remaining Length
        at += 1
    at += 1
    name_length = int.from_bytes(packet[at : at + 2], "big")
    return packet[at + 2 + name_length]


class OnlyMqtt311:
    """A broker that refuses MQTT 5 with ``refusal`` and serves 3.1.1 (the real one, behind it)."""

    def __init__(self, upstream_port: int, refusal: bytes) -> None:
        self.upstream_port = upstream_port
        self.refusal = refusal
        self.levels: list[int | None] = []
        """The protocol level of each connection's first packet, in order."""
        self._seen = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def __aenter__(self) -> OnlyMqtt311:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.drop()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def drop(self) -> None:
        """Cut every connection through the proxy, as a network that failed would."""
        for writer in list(self._writers):
            writer.close()

    async def wait_connects(self, count: int, within: float = 20.0) -> list[int | None]:
        """Until ``count`` connections have sent their first packet; their levels."""
        async with asyncio.timeout(within):
            while len(self.levels) < count:
                self._seen.clear()
                await self._seen.wait()
        return list(self.levels)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await self._relay(reader, writer)
        finally:
            self._writers.discard(writer)
            writer.close()
            self._handlers.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await read_packet(reader)
        level = protocol_level(first)
        self.levels.append(level)
        self._seen.set()
        if level == 5:
            writer.write(self.refusal)
            await writer.drain()
            return  # the server closes the connection after a refusal (both specs)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers.add(up_writer)
        try:
            up_writer.write(first)
            # Either side ending ends both: the first pipe to finish cuts the other one.
            pipes = [asyncio.ensure_future(_pipe(reader, up_writer)), asyncio.ensure_future(_pipe(up_reader, writer))]
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._writers.discard(up_writer)
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()


@contextlib.asynccontextmanager
async def daemon_behind(
    broker: Mosquitto, refusal: bytes, tid: str, query: str = ""
) -> AsyncIterator[tuple[OnlyMqtt311, MqttDaemon]]:
    """The proxy in front of ``broker`` and a real daemon whose MQTT URL is the proxy's (plus ``query``)."""
    async with OnlyMqtt311(broker.port, refusal) as proxy, mqtt_daemon(proxy.url + query, tid) as daemon:
        yield proxy, daemon


@pytest.mark.slow
@pytest.mark.parametrize("refusal", [REFUSED_311, REFUSED_5], ids=["return-code-0x01", "reason-0x84"])
async def test_a_broker_that_refuses_mqtt5_is_spoken_to_in_311_and_the_daemon_works_through_it(
    broker: Mosquitto, refusal: bytes
) -> None:
    tid = "fb"
    base = f"retrotread/{tid}"
    async with (
        watching(broker, f"{base}/status", f"{base}/state", f"{base}/telemetry", f"{base}/cmd/result") as w,
        daemon_behind(broker, refusal, tid) as (proxy, daemon),
    ):
        # Online, through a 3.1.1 link: the one MQTT 5 attempt was refused, the next was 3.1.1.
        await w.wait(f"{base}/status", lambda s: s == "online", within=20)
        assert proxy.levels == [5, 4]
        await daemon.log.wait_for(FALLBACK_LINE)
        # Telemetry from the belt, and the retained state, come through it.
        _, _, telemetry = await w.wait(f"{base}/telemetry", lambda t: isinstance(t, dict), within=20)
        assert telemetry["speed_mph"] == 0.0 and {"distance_m", "incline_pct", "ts"} <= set(telemetry)
        await w.wait(f"{base}/state", lambda s: isinstance(s, dict) and s["connected"], within=20)

        # cmd/estop through it: answered ok, the stop latched (S5) and written to the belt.
        since = len(w.messages)
        await w.publish(f"{base}/cmd/estop", json.dumps({"id": "halt"}))
        assert (await w.result("halt", base, within=15))["ok"] is True
        _, _, state = await w.wait(f"{base}/state", lambda s: s["stop"]["latched"], since=since)
        assert state["stop"]["rule"] == "S5"
        assert heard(daemon.trace, "estop") >= 1

        # For good: after the link drops, the reconnect goes straight to 3.1.1, never MQTT 5 again.
        since = len(w.messages)
        proxy.drop()
        await w.wait(f"{base}/status", lambda s: s == "offline", since=since, within=20)  # the will
        await w.wait(f"{base}/status", lambda s: s == "online", since=since, within=20)
        assert proxy.levels == [5, 4, 4]
        assert len([line for line in daemon.log.lines if "does not speak MQTT 5" in line]) == 1
        assert daemon.proc.returncode is None


@pytest.mark.slow
@pytest.mark.parametrize("refusal", [REFUSED_311, REFUSED_5], ids=["return-code-0x01", "reason-0x84"])
async def test_a_url_that_insists_on_mqtt5_is_never_spoken_in_311(broker: Mosquitto, refusal: bytes) -> None:
    tid = "v5only"
    base = f"retrotread/{tid}"
    async with (
        watching(broker, f"{base}/status") as w,
        daemon_behind(broker, refusal, tid, "?protocol=5") as (proxy, daemon),
    ):
        # The refusal is logged once, naming the broker and what it refused; the daemon keeps trying
        # (with backoff: the broker may be upgraded) in MQTT 5 only.
        line = await daemon.log.wait_for(r"cannot connect", within=20)
        assert proxy.url in line and "nsupported protocol version" in line, line
        levels = await proxy.wait_connects(3)
        assert levels[:3] == [5, 5, 5]
        assert not [line for line in daemon.log.lines if "does not speak MQTT 5" in line]
        assert w.on(f"{base}/status") == []  # never online
        assert daemon.proc.returncode is None  # the rest of the daemon runs without MQTT


@pytest.mark.slow
async def test_a_url_that_insists_on_mqtt5_says_why_it_does_not_fall_back(broker: Mosquitto) -> None:
    async with daemon_behind(broker, REFUSED_311, "v5why", "?protocol=5") as (_proxy, daemon):
        line = await daemon.log.wait_for(r"cannot connect", within=20)
        assert "protocol=5" in line and "3.1.1" in line, line
