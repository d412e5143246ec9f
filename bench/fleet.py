"""Figure B6: many treadmills on one broker, every sample counted and timed.

    python bench/fleet.py                                   # N=100 at 5 Hz for 20 s, nproc workers
    python bench/fleet.py --n 50 --seconds 10 --floor       # a dry run, the floor view reading too
    python bench/fleet.py --n 1000 --seconds 30 --floor     # the target: 1,000 treadmills
    python bench/fleet.py --n 1000 --clients light          # bare aiomqtt clients, no controllers
    python bench/fleet.py --n 1000 --seconds 30 --clients raw --subscriber raw   # the broker's own load
    python bench/fleet.py --sweep --clients raw --subscriber raw --seconds 15    # where one Mosquitto stops
    python bench/fleet.py --sweep --clients raw --subscriber raw --seconds 15 --broker-nodelay
    python bench/fleet.py --sweep-hz 5,10,20,40 --n 2000 --clients raw --subscriber raw --seconds 15
    python bench/fleet.py --n 200 --procs 4 --broker mqtt://127.0.0.1:1883

Prints one JSON line (a sweep: one per step and a summary). ``--procs`` worker processes (default:
``nproc``, the CPUs this process may use) each run their share of the N treadmills. What a
treadmill is (``--clients``):

- ``daemon`` (the default): a controller on ``sim://motorized?rate_hz=5`` with its own
  ``MqttBridge`` (own client id, own topics, own will and retained status, as a real daemon has; no
  HTTP), so N treadmills are N MQTT clients. On one 2-core box the controllers of 1,000 treadmills
  saturate both cores (in use each daemon runs on its own board).
- ``light``: one bare aiomqtt client publishing a telemetry payload of the daemon's shape on its
  own topic at the same rate and a random phase, with the daemon's client id, will and retained
  ``online``. Cheaper, but still the load generators' CPU, not the broker's, that one box runs out of.
- ``raw``: one plain TCP connection per treadmill speaking MQTT 3.1.1 itself (standard library
  only): CONNECT as ``retrotread-<id>``, clean session, keepalive 60 s (at least three periods, so
  the samples keep the link alive and no PINGREQ is needed), a will ``retrotread/<id>/status`` =
  offline at QoS 1 retained; CONNACK awaited; ``online`` retained at QoS 1 and its PUBACK; then QoS
  0 PUBLISHes of exactly light's payload, at the rate from a random phase (to the millisecond),
  from one timer wheel per worker with the PUBLISH header and topic encoded once per treadmill.
  A few microseconds of Python per sample: what is left is the broker and the kernel's loopback.

All publish to one loopback Mosquitto (private, on a free port, with Debian's defaults and
``max_connections -1``, unless ``--broker``). ``--broker-nodelay`` adds ``set_tcp_nodelay true``:
by default Mosquitto leaves Nagle on its sockets, and on its one busy socket to the subscriber
that meets the subscriber's delayed ACK now and then, holding deliveries back by about 40 ms
(stalls that set the p99 at N=1,000); the option shows the broker without them (and what its
extra packets cost it). One subscriber in this process listens on
``retrotread/+/telemetry`` at QoS 0: an aiomqtt client (``--subscriber aiomqtt``, the default), or
(``--subscriber raw``) MQTT 3.1.1 over a plain socket parsing the PUBLISH frames itself (remaining
length, topic, payload; ``seq`` found in the payload, and checked against ``json.loads`` on each
topic's first message), which costs the parent much less and measures the same thing. With
``--floor`` the floor view (``retrotread floor``, its own process) reads the same broker too.

Once every client is connected, the workers are told a measurement window on the machine-wide
monotonic clock; each records when its treadmills produced the telemetry samples inside it (id,
seq, time), and the subscriber records when it received them (for ``raw``, when the frame is
parsed). Reported: samples expected (produced in the window), received, lost, and the latency
p50/p99/max from production to reception; the target is N=1,000, nothing lost, p99 ≤ 50 ms. CPU
over the window as % of one core: the broker's (``/proc``), the workers' (all their treadmills),
the subscriber's (this process), the whole machine's (``/proc/stat``, the kernel's loopback work
included; of ``nproc`` × 100) and the floor view's (with its peak RSS and how many tiles it holds
at the end). ``reconnects``: for ``daemon`` the bridges' reconnections, for ``raw`` the
connections the broker closed (a raw client does not reconnect). ``RLIMIT_NOFILE`` is raised to
its hard limit first (1,000 clients need 1,000 sockets each side).

Where one Mosquitto stops (Mosquitto is single-threaded): ``--sweep`` raises N through
``--sweep-n`` (default 1000,2000,4000,8000,10000,12000,16000) at ``--rate-hz``; ``--sweep-hz``
raises the rate at ``--n``. Each step runs ``--seconds`` on a fresh private broker and prints its
line, and the sweep ends at the first step where the broker stops: samples lost, p99 > 50 ms, or
the broker's CPU ≥ 90 % of one core (which of these is said, and which of the bench's own processes
were at a core's limit too: if that is the workers, the subscriber or the whole machine, the step
measured the box, not the broker). A step the broker cannot hold by ``RLIMIT_NOFILE`` (one socket
per client) ends the sweep too.

This script must not need anything beyond the standard library, our packages and their
dependencies, and a ``mosquitto`` binary (for the private broker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import random
import re
import resource
import socket
import statistics
import subprocess
import sys
import time
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/fleet.py` from a checkout, installed or not
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import aiomqtt  # noqa: E402
from _common import CLK_TCK, Mosquitto, cpu_seconds, free_port, machine, nproc, status_mb  # noqa: E402
from telemetry import host_port, instrument, now, percentile, standstill  # noqa: E402

from retrotread.api.mqtt import NO_DELAY, MqttBridge  # noqa: E402
from retrotread.daemon.commands import SessionCommand  # noqa: E402
from retrotread.daemon.controller import Controller  # noqa: E402
from retrotread.drivers import open_driver  # noqa: E402

TARGET_N = 1000
CONNECT_WITHIN_S = 600.0  # 1,000 bridges connecting on 2 busy cores take a while
TARGET_P99_MS = 50.0
RATE_HZ = 5.0
BROKER_BUSY_PCT = 90.0  # of one core: Mosquitto is single-threaded, this is where it stops
CLIENTS = ("daemon", "light", "raw")
SWEEP_N = "1000,2000,4000,8000,10000,12000,16000"
DRAIN_S = 5.0  # after the window, how long stragglers may still arrive before they count as lost


# ------------------------------------------------------------------ a worker process


async def worker(url: str, first: int, count: int, rate_hz: float, clients: str, session: str | None = None) -> None:
    """Run treadmills ``first`` .. ``first+count-1``; talk to the parent on stdin/stdout."""
    logging.basicConfig(level=logging.ERROR)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    window = [float("inf"), float("-inf")]
    # Per treadmill the seqs and times in plain arrays: recording a sample allocates nothing the
    # garbage collector tracks, so no collection (tens of ms with a window's rows in lists) can run
    # between a sample's production and its send and be counted as the broker's latency.
    produced: dict[str, tuple[array[int], array[float]]] = {}

    def recorder(tid: str) -> Any:
        seqs, times = produced.setdefault(tid, (array("q"), array("d")))
        add_seq, add_time = seqs.append, times.append

        def record(seq: int, t: float) -> None:
            if window[0] <= t <= window[1]:
                add_seq(seq)
                add_time(t)

        return record

    async with contextlib.AsyncExitStack() as stack:
        ids = [f"fleet-{i:04d}" for i in range(first, first + count)]
        if clients == "light":
            reconnects = await _light(stack, url, ids, rate_hz, recorder)
        elif clients == "raw":
            reconnects = await _raw(stack, url, ids, rate_hz, recorder)
        else:
            reconnects = await _daemons(stack, url, ids, rate_hz, recorder, session)
        gc.freeze()  # what setting up made is there for good: no collection walks it in the window
        print("ready", flush=True)
        start, end = map(float, (await reader.readline()).split()[1:3])
        window[:] = [start, end]
        await asyncio.sleep(max(0.0, start - now()))
        cpu0 = os.times()  # over the window, as the parent reads the broker's and its own
        await asyncio.sleep(max(0.0, end - now()))
        cpu1 = os.times()
        await asyncio.sleep(0.05)  # the window's last samples recorded
        report = {
            "produced": {tid: list(zip(seqs, times, strict=True)) for tid, (seqs, times) in produced.items()},
            "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
            "reconnects": reconnects(),
        }
        print(json.dumps(report), flush=True)
        await reader.readline()  # "quit": the parent has counted; close cleanly


async def _daemons(
    stack: contextlib.AsyncExitStack, url: str, ids: list[str], rate_hz: float, recorder: Any, session: str | None
) -> Any:
    """A controller and its own MqttBridge per treadmill, as ``retrotread run`` composes them; with
    ``session`` (a plan), each runs that session, so state and timer flow as in use."""
    bridges = []
    controllers = []
    for tid in ids:
        driver = open_driver(f"sim://motorized?rate_hz={rate_hz:g}")
        controller = await stack.enter_async_context(Controller(driver, treadmill_id=tid))
        instrument(controller, _by_seq(recorder(tid)))
        controllers.append(controller)
        bridges.append(await stack.enter_async_context(MqttBridge(controller, url, discovery=False)))
    for bridge in bridges:
        await bridge.wait_connected(within=CONNECT_WITHIN_S)
    if session is not None:
        for controller in controllers:
            await standstill(controller, rate_hz)
            outcome = await controller.execute(SessionCommand(plan=session), "bench")
            if not outcome.ok:
                raise SystemExit(f"bench: {controller.id}: the session did not start: {outcome.error}")
    return lambda: sum(b.connections - 1 for b in bridges)


def _by_seq(record: Any) -> Any:
    """The hub's telemetry → ``record(seq, the moment it was produced)``."""

    def on_telemetry(telemetry: Any) -> None:
        record(telemetry.seq, now())

    return on_telemetry


