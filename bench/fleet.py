"""Figure B6: many treadmills on one broker, every sample counted and timed.

    python bench/fleet.py                                   # N=100 at 5 Hz for 20 s, nproc workers
    python bench/fleet.py --n 50 --seconds 10 --floor       # a dry run, the floor view reading too
    python bench/fleet.py --n 1000 --seconds 30 --floor     # the target: 1,000 treadmills
    python bench/fleet.py --n 1000 --clients light          # the broker's own limit (see below)
    python bench/fleet.py --n 200 --procs 4 --broker mqtt://127.0.0.1:1883

Prints one JSON line. ``--procs`` worker processes (default: ``nproc``, the CPUs this process may
use) each run their share of the N treadmills. With ``--clients daemon`` (the default) a treadmill
is a controller on ``sim://motorized?rate_hz=5`` with its own ``MqttBridge`` (own client id, own
topics, own will and retained status, as a real daemon has; no HTTP), so N treadmills are N MQTT
clients. With ``--clients light`` a treadmill is one bare aiomqtt client publishing a telemetry
payload of the daemon's shape on its own topic at the same rate and a random phase: on one 2-core
box the controllers of 1,000 treadmills cost more than the broker does, and this mode shows where
the broker itself stops (in use each daemon runs on its own board). All publish to one loopback
Mosquitto (private, on a free port, with Debian's defaults, unless ``--broker``). One subscriber
in this process listens on ``retrotread/+/telemetry``; with ``--floor`` the floor view
(``retrotread floor``, its own process) reads the same broker too.

Once every client is connected, the workers are told a measurement window on the machine-wide
monotonic clock; each records when its treadmills produced the telemetry samples inside it (id,
seq, time), and the subscriber records when it received them. Reported: samples expected
(produced in the window), received, lost, and the latency p50/p99/max from production to
reception; the target is N=1,000, nothing lost, p99 ≤ 50 ms. CPU over the window as % of one
core: the broker's (``/proc``), the workers' (all their treadmills), the subscriber's (this
process) and the floor view's (with its peak RSS and how many tiles it holds at the end).
``RLIMIT_NOFILE`` is raised to its hard limit first (1,000 clients need 1,000 sockets each side).

This script must not need anything beyond the standard library, our packages and their
dependencies, and a ``mosquitto`` binary (for the private broker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import resource
import statistics
import subprocess
import sys
import time
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
from _common import Mosquitto, cpu_seconds, free_port, machine, nproc, status_mb  # noqa: E402
from telemetry import host_port, instrument, now, percentile, standstill  # noqa: E402

from retrotread.api.mqtt import NO_DELAY, MqttBridge  # noqa: E402
from retrotread.daemon.commands import SessionCommand  # noqa: E402
from retrotread.daemon.controller import Controller  # noqa: E402
from retrotread.drivers import open_driver  # noqa: E402

TARGET_N = 1000
CONNECT_WITHIN_S = 600.0  # 1,000 bridges connecting on 2 busy cores take a while
TARGET_P99_MS = 50.0
RATE_HZ = 5.0
DRAIN_S = 5.0  # after the window, how long stragglers may still arrive before they count as lost


# ------------------------------------------------------------------ a worker process


async def worker(url: str, first: int, count: int, rate_hz: float, clients: str, session: str | None = None) -> None:
    """Run treadmills ``first`` .. ``first+count-1``; talk to the parent on stdin/stdout."""
    logging.basicConfig(level=logging.ERROR)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    window = [float("inf"), float("-inf")]
    produced: dict[str, list[tuple[int, float]]] = {}

    def recorder(tid: str) -> Any:
        rows = produced.setdefault(tid, [])

        def record(seq: int, t: float) -> None:
            if window[0] <= t <= window[1]:
                rows.append((seq, t))

        return record

    async with contextlib.AsyncExitStack() as stack:
        ids = [f"fleet-{i:04d}" for i in range(first, first + count)]
        if clients == "light":
            reconnects = await _light(stack, url, ids, rate_hz, recorder)
        else:
            reconnects = await _daemons(stack, url, ids, rate_hz, recorder, session)
        cpu0 = os.times()
        print("ready", flush=True)
        start, end = map(float, (await reader.readline()).split()[1:3])
        window[:] = [start, end]
        await asyncio.sleep(max(0.0, end - now()) + 0.05)
        cpu1 = os.times()
        report = {
            "produced": produced,
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


# ------------------------------------------------------------------ the parent


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit, for us and the processes we start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return cpu_seconds(pid)
    except OSError:
        return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    nofile = raise_nofile()
    async with contextlib.AsyncExitStack() as stack:
        broker_pid: int | None = None
        if args.broker:
            url, broker = args.broker, "given"
        else:
            mosquitto = stack.enter_context(Mosquitto())
            url, broker, broker_pid = mosquitto.url, f"{mosquitto.version} (private, loopback)", mosquitto.pid
        host, port = host_port(url)
        received: dict[tuple[str, int], float] = {}
        missing: set[tuple[str, int]] = set()  # filled once the workers report; emptied as samples arrive
        all_in = asyncio.Event()
        sub = await stack.enter_async_context(
            aiomqtt.Client(host, port, identifier=f"b6-sub-{os.getpid()}", socket_options=NO_DELAY)
        )
        await sub.subscribe("retrotread/+/telemetry", qos=0)

        async def receive() -> None:
            async for m in sub.messages:
                t = now()
                tid = m.topic.value.split("/")[1]
                key = (tid, json.loads(m.payload)["seq"])
                received[key] = t
                if missing:
                    missing.discard(key)
                    if not missing:
                        all_in.set()

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
            await asyncio.sleep(max(0.0, start - now()))
            broker0, floor0, me0 = _cpu(broker_pid), _cpu(floor[0].pid if floor else None), os.times()
            await asyncio.sleep(max(0.0, end - now()))
            broker1, floor1, me1 = _cpu(broker_pid), _cpu(floor[0].pid if floor else None), os.times()
            reports = []
            for proc in procs:
                assert proc.stdout is not None
                async with asyncio.timeout(args.seconds + 120):
                    reports.append(json.loads(await proc.stdout.readline()))
            expected = {(tid, seq): t for r in reports for tid, rows in r["produced"].items() for seq, t in rows}
            missing.update(k for k in expected if k not in received)
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
    lat = [(received[k] - t) * 1000 for k, t in expected.items() if k in received]
    lost = len(expected) - len(lat)
    p99 = percentile(lat, 99)

    def cpu_pct(c0: float | None, c1: float | None) -> float | None:
        return round(100 * (c1 - c0) / args.seconds, 1) if c0 is not None and c1 is not None else None

    if floor_view is not None:
        floor_view["cpu_pct_of_one_core"] = cpu_pct(floor0, floor1)
    return {
        **machine("B6"),
        "broker": broker,
        "clients": args.clients,
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
    p.add_argument("--clients", choices=("daemon", "light"), default="daemon", help="what a treadmill is (see above)")
    p.add_argument("--floor", action="store_true", help="run the floor view (retrotread floor) on the broker too")
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    p.add_argument("--rate-hz", type=float, default=RATE_HZ, help="samples per second per treadmill")
    p.add_argument("--broker", help="mqtt:// URL of a broker to use instead of a private Mosquitto")
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
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
