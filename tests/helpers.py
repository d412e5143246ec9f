"""Helpers the tests share (fixtures live in conftest.py; import these by name, never conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import re
import select
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import SplitResult

import aiomqtt
import fitdecode  # type: ignore[import-untyped]  # fitdecode ships no type hints
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from retrotread.api.mqtt import NO_DELAY, MqttBridge
from retrotread.daemon.controller import Controller
from retrotread.daemon.history import SqliteHistory, TracePoint
from retrotread.daemon.snapshot import SetResult, iso
from retrotread.drivers import open_driver
from retrotread.drivers.base import Driver, drain
from retrotread.drivers.types import Update
from retrotread.drivers.units import Speed
from retrotread.safety import Latch, Mode, SafetyConfig


def fill_disk(disk: Path) -> Path:
    """Fill a tmpfs to the last page; the returned file frees it all again."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    return filler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(predicate: Callable[[], Any], updates: Any, within: float = 10.0) -> Any:
    """Wait, update by update from a hub subscription, until ``predicate()`` is truthy."""
    async with asyncio.timeout(within):
        while not (result := predicate()):
            await updates.next()
        return result


def trace_commands(trace: Path) -> list[dict[str, Any]]:
    """The commands a simulated device logged in its ``trace=`` file, in order (none before it exists)."""
    if not trace.exists():
        return []
    return [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]


def heard(trace: Path, cmd: str) -> int:
    """How many times the simulated device has heard ``cmd`` so far."""
    return sum(c["cmd"] == cmd for c in trace_commands(trace))


def wait_heard(trace: Path, cmd: str, more_than: int, within: float = 10.0) -> int:
    """Wait, polling the trace with a deadline, until the device has heard ``cmd`` more than ``more_than`` times."""
    deadline = time.monotonic() + within
    while (n := heard(trace, cmd)) <= more_than:
        assert time.monotonic() < deadline, f"the device heard no new {cmd} (still {n})"
        time.sleep(0.02)
    return n


T = TypeVar("T")


def poll_until(get: Callable[[], T], ok: Callable[[T], object], within: float = 20.0, what: str = "") -> T:
    """Ask ``get()`` until ``ok`` holds of its answer: the answer. For another process, which has no
    push to wait on (its HTTP state, its log): a condition with a deadline, failing with the last answer."""
    deadline = time.monotonic() + within
    while True:
        value = get()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met within {within} s; last: {value!r}")
        time.sleep(0.05)


class FakeTime:
    """A test's clock and sleep for a Controller: time moves only when the test moves ``now``, and a
    sleeper wakes only when ``wake_due`` finds its deadline reached (within ``slack``).

    ``catch_up``: the clock jumps to the latest deadline it wakes, so a deadline a rounding error
    past the test's grid reads as crossed rather than one step early.
    """

    def __init__(self, slack: float = 1e-9, catch_up: bool = False) -> None:
        self.now = 1000.0
        self._slack = slack
        self._catch_up = catch_up
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        if delay <= 0:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, fut))
        await fut

    def wake_due(self) -> None:
        due = [(t, f) for t, f in self._sleepers if t <= self.now + self._slack]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self.now + self._slack]
        if self._catch_up:
            self.now = max([self.now, *(t for t, _ in due)])
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)


async def settle(turns: int = 40) -> None:
    """Turn the event loop ``turns`` times, so every task the last step woke has run."""
    for _ in range(turns):
        await asyncio.sleep(0)