async def _light(stack: contextlib.AsyncExitStack, url: str, ids: list[str], rate_hz: float, recorder: Any) -> Any:
    """A bare aiomqtt client per treadmill publishing a telemetry payload of the daemon's shape at
    ``rate_hz`` from a random phase: the broker's load without the controllers' cost."""
    host, port = host_port(url)
    period = 1.0 / rate_hz
    tasks: list[asyncio.Task[None]] = []

    async def publish(tid: str, client: aiomqtt.Client) -> None:
        record = recorder(tid)
        t0 = now() + random.random() * period
        k = 0
        while True:
            deadline = t0 + k * period
            await asyncio.sleep(max(0.0, deadline - now()))
            k += 1
            t = now()
            ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            body = {"speed_mph": 1.0, "incline_pct": 0.0, "distance_m": round(k * 0.09, 2), "ts": ts, "seq": k}
            record(k, t)
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(f"retrotread/{tid}/telemetry", json.dumps(body, separators=(",", ":")), qos=0)

    for tid in ids:
        client = aiomqtt.Client(
            host,
            port,
            identifier=f"retrotread-{tid}",
            socket_options=NO_DELAY,
            will=aiomqtt.Will(f"retrotread/{tid}/status", "offline", qos=1, retain=True),
        )
        await stack.enter_async_context(client)
        await client.publish(f"retrotread/{tid}/status", "online", qos=1, retain=True)
        tasks.append(asyncio.get_running_loop().create_task(publish(tid, client)))

    async def cancel() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    stack.push_async_callback(cancel)
    return lambda: 0


