"""Shared by the bench scripts: percentiles, the machine line every figure carries, and the parts a
bench measures a real process with (a private Mosquitto, ``/proc`` readings, a notify socket, an SSE
reader, an MQTT tap).

Everything here is synchronous and thread-based on purpose: a bench's own event loop must not be
the one the measured process shares, and a reader thread costs the measured process nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank, of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def nproc() -> int:
    """What ``nproc`` prints: the CPUs this process may run on (not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages: a figure taken on a busy machine says so."""
    return [round(x, 2) for x in os.getloadavg()]


def machine(figure: str) -> dict[str, Any]:
    return {
        "figure": figure,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": nproc(),
        "loadavg": loadavg(),
        "python": platform.python_version(),
    }


def now() -> float:
    """CLOCK_MONOTONIC: one clock for every process on the machine (benches compare across them)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_mb(pid: int, key: str) -> float:
    """A ``/proc/PID/status`` size in MB: ``VmHWM`` (peak RSS), ``VmRSS``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def find_pids(*needles: bytes) -> list[int]:
    """The processes whose command line holds every one of ``needles``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                if all(n in cmdline for n in needles):
                    pids.append(int(entry))
    return pids


# ------------------------------------------------------------------ a private Mosquitto


def mosquitto_exe() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class Mosquitto:
    """A Mosquitto of our own on a free loopback port, as ``tests/mqtt_broker.py`` starts one:
    anonymous, no persistence, ready at its own "running" line (never a connect-retry loop)."""

    def __init__(self, extra_config: str = "") -> None:
        exe = mosquitto_exe()
        if exe is None:
            raise SystemExit("bench: mosquitto is not installed (apt install mosquitto)")
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="retrotread-bench-")
        conf = Path(self._dir.name) / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages false\n" + ("user root\n" if os.geteuid() == 0 else "") + extra_config
        )
        self.proc = subprocess.Popen(
            [exe, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.version = "mosquitto"
        ready = threading.Event()

        def read() -> None:  # the broker's stderr, read to the end so its pipe never fills
            assert self.proc.stderr is not None
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace")
                if " running" in line and not ready.is_set():
                    self.version = line.split(": ", 1)[-1].replace(" running", "").strip()
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(10) or self.proc.poll() is not None:
            self.close()
            raise SystemExit("bench: mosquitto did not start")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._dir.cleanup()

    def __enter__(self) -> Mosquitto:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ systemd's notify socket


class NotifySocket:
    """A ``NOTIFY_SOCKET`` of our own: the monotonic time each state line (``READY=1``...) arrived."""

    def __init__(self, directory: str) -> None:
        self.path = str(Path(directory) / "notify.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.2)
        self.got: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            t = now()
            self.got.extend((t, line) for line in data.decode(errors="replace").splitlines())

    def first(self, line: str) -> float | None:
        return next((t for t, got in list(self.got) if got == line), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


# ------------------------------------------------------------------ an SSE reader


@dataclass
class SseReader:
    """One client of an SSE stream on its own thread, keeping every frame with its arrival time:
    ``(t, event name, the data line as sent)``."""

    url: str
    path: str = "/api/v1/events"
    frames: list[tuple[float, str, str]] = field(default_factory=list)
    error: str | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._open.wait(30):
            raise SystemExit(f"bench: the event stream {self.url}{self.path} did not open")
        if self.error:
            raise SystemExit(f"bench: the event stream {self.url}{self.path}: {self.error}")

    def _run(self) -> None:
        import httpx

        kind = "message"
        try:
            with (
                httpx.Client(base_url=self.url, timeout=httpx.Timeout(10, read=None)) as client,
                client.stream("GET", self.path) as resp,
            ):
                resp.raise_for_status()
                self._open.set()
                for line in resp.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("event:"):
                        kind = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        self.frames.append((now(), kind, line[5:].strip()))
                        kind = "message"
        except Exception as exc:  # the bench reports it; a reader thread must not die silently
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._open.set()

    def between(self, t0: float, t1: float) -> list[tuple[float, str, str]]:
        return [f for f in list(self.frames) if t0 <= f[0] <= t1]

    def close(self) -> None:
        self._stop.set()


# ------------------------------------------------------------------ an MQTT tap


@dataclass(frozen=True, slots=True)
class Heard:
    t: float
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttTap:
    """An MQTT 5 subscriber on its own thread and loop, keeping every message with its arrival time.

    Subscribed at QoS 1 with retain-as-published, so what it hears carries the QoS and retain flag
    the publisher used (the daemon publishes at QoS 0 and 1): a replay can publish the same.
    """

    def __init__(self, url: str, topic: str | tuple[str, ...]) -> None:
        from retrotread.api.mqtt.address import parse_broker_url

        self.broker = parse_broker_url(url)
        self.topic = topic
        self.heard: list[Heard] = []
        self.error: str | None = None
        self._loop = asyncio.new_event_loop()
        self._up = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)
        self._thread.start()
        if not self._up.wait(15) or self.error:
            raise SystemExit(f"bench: the MQTT tap on {self.broker.where} did not connect: {self.error}")

    async def _main(self) -> None:
        import aiomqtt
        from paho.mqtt.subscribeoptions import SubscribeOptions

        self._task = asyncio.current_task()
        try:
            async with aiomqtt.Client(
                self.broker.host,
                self.broker.port,
                identifier=f"bench-tap-{os.getpid()}",
                protocol=aiomqtt.ProtocolVersion.V5,
                socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            ) as client:
                for topic in (self.topic,) if isinstance(self.topic, str) else self.topic:
                    await client.subscribe(topic, options=SubscribeOptions(qos=1, retainAsPublished=True))
                self._up.set()
                async for m in client.messages:
                    payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                    self.heard.append(Heard(now(), m.topic.value, payload, int(m.qos), bool(m.retain)))
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._up.set()

    def between(self, t0: float, t1: float) -> list[Heard]:
        return [h for h in list(self.heard) if t0 <= h.t <= t1]

    def last(self, leaf: str, before: float = float("inf")) -> Heard | None:
        """The latest message (heard by ``before``) whose topic ends in ``/leaf``."""
        heard = reversed(list(self.heard))
        return next((h for h in heard if h.topic.endswith("/" + leaf) and h.t <= before), None)

    def close(self) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(5)
        self._loop.close()


# ------------------------------------------------------------------ a real daemon


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (``/proc/PID/task/TID/children``)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                todo.extend(int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split())
    return found


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of the processes still alive among ``pids``."""
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


def wait_http(url: str, path: str, within: float, proc: subprocess.Popen[bytes] | None = None) -> float:
    """Poll ``GET url+path`` every 2 ms until it answers 2xx: the monotonic time it did."""
    import httpx

    deadline = now() + within
    with httpx.Client(base_url=url, timeout=2) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(path).is_success:
                    return now()
            if proc is not None and proc.poll() is not None:
                raise SystemExit(f"bench: the process exited ({proc.returncode}) before {path} answered")
            if now() > deadline:
                raise SystemExit(f"bench: {url}{path} did not answer within {within} s")
            time.sleep(0.002)


@contextlib.contextmanager
def stopped_at_exit(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """SIGTERM at the end (the daemon's clean shutdown), SIGKILL if it has not gone in 15 s."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def json_line(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(", ", ": "))