def run_settled(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to its end on ``loop``, then let what it woke run too."""
    result = loop.run_until_complete(coro)
    loop.run_until_complete(settle())
    return result


class QueueDriver(Driver):
    """The plumbing of an in-test driver: open/close and a queue of updates the test puts samples
    in (``put``); the subclass gives the capabilities and the commands."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Update | None] = asyncio.Queue()
        self._open = False

    @classmethod
    def from_url(cls, url: SplitResult, options: dict[str, str]) -> Self:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        return self._open

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False
        self._queue.put_nowait(None)

    def samples(self) -> AsyncIterator[Update]:
        return drain(self._queue)

    def put(self, update: Update) -> None:
        self._queue.put_nowait(update)


# The history database as older releases left it (frozen: a migration test starts from these).
HISTORY_V1_TABLES = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    plan TEXT NOT NULL, mode TEXT NOT NULL, driver TEXT NOT NULL, sets_planned INTEGER NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT, outcome TEXT
);
CREATE TABLE sets (
    session_id INTEGER NOT NULL REFERENCES sessions(id), set_no INTEGER NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT NOT NULL, started_mono REAL NOT NULL, ended_mono REAL NOT NULL,
    work_s REAL NOT NULL, distance_m REAL NOT NULL, avg_mph REAL NOT NULL, max_mph REAL NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (session_id, set_no)
);
CREATE TABLE events (
    session_id INTEGER NOT NULL REFERENCES sessions(id), ts TEXT NOT NULL, kind TEXT NOT NULL,
    rule TEXT, reason TEXT, detail TEXT NOT NULL DEFAULT '', set_no INTEGER
);
"""
HISTORY_V2_TABLES = (
    HISTORY_V1_TABLES
    + """
CREATE TABLE trace (
    session_id INTEGER NOT NULL REFERENCES sessions(id), t_s REAL NOT NULL, ts REAL NOT NULL,
    speed_mph REAL, distance_m REAL, incline_pct REAL, hr INTEGER,
    PRIMARY KEY (session_id, t_s)
) WITHOUT ROWID;
"""
)
# Session 1: one completed set of 41.5 m.
HISTORY_OLD_ROWS = """
INSERT INTO sessions VALUES (1, 'deadmill', 'deadmill', 'csafe:///dev/ttyUSB0', 3,
    '2026-01-05T18:00:00.000Z', '2026-01-05T18:06:00.000Z', 'completed');
INSERT INTO sets VALUES (1, 1, '2026-01-05T18:00:05.000Z', '2026-01-05T18:01:05.000Z', 5, 65, 60, 41.5, 1.55, 1.7,
    'completed');
"""


def old_history(path: Path, version: int, extra_sql: str = "") -> None:
    """Write, at ``path``, a history database of schema ``version`` (1 or 2) holding session 1."""
    tables = {1: HISTORY_V1_TABLES, 2: HISTORY_V2_TABLES}[version]
    db = sqlite3.connect(path)
    db.executescript(f"{tables}PRAGMA user_version = {version};{HISTORY_OLD_ROWS}{extra_sql}")
    db.close()


T0 = 1_790_000_000.0
MPS = 0.44704
DISTS = (42.0, 40.0, 36.0)  # the measured sets of the stored session the history faces serve


def write_deadmill_session(path: Path, driver: str, dists: Sequence[float] | None) -> int:
    """A 3 x 60 s deadmill session (60 s rests) with its 1 Hz trace, written through a real
    ``SqliteHistory`` at ``path``; ``dists`` the sets' distances, None for a timer only. Its id."""
    store = SqliteHistory.open(path)
    sid = store.begin("deadmill", "deadmill", driver, 3, iso(T0))
    starts = [5 + 120 * k for k in range(3)]
    for at in range(311):  # the 1 Hz trace, rests included
        k = next((k for k, st in enumerate(starts) if st <= at <= st + 60), None)
        if dists is None:
            store.trace(sid, TracePoint(t_s=float(at), ts=T0 + at))
            continue
        done = sum(dists[j] for j, st in enumerate(starts) if st + 60 < at)
        total = done + (dists[k] * (at - starts[k]) / 60 if k is not None else 0.0)
        speed = dists[k] / 60 / MPS if k is not None else 0.0
        store.trace(sid, TracePoint(t_s=float(at), ts=T0 + at, speed_mph=speed, distance_m=total))
    for k, start in enumerate(starts):
        d = dists[k] if dists else 0.0
        speed = d / 60 / MPS
        result = SetResult(
            set=k + 1,
            started_at=iso(T0 + start),
            ended_at=iso(T0 + start + 60),
            started_mono=float(start),
            ended_mono=float(start + 60),
            work_s=60.0,
            distance_m=d,
            avg_mph=speed,
            max_mph=speed * 1.1,
            outcome="completed",
        )
        store.record_set(sid, result)
    store.end(sid, "completed", iso(T0 + 310))
    store.close()
    return sid