# ------------------------------------------------------------------ MQTT 3.1.1 by hand (the raw modes)

PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
CONNECTS_IN_FLIGHT = 64  # per worker: Mosquitto listens with a backlog of 100
SLOT_S = 0.001  # the raw clients' phases are kept to the millisecond (asyncio's timer is no finer)


def _remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer (1 to 4 bytes, 7 bits each, low first)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _remaining_length(len(body)) + body


def connect_packet(client_id: str, keepalive: int, will: tuple[str, bytes] | None = None) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session; with ``will`` (topic, message) a will at QoS 1, retained."""
    flags = 0x02 | (0x04 | 0x08 | 0x20 if will else 0)
    body = _string("MQTT") + bytes((4, flags)) + keepalive.to_bytes(2, "big") + _string(client_id)
    if will:
        body += _string(will[0]) + _string(will[1])
    return _packet(0x10, body)


def publish_packet(topic: str, payload: bytes, qos: int = 0, retain: bool = False, packet_id: int = 1) -> bytes:
    head = 0x30 | (qos << 1) | (1 if retain else 0)
    return _packet(head, _string(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload)


def subscribe_packet(topic: str, qos: int = 0, packet_id: int = 1) -> bytes:
    return _packet(0x82, packet_id.to_bytes(2, "big") + _string(topic) + bytes((qos,)))


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


async def _handshake(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, client_id: str, keepalive: int, base: str
) -> None:
    """CONNECT (will: ``base/status`` = offline) → CONNACK; ``online`` retained at QoS 1 → PUBACK."""
    await loop.sock_sendall(sock, connect_packet(client_id, keepalive, (f"{base}/status", b"offline")))
    connack = await _recv_exactly(loop, sock, 4)
    if connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"{client_id}: CONNACK {connack.hex()}")
    await loop.sock_sendall(sock, publish_packet(f"{base}/status", b"online", qos=1, retain=True, packet_id=1))
    puback = await _recv_exactly(loop, sock, 4)
    if puback != b"\x40\x02\x00\x01":
        raise ConnectionError(f"{client_id}: PUBACK {puback.hex()}")


class _RawClient:
    """One treadmill's connection: the PUBLISH header and topic encoded once, only the payload per
    sample. A send the socket cannot take now waits in ``pending`` (TCP's own backpressure, as a
    library's buffer would hold it) and goes out when the socket is writable again: never dropped."""

    __slots__ = ("closed", "k", "loop", "pending", "record", "sock", "topic")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, tid: str, record: Any) -> None:
        self.loop, self.sock, self.record = loop, sock, record
        self.topic = _string(f"retrotread/{tid}/telemetry")
        self.k = 0
        self.pending = bytearray()
        self.closed = False
        loop.add_reader(sock.fileno(), self._readable)

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.pending:
            self.pending += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self.pending += data[sent:]
            self.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self.pending)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        del self.pending[:sent]
        if not self.pending:
            self.loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        """The broker sends nothing after the PUBACK but a PINGRESP; an end means it closed us."""
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()

    def close(self, goodbye: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError, ValueError):
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
            if goodbye and not self.pending:
                self.sock.send(DISCONNECT)  # a clean end: the broker drops the will
        self.sock.close()


async def _raw(stack: contextlib.AsyncExitStack, url: str, ids: list[str], rate_hz: float, recorder: Any) -> Any:
    """Per treadmill one plain TCP connection speaking MQTT 3.1.1 itself: CONNECT as
    ``retrotread-<id>`` (clean session, a will ``retrotread/<id>/status`` = offline, QoS 1,
    retained), ``online`` retained at QoS 1, then QoS 0 PUBLISHes of the light mode's payload at
    ``rate_hz`` from a random phase. One timer wheel per worker sends every treadmill whose slot is
    due, so a sample costs a few microseconds here and the broker, not Python, is what is measured.
    The keepalive is at least three periods, so the samples themselves keep the link alive and no
    PINGREQ is needed."""
    host, port = host_port(url)
    loop = asyncio.get_running_loop()
    period = 1.0 / rate_hz
    keepalive = min(65535, max(60, math.ceil(3 * period)))
    slots = max(1, round(period / SLOT_S))
    wheel: list[list[_RawClient]] = [[] for _ in range(slots)]
    clients: list[_RawClient] = []
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
    heads = [b"\x30" + _remaining_length(n) for n in range(1 << 14)]  # QoS 0 PUBLISH: type and length

    async def open_one(tid: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            async with gate:
                await loop.sock_connect(sock, (host, port))
                await _handshake(loop, sock, f"retrotread-{tid}", keepalive, f"retrotread/{tid}")
        except BaseException:
            sock.close()
            raise
        client = _RawClient(loop, sock, tid, recorder(tid))
        clients.append(client)
        wheel[random.randrange(slots)].append(client)  # publishing starts at once, as light's does

    async def tick() -> None:
        t0 = now()
        slot_s = period / slots
        k = 0
        while True:
            for _ in range(slots):  # on to the next slot with a treadmill in it (none yet: wait a turn)
                if wheel[k % slots]:
                    break
                k += 1
            delay = t0 + k * slot_s - now()
            await asyncio.sleep(delay if delay > 0 else 0)  # behind: still let the loop run between slots
            due = wheel[k % slots]
            k += 1
            ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            for c in due:
                c.k += 1
                seq = c.k
                t = now()
                body = (
                    f'{{"speed_mph":1.0,"incline_pct":0.0,"distance_m":{round(seq * 0.09, 2)},"ts":"{ts}","seq":{seq}}}'
                ).encode()  # exactly json.dumps(..., separators=(",", ":")) of light's dict
                c.record(seq, t)
                c.send(heads[len(c.topic) + len(body)] + c.topic + body)

    ticker = loop.create_task(tick())

    async def close() -> None:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
        for c in clients:
            c.close(goodbye=True)

    stack.push_async_callback(close)
    await asyncio.gather(*(open_one(tid) for tid in ids))
    return lambda: sum(c.closed for c in clients)  # the broker closed them (a raw client does not reconnect)


class RawSubscriber(asyncio.Protocol):
    """The parent's subscriber without a library: MQTT 3.1.1 over a plain socket, SUBSCRIBE
    ``retrotread/+/telemetry`` at QoS 0, PUBLISH frames parsed here (remaining length, topic,
    payload, ``seq`` out of the payload). ``on_sample(id, seq, t)`` as the aiomqtt one calls it,
    with ``t`` the moment the frame is parsed."""

    SEQ = re.compile(rb'"seq":(\d+)[,}]')

    def __init__(self, on_sample: Any) -> None:
        self.on_sample = on_sample
        self.buf = b""
        self.ids: dict[bytes, str] = {}  # topic → treadmill id, and its first payload checked by json
        self.transport: asyncio.Transport | None = None
        self.acks: asyncio.Queue[int] = asyncio.Queue()  # CONNACK, SUBACK, PINGRESP: their type
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        size = len(buf)
        i = 0
        search = self.SEQ.search
        while size - i >= 2:
            first = buf[i]
            length = buf[i + 1]
            j = i + 2
            if length & 0x80:  # more bytes of remaining length
                length &= 0x7F
                shift = 7
                while True:
                    if j >= size:
                        self.buf = buf[i:]
                        return
                    b = buf[j]
                    j += 1
                    length |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
            end = j + length
            if end > size:
                break
            if first >> 4 == 3:  # PUBLISH
                t = now()
                topic_end = j + 2 + (buf[j] << 8 | buf[j + 1])
                topic = buf[j + 2 : topic_end]
                start = topic_end + (2 if first & 0x06 else 0)  # a packet id at QoS 1/2
                tid = self.ids.get(topic)
                if tid is None:
                    tid = self.ids[topic] = self._first(topic, buf[start:end])
                m = search(buf, start, end)
                seq = int(m.group(1)) if m else json.loads(buf[start:end])["seq"]
                self.on_sample(tid, seq, t)
            else:
                self.acks.put_nowait(first >> 4)
            i = end
        self.buf = buf[i:]

    def _first(self, topic: bytes, payload: bytes) -> str:
        """A topic's first payload: ``seq`` by json too, so the quick search is known to agree."""
        m = self.SEQ.search(payload)
        if m is None or int(m.group(1)) != json.loads(payload)["seq"]:
            raise SystemExit(f"bench: the raw subscriber misreads seq in {payload!r}")
        return topic.split(b"/")[1].decode()

    async def ack(self, kind: int) -> None:
        async with asyncio.timeout(30):
            while await self.acks.get() != kind:
                pass

    @classmethod
    @contextlib.asynccontextmanager
    async def connected(cls, host: str, port: int, client_id: str, on_sample: Any) -> Any:
        loop = asyncio.get_running_loop()
        _, sub = await loop.create_connection(lambda: cls(on_sample), host, port)
        transport = sub.transport
        assert transport is not None
        keepalive = 60
        transport.write(connect_packet(client_id, keepalive))
        await sub.ack(2)  # CONNACK
        transport.write(subscribe_packet("retrotread/+/telemetry", qos=0))
        await sub.ack(9)  # SUBACK

        async def ping() -> None:
            while True:
                await asyncio.sleep(keepalive / 2)
                transport.write(PINGREQ)

        pinger = loop.create_task(ping())
        try:
            yield sub
        finally:
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
            if not transport.is_closing():
                transport.write(DISCONNECT)
                transport.close()
            await sub.closed


# ------------------------------------------------------------------ the parent


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit, for us and the processes we start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def busy() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``: all but idle and iowait), every
    process and the kernel's softirq work for loopback TCP included; of ``nproc`` × 100 %."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def _cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return cpu_seconds(pid)
    except OSError:
        return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    nofile = raise_nofile()
    load_before = os.getloadavg()  # "loadavg" is read at the end, after the run's own load
    async with contextlib.AsyncExitStack() as stack:
        broker_pid: int | None = None
        if args.broker:
            url, broker = args.broker, "given"
        else:
            # max_connections -1 is its default, said outright; set_tcp_nodelay only when asked
            config = "max_connections -1\n" + ("set_tcp_nodelay true\n" if args.broker_nodelay else "")
            mosquitto = stack.enter_context(Mosquitto(config))
            url, broker, broker_pid = mosquitto.url, f"{mosquitto.version} (private, loopback)", mosquitto.pid
        host, port = host_port(url)
        # id → seq → time: ints and floats in dicts the garbage collector does not track, so the
        # samples a window brings make no collection pause the subscriber (and count as latency).
        received: dict[str, dict[int, float]] = {}
        missing: set[tuple[str, int]] = set()  # filled once the workers report; emptied as samples arrive
        all_in = asyncio.Event()

        def on_sample(tid: str, seq: int, t: float) -> None:
            got = received.get(tid)
            if got is None:
                got = received[tid] = {}
            got[seq] = t
            if missing:
                missing.discard((tid, seq))
                if not missing:
                    all_in.set()

        sub_id = f"b6-sub-{os.getpid()}"
        if args.subscriber == "raw":
            await stack.enter_async_context(RawSubscriber.connected(host, port, sub_id, on_sample))
            receiver = asyncio.get_running_loop().create_future()  # nothing to cancel: the protocol reads
        else:
            sub = await stack.enter_async_context(
                aiomqtt.Client(host, port, identifier=sub_id, socket_options=NO_DELAY)
            )
            await sub.subscribe("retrotread/+/telemetry", qos=0)

            async def receive() -> None:
                async for m in sub.messages:
                    t = now()
                    tid = m.topic.value.split("/")[1]
                    on_sample(tid, json.loads(m.payload)["seq"], t)

            receiver = asyncio.get_running_loop().create_task(receive())
        floor = _start_floor(url) if args.floor else None
        procs = []
        shares = [args.n // args.procs + (1 if k < args.n % args.procs else 0) for k in range(args.procs)]
        first = 0
        for share in shares:
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--worker",
                    "--url",
                    url,
                    "--first",
                    str(first),
                    "--count",
                    str(share),
                    "--rate-hz",
                    str(args.rate_hz),
                    "--clients",
                    args.clients,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=1 << 28,  # a worker's report is one long JSON line
                )
            )
            first += share
        t_spawn = now()
        try:
            for proc in procs:
                assert proc.stdout is not None
                async with asyncio.timeout(CONNECT_WITHIN_S + 60):
                    line = await proc.stdout.readline()
                if line.strip() != b"ready":
                    raise SystemExit(f"bench: a worker failed to start: {line!r}")
            connect_s = now() - t_spawn
            start = now() + 1.0
            end = start + args.seconds
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(f"go {start} {end}\n".encode())
                await proc.stdin.drain()
            gc.freeze()  # the setup's objects: no collection in the window walks them
            await asyncio.sleep(max(0.0, start - now()))
            broker0, floor0, me0, all0 = _cpu(broker_pid), _cpu(floor[0].pid if floor else None), os.times(), busy()
            await asyncio.sleep(max(0.0, end - now()))
            broker1, floor1, me1, all1 = _cpu(broker_pid), _cpu(floor[0].pid if floor else None), os.times(), busy()
            gc.unfreeze()
            reports = []
            for proc in procs:
                assert proc.stdout is not None
                async with asyncio.timeout(args.seconds + 120):
                    reports.append(json.loads(await proc.stdout.readline()))
            expected = {(tid, seq): t for r in reports for tid, rows in r["produced"].items() for seq, t in rows}
            missing.update(k for k in expected if k[1] not in received.get(k[0], ()))
            if missing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DRAIN_S):
                        await all_in.wait()
            floor_view = await _floor_figures(floor) if floor else None
        finally:
            for proc in procs:
                if proc.stdin is not None and not proc.stdin.is_closing():
                    proc.stdin.write(b"quit\n")
                    with contextlib.suppress(ConnectionError):
                        await proc.stdin.drain()
            for proc in procs:
                try:
                    async with asyncio.timeout(60):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            if floor:
                floor[0].terminate()
                try:
                    floor[0].wait(15)
                except subprocess.TimeoutExpired:
                    floor[0].kill()
                    floor[0].wait()
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
    got = {(tid, seq): t for tid, seqs in received.items() for seq, t in seqs.items()}
    lat = [(got[k] - t) * 1000 for k, t in expected.items() if k in got]
    lost = len(expected) - len(lat)
    p99 = percentile(lat, 99)

    def cpu_pct(c0: float | None, c1: float | None) -> float | None:
        return round(100 * (c1 - c0) / args.seconds, 1) if c0 is not None and c1 is not None else None

    if floor_view is not None:
        floor_view["cpu_pct_of_one_core"] = cpu_pct(floor0, floor1)
    return {
        **machine("B6"),
        "loadavg_before": [round(x, 2) for x in load_before],
        "broker": broker,
        "broker_nodelay": bool(args.broker_nodelay),
        "clients": args.clients,
        "subscriber": args.subscriber,
        "n": args.n,
        "procs": args.procs,
        "nofile": nofile,
        "rate_hz": args.rate_hz,
        "seconds": args.seconds,
        "connect_s": round(connect_s, 1),
        "expected": len(expected),
        "received": len(lat),
        "lost": lost,
        "loss_pct": round(100 * lost / len(expected), 3) if expected else None,
        "p50_ms": round(statistics.median(lat), 2) if lat else None,
        "p99_ms": round(p99, 2),
        "max_ms": round(max(lat), 2) if lat else None,
        "reconnects": sum(r["reconnects"] for r in reports),
        "cpu_pct_of_one_core": {
            "broker": cpu_pct(broker0, broker1),
            "workers": round(100 * sum(r["cpu_s"] for r in reports) / args.seconds, 1),
            "subscriber": round(100 * ((me1.user - me0.user) + (me1.system - me0.system)) / args.seconds, 1),
            "machine": cpu_pct(all0, all1),
        },
        "floor_view": floor_view,
        "target": {"n": TARGET_N, "lost": 0, "p99_ms": TARGET_P99_MS},
        "ok": args.n >= TARGET_N and lost == 0 and bool(lat) and p99 <= TARGET_P99_MS,
    }