def fit_messages(data: bytes) -> dict[str, list[dict[str, Any]]]:
    """A FIT file's data messages by name, read by fitdecode with its CRC checked."""
    out: dict[str, list[dict[str, Any]]] = {}
    with fitdecode.FitReader(io.BytesIO(data), check_crc=fitdecode.CrcCheck.ENABLED) as reader:
        for frame in reader:
            if isinstance(frame, fitdecode.FitDataMessage):
                out.setdefault(frame.name, []).append({f.name: f.value for f in frame.fields})
    return out


def hold_set_incline(monkeypatch: pytest.MonkeyPatch, controller: Controller) -> tuple[asyncio.Event, asyncio.Event]:
    """Make ``controller.set_incline`` a slow command: once ``entered`` is set it waits for
    ``release``, then does the real thing (what a stop must never queue behind, S5)."""
    entered, release = asyncio.Event(), asyncio.Event()
    real = controller.set_incline

    async def slow_incline(pct: float) -> Any:
        entered.set()
        await release.wait()
        return await real(pct)

    monkeypatch.setattr(controller, "set_incline", slow_incline)
    return entered, release


async def start_until_latched(controller: Controller, speed: Speed, within: float = 20.0) -> Latch:
    """Wait until the controller is armed with a sample read, start the belt at ``speed`` (it must be
    accepted), then wait until the supervisor latches a stop: that latch (the S7 unit-check tests)."""
    sub = controller.hub.subscribe(maxsize=100_000)
    try:
        async with asyncio.timeout(within):
            while not (controller.snapshot().armed and controller.samples_seen > 0):
                await sub.next()
            assert (await controller.start_belt(speed)).accepted
            while not controller.snapshot().stop.latched:
                await sub.next()
    finally:
        controller.hub.unsubscribe(sub)
    latch = controller.supervisor.latch
    assert latch is not None
    return latch


# --- MQTT: a separate client that watches, and a real daemon on a broker -----------------------

_watchers = itertools.count(1)


class Broker(Protocol):
    """A broker on loopback: ``mqtt_broker.Mosquitto``, or a proxy in front of one."""

    @property
    def port(self) -> int: ...

    @property
    def url(self) -> str: ...


def mqtt_decode(payload: Any) -> Any:
    """A message's payload as JSON when it is JSON, else as text."""
    raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


class Watcher:
    """Everything a separate MQTT client receives, in order, with a way to wait for a message."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[aiomqtt.Message] = []
        self._new = asyncio.Event()

    async def read(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in self.client.messages:
                self.messages.append(message)
                self._new.set()

    async def subscribe(self, *filters: str) -> None:
        for f in filters:  # one SUBSCRIBE at a time: its retained messages arrive before the next SUBACK's
            await self.client.subscribe(f, options=SubscribeOptions(qos=1, retainAsPublished=True))

    async def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        await self.client.publish(topic, payload, qos=1, retain=retain)

    async def wait(
        self, topic: str, predicate: Callable[[Any], bool] = lambda _: True, within: float = 10.0, since: int = 0
    ) -> tuple[int, aiomqtt.Message, Any]:
        """The first message on ``topic`` (from index ``since``) whose decoded payload passes ``predicate``."""
        seen = since
        async with asyncio.timeout(within):
            while True:
                for i in range(seen, len(self.messages)):
                    m = self.messages[i]
                    if m.topic.value == topic:
                        data = mqtt_decode(m.payload)
                        if predicate(data):
                            return i, m, data
                seen = max(seen, len(self.messages))  # never back before ``since``
                self._new.clear()
                await self._new.wait()

    def on(self, topic: str) -> list[Any]:
        return [mqtt_decode(m.payload) for m in self.messages if m.topic.value == topic]

    async def result(self, cmd_id: str | int, base: str, within: float = 10.0) -> dict[str, Any]:
        _, _, data = await self.wait(
            f"{base}/cmd/result", lambda d: isinstance(d, dict) and d.get("id") == cmd_id, within
        )
        assert isinstance(data, dict)
        return data


@contextlib.asynccontextmanager
async def watching(broker: Broker, *filters: str) -> AsyncIterator[Watcher]:
    """A ``Watcher`` (MQTT 5, retain-as-published) on the broker at ``broker.port``, subscribed to ``filters``."""
    client = aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=f"watcher-{next(_watchers)}",
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NO_DELAY,
    )
    async with client:
        watcher = Watcher(client)
        reader = asyncio.get_running_loop().create_task(watcher.read(), name="watcher")
        try:
            await watcher.subscribe(*filters)
            yield watcher
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


@contextlib.asynccontextmanager
async def running(
    broker: Broker,
    tid: str,
    driver: str = "sim://motorized?rate_hz=50",
    mode: Mode = Mode.REVERSE,
    *,
    standstill_first: bool = False,
    **bridge: Any,
) -> AsyncIterator[tuple[Controller, MqttBridge]]:
    """A controller on a simulated belt with its bridge, connected to the broker (with full
    control unless the test says otherwise: most tests drive the belt over MQTT)."""
    bridge.setdefault("control", "full")
    async with Controller(open_driver(driver), treadmill_id=tid, safety=SafetyConfig(mode=mode)) as controller:
        if standstill_first:
            await standing_still(controller)
        async with MqttBridge(controller, broker.url, **bridge) as mqtt:
            await mqtt.wait_connected(within=10)
            yield controller, mqtt


async def standing_still(controller: Controller) -> None:
    """Until the belt has been still long enough that a start would be accepted (S4)."""
    sup = controller.supervisor
    sub = controller.hub.subscribe(("telemetry",), maxsize=1000, replay=False)
    try:
        await wait_until(
            lambda: sup.last_motion_age(controller.clock()) is None and controller.samples_seen > 60, sub, 15
        )
    finally:
        controller.hub.unsubscribe(sub)


async def until_controller(controller: Controller, predicate: Callable[[], Any], within: float = 15.0) -> Any:
    """Until ``predicate()`` holds, checked on every update the controller's hub publishes."""
    sub = controller.hub.subscribe(maxsize=10_000)
    try:
        return await wait_until(predicate, sub, within)
    finally:
        controller.hub.unsubscribe(sub)