def _start_floor(url: str) -> tuple[subprocess.Popen[bytes], str]:
    """``retrotread floor --mqtt URL --http 127.0.0.1:PORT`` (the one next to this python)."""
    port = free_port()
    exe = str(Path(sys.executable).with_name("retrotread"))
    proc = subprocess.Popen(
        [sys.executable, exe, "floor", "--mqtt", url, "--http", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    import httpx

    with httpx.Client(base_url=base, timeout=2) as http:
        for _ in range(3000):  # up to a minute: the page's server and its broker link both up
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if http.get("/healthz").json().get("broker"):
                    return proc, base
            if proc.poll() is not None:
                break
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("bench: the floor view did not start (or did not reach the broker)")


async def _floor_figures(floor: tuple[subprocess.Popen[bytes], str]) -> dict[str, Any]:
    """The floor view's peak RSS and what it shows: its /healthz (treadmills known, broker up)."""
    import httpx

    proc, base = floor
    if proc.poll() is not None:
        raise SystemExit(f"bench: the floor view exited ({proc.returncode})")
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        health = (await http.get("/healthz")).json()
    return {
        "rss_mb_peak": round(status_mb(proc.pid, "VmHWM"), 1),
        "tiles": health.get("treadmills"),
        "broker_up": health.get("broker"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100, help="simulated treadmills (the target is 1000)")
    p.add_argument("--procs", type=int, default=nproc(), help="worker processes sharing them (default: nproc)")
    p.add_argument("--clients", choices=CLIENTS, default="daemon", help="what a treadmill is (see above)")
    p.add_argument("--subscriber", choices=("aiomqtt", "raw"), default="aiomqtt", help="the counting subscriber")
    p.add_argument("--sweep", action="store_true", help="raise N through --sweep-n until one Mosquitto stops")
    p.add_argument("--sweep-n", default=SWEEP_N, help="the sweep's N, comma-separated (default %(default)s)")
    p.add_argument("--sweep-hz", help="sweep the rate at --n instead: rates in Hz, comma-separated")
    p.add_argument("--floor", action="store_true", help="run the floor view (retrotread floor) on the broker too")
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    p.add_argument("--rate-hz", type=float, default=RATE_HZ, help="samples per second per treadmill")
    p.add_argument("--broker", help="mqtt:// URL of a broker to use instead of a private Mosquitto")
    p.add_argument(
        "--broker-nodelay", action="store_true", help="the private broker with set_tcp_nodelay true (not a default)"
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--session", help=argparse.SUPPRESS)  # workers only: each treadmill runs this plan
    args = p.parse_args()
    if args.worker:
        asyncio.run(worker(args.url, args.first, args.count, args.rate_hz, args.clients, args.session))
        return
    logging.basicConfig(level=logging.ERROR)
    if args.sweep or args.sweep_hz:
        sweep(args)
        return
    print(json.dumps(asyncio.run(run(args))))


def stopped(line: dict[str, Any]) -> list[str]:
    """Why one Mosquitto has stopped at this step (empty: it has not): samples lost, p99 over the
    target, or the broker at 90 % of its one core."""
    why = []
    if line["lost"]:
        why.append(f"lost {line['lost']}")
    if not line["p99_ms"] <= TARGET_P99_MS:
        why.append(f"p99 {line['p99_ms']} ms > {TARGET_P99_MS:g}")
    broker = line["cpu_pct_of_one_core"]["broker"]
    if broker is not None and broker >= BROKER_BUSY_PCT:
        why.append(f"broker CPU {broker} % >= {BROKER_BUSY_PCT:g}")
    return why


def saturated(line: dict[str, Any]) -> list[str]:
    """Which of the bench's own processes were at a core's limit: if it is the generators or the
    subscriber, the step measured them, not the broker."""
    cpu = line["cpu_pct_of_one_core"]
    busy = [name for name in ("broker", "subscriber") if (cpu[name] or 0) >= BROKER_BUSY_PCT]
    if cpu["workers"] >= BROKER_BUSY_PCT * line["procs"]:
        busy.append("workers")
    if (cpu["machine"] or 0) >= BROKER_BUSY_PCT * nproc():
        busy.append("machine")
    return busy


def sweep(args: argparse.Namespace) -> None:
    """One JSON line per step (N, or the rate with ``--sweep-hz``), each on a fresh private broker,
    up to the first step where the broker stops; then a summary line."""
    if args.sweep_hz:
        steps = [(args.n, float(hz)) for hz in args.sweep_hz.split(",")]
    else:
        steps = [(int(n), args.rate_hz) for n in args.sweep_n.split(",")]
    nofile = raise_nofile()
    rows = []
    stop: dict[str, Any] | None = None
    last_ok: dict[str, Any] | None = None
    for n, hz in steps:
        if n + 64 > nofile:  # the broker holds one socket per treadmill
            stop = {"n": n, "rate_hz": hz, "why": [f"RLIMIT_NOFILE {nofile}: the broker cannot hold {n} clients"]}
            break
        line = asyncio.run(run(argparse.Namespace(**{**vars(args), "n": n, "rate_hz": hz})))
        print(json.dumps(line), flush=True)
        cpu = line["cpu_pct_of_one_core"]
        row = {
            "n": n,
            "rate_hz": hz,
            "msgs_per_s": round(n * hz),
            "lost": line["lost"],
            "p50_ms": line["p50_ms"],
            "p99_ms": line["p99_ms"],
            "broker_cpu": cpu["broker"],
            "workers_cpu": cpu["workers"],
            "subscriber_cpu": cpu["subscriber"],
            "machine_cpu": cpu["machine"],
            "loadavg": line["loadavg"],
            "saturated": saturated(line),
        }
        rows.append(row)
        why = stopped(line)
        if why:
            stop = {"n": n, "rate_hz": hz, "why": why, "saturated": row["saturated"]}
            break
        last_ok = {"n": n, "rate_hz": hz}
    summary = {
        **machine("B6-sweep"),
        "clients": args.clients,
        "subscriber": args.subscriber,
        "seconds": args.seconds,
        "procs": args.procs,
        "steps": rows,
        "stopped_at": stop,
        "last_ok": last_ok,
        "criteria": {"lost": 0, "p99_ms": TARGET_P99_MS, "broker_cpu_pct": BROKER_BUSY_PCT},
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