RETROTREAD = str(Path(sys.executable).with_name("retrotread"))
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def sim_console(link: Path) -> Iterator[subprocess.Popen[str]]:
    """``retrotread sim-device csafe --link LINK`` as a process of its own (as a user runs it beside
    a daemon), ready once it printed its link; stopped after."""
    with subprocess.Popen(
        [RETROTREAD, "sim-device", "csafe", "--link", str(link)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 20)
            assert ready and str(link) in proc.stdout.readline(), "sim-device did not start"
            yield proc
        finally:
            proc.terminate()
            proc.wait(10)


class LineLog:
    """A child process's stderr, line by line as it comes, with a way to wait for a line.

    Waiting is on the process's own words (a "running" line, a warning), never a sleep.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._new_line = asyncio.Event()

    def __str__(self) -> str:
        return "\n".join(self.lines)

    async def read(self, stream: asyncio.StreamReader) -> None:
        """Until ``stream`` ends (run it as a task; it ends at EOF, once the process is gone)."""
        async for raw in stream:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._new_line.set()
        self._new_line.set()

    async def wait_for(self, pattern: str, within: float = 10.0, since: int = 0) -> str:
        """The first line from index ``since`` on that matches ``pattern`` (a regex)."""
        rx = re.compile(pattern)
        seen = since
        async with asyncio.timeout(within):
            while True:
                for line in self.lines[seen:]:
                    if rx.search(line):
                        return line
                seen = len(self.lines)
                self._new_line.clear()
                await self._new_line.wait()


class MqttDaemon:
    """A real ``retrotread run --mqtt URL`` process (see ``mqtt_daemon``)."""

    def __init__(self, proc: asyncio.subprocess.Process, state: Path, http: str) -> None:
        self.proc = proc
        self.state = state
        """Its state directory (token, history; the simulated device's ``trace.jsonl``)."""
        self.http = http
        self.log = LineLog()
        """Its stderr, as it comes."""

    @property
    def token(self) -> str:
        return (self.state / "token").read_text().strip()

    @property
    def trace(self) -> Path:
        """What the simulated device heard (``trace_commands``, ``heard``), when the driver writes it."""
        return self.state / "trace.jsonl"

    def wire(self) -> list[dict[str, Any]]:
        """The commands the simulated device heard so far, in order."""
        return trace_commands(self.trace)


@contextlib.asynccontextmanager
async def mqtt_daemon(
    mqtt_url: str, tid: str, driver: str | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[MqttDaemon]:
    """``retrotread run --mqtt URL`` with id ``tid`` and a state directory of its own, up once its banner
    is printed (the driver is up and the HTTP port listens: the MQTT link may still be coming).

    ``driver`` defaults to a motorised simulator that writes what it heard to ``MqttDaemon.trace``.
    It is stopped with SIGTERM (killed if it does not end within 10 s) when the block ends.
    """
    with tempfile.TemporaryDirectory(prefix="retrotread-state-") as state_dir:
        state = Path(state_dir)
        port = free_port()
        own = {"RETROTREAD_DAEMON__ID": tid, "RETROTREAD_DAEMON__STATE_DIR": state_dir}
        proc = await asyncio.create_subprocess_exec(
            RETROTREAD,
            "run",
            "--driver",
            driver or f"sim://motorized?rate_hz=20&trace={state / 'trace.jsonl'}",
            "--http",
            f"127.0.0.1:{port}",
            "--mqtt",
            mqtt_url,
            cwd=ROOT,
            env={**os.environ, **own, **(env or {})},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        daemon = MqttDaemon(proc, state, f"http://127.0.0.1:{port}")
        assert proc.stdout is not None and proc.stderr is not None
        reader = asyncio.get_running_loop().create_task(daemon.log.read(proc.stderr), name=f"daemon {tid} stderr")
        try:
            banner = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert banner, f"daemon did not start: {daemon.log}"
            yield daemon
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            await reader  # ends at EOF, once the process is gone


# --- FTMS -----------------------------------------------------------------------------------------

# The Treadmill Data flag table, written out again from ftms.md (not imported from the codec, so
# that a slip in one shows up against the other); bit 0 is inverted (0 means the speed is present):
# bit -> (field, wire type, steps per unit, "not available" marker).
TREADMILL_DATA_TABLE: dict[int, list[tuple[str, str, int, int | None]]] = {
    0: [("speed_kmh", "u16", 100, None)],
    1: [("average_speed_kmh", "u16", 100, None)],
    2: [("distance_m", "u24", 1, None)],
    3: [("incline_pct", "s16", 10, 0x7FFF), ("ramp_deg", "s16", 10, 0x7FFF)],
    4: [("elevation_gain_up_m", "u16", 10, None), ("elevation_gain_down_m", "u16", 10, None)],
    5: [("instantaneous_pace_raw", "pace", 1, None)],
    6: [("average_pace_raw", "pace", 1, None)],
    7: [
        ("energy_total_kcal", "u16", 1, 0xFFFF),
        ("energy_per_hour_kcal", "u16", 1, 0xFFFF),
        ("energy_per_minute_kcal", "u8", 1, 0xFF),
    ],
    8: [("heart_rate_bpm", "u8", 1, None)],
    9: [("met", "u8", 10, None)],
    10: [("elapsed_s", "u16", 1, None)],
    11: [("remaining_s", "u16", 1, None)],
    12: [("force_n", "s16", 1, 0x7FFF), ("power_w", "s16", 1, 0x7FFF)],
    13: [("steps", "u24", 1, None)],
}


def a_set(n: int, outcome: str = "completed", work_s: float = 60.0) -> SetResult:
    """A stored set as history keeps one: set ``n``, 40 m at 1.5 mph average."""
    return SetResult(
        set=n,
        started_at="2026-11-21T15:00:00.000Z",
        ended_at="2026-11-21T15:01:00.000Z",
        started_mono=10.0 * n,
        ended_mono=10.0 * n + work_s,
        work_s=work_s,
        distance_m=40.0,
        avg_mph=1.5,
        max_mph=1.7,
        outcome=outcome,
    )  # type: ignore[arg-type]
