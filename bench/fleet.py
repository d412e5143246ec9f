"""Figure B6: many treadmills on one broker, every sample counted and timed.

    python bench/fleet.py                          # N=100 at 5 Hz for 20 s, 2 worker processes
    python bench/fleet.py --n 200 --procs 2 --seconds 30 --broker mqtt://127.0.0.1:1883

Prints one JSON line. ``--procs`` worker processes each run their share of the N treadmills: a
controller on ``sim://motorized?rate_hz=5`` and its own ``MqttBridge`` (own client id, own topics),
all publishing to one loopback Mosquitto (private, on a free port, unless ``--broker``). One
subscriber in this process listens on ``retrotread/+/telemetry``. Once every bridge is connected,
the workers are told a measurement window on the machine-wide monotonic clock; each records when
its controllers produced the telemetry samples inside it (id, seq, time), and the subscriber
records when it received them. Reported: samples expected (produced in the window), received,
lost, and the latency p50/p99/max from production to reception; the target is N=100, nothing
lost, p99 ≤ 50 ms. The workers' and the broker's CPU time over the run are reported too.

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
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/fleet.py` from a checkout, installed or not
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import aiomqtt  # noqa: E402
from telemetry import host_port, instrument, machine, now, percentile, private_mosquitto  # noqa: E402

from retrotread.api.mqtt import NO_DELAY, MqttBridge  # noqa: E402
from retrotread.daemon.controller import Controller  # noqa: E402
from retrotread.drivers import open_driver  # noqa: E402

TARGET_N = 100
TARGET_P99_MS = 50.0
RATE_HZ = 5.0
DRAIN_S = 5.0  # after the window, how long stragglers may still arrive before they count as lost


# ------------------------------------------------------------------ a worker process


async def worker(url: str, first: int, count: int, rate_hz: float) -> None:
    """Run treadmills ``first`` .. ``first+count-1``; talk to the parent on stdin/stdout."""
    logging.basicConfig(level=logging.ERROR)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    window = (float("inf"), float("-inf"))
    produced: dict[str, list[tuple[int, float]]] = {}

    def recorder(tid: str) -> Any:
        rows = produced.setdefault(tid, [])

        def record(telemetry: Any) -> None:
            t = now()
            if window[0] <= t <= window[1]:
                rows.append((telemetry.seq, t))

        return record

    async with contextlib.AsyncExitStack() as stack:
        bridges = []
        for i in range(first, first + count):
            tid = f"fleet-{i:03d}"
            driver = open_driver(f"sim://motorized?rate_hz={rate_hz:g}")
            controller = await stack.enter_async_context(Controller(driver, treadmill_id=tid))
            instrument(controller, recorder(tid))
            bridges.append(await stack.enter_async_context(MqttBridge(controller, url, discovery=False)))
        for bridge in bridges:
            await bridge.wait_connected(within=60)
        cpu0 = os.times()
        print("ready", flush=True)
        start, end = map(float, (await reader.readline()).split()[1:3])
        window = (start, end)
        await asyncio.sleep(max(0.0, end - now()) + 0.05)
        cpu1 = os.times()
        reconnects = sum(b.connections - 1 for b in bridges)
        report = {
            "produced": produced,
            "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
            "reconnects": reconnects,
        }
        print(json.dumps(report), flush=True)
        await reader.readline()  # "quit": the parent has counted; close cleanly


# ------------------------------------------------------------------ the parent


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        if args.broker:
            url, broker = args.broker, "given"
        else:
            url, version = await stack.enter_async_context(private_mosquitto())
            broker = f"{version} (private, loopback)"
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
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=1 << 26,  # a worker's report is one long JSON line
                )
            )
            first += share
        try:
            for proc in procs:
                assert proc.stdout is not None
                async with asyncio.timeout(120):
                    line = await proc.stdout.readline()
                if line.strip() != b"ready":
                    raise SystemExit(f"bench: a worker failed to start: {line!r}")
            start = now() + 1.0
            end = start + args.seconds
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(f"go {start} {end}\n".encode())
                await proc.stdin.drain()
            reports = []
            for proc in procs:
                assert proc.stdout is not None
                async with asyncio.timeout(args.seconds + 60):
                    reports.append(json.loads(await proc.stdout.readline()))
            expected = {(tid, seq): t for r in reports for tid, rows in r["produced"].items() for seq, t in rows}
            missing.update(k for k in expected if k not in received)
            if missing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DRAIN_S):
                        await all_in.wait()
            broker_cpu = _broker_cpu_s(port) if not args.broker else None
        finally:
            for proc in procs:
                if proc.stdin is not None and not proc.stdin.is_closing():
                    proc.stdin.write(b"quit\n")
                    with contextlib.suppress(ConnectionError):
                        await proc.stdin.drain()
            for proc in procs:
                try:
                    async with asyncio.timeout(30):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
    lat = [(received[k] - t) * 1000 for k, t in expected.items() if k in received]
    lost = len(expected) - len(lat)
    p99 = percentile(lat, 99)
    return {
        "figure": "B6",
        **machine(),
        "broker": broker,
        "n": args.n,
        "procs": args.procs,
        "rate_hz": args.rate_hz,
        "seconds": args.seconds,
        "expected": len(expected),
        "received": len(lat),
        "lost": lost,
        "loss_pct": round(100 * lost / len(expected), 3) if expected else None,
        "p50_ms": round(statistics.median(lat), 2) if lat else None,
        "p99_ms": round(p99, 2),
        "max_ms": round(max(lat), 2) if lat else None,
        "reconnects": sum(r["reconnects"] for r in reports),
        "workers_cpu_pct_of_one_core": round(100 * sum(r["cpu_s"] for r in reports) / args.seconds, 1),
        "broker_cpu_s_total": broker_cpu,
        "target": {"n": TARGET_N, "lost": 0, "p99_ms": TARGET_P99_MS},
        "ok": args.n >= TARGET_N and lost == 0 and bool(lat) and p99 <= TARGET_P99_MS,
    }


def _broker_cpu_s(port: int) -> float | None:
    """CPU seconds the private Mosquitto has used (from /proc), or None where that is unknown."""
    try:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"mosquitto" in cmdline and b"retrotread-bench-" in cmdline:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    ticks = os.sysconf("SC_CLK_TCK")
                    return round((int(fields[11]) + int(fields[12])) / ticks, 2)
    except OSError:
        return None
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=TARGET_N, help="simulated treadmills")
    p.add_argument("--procs", type=int, default=2, help="worker processes sharing them")
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    p.add_argument("--rate-hz", type=float, default=RATE_HZ, help="samples per second per treadmill")
    p.add_argument("--broker", help="mqtt:// URL of a broker to use instead of a private Mosquitto")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        asyncio.run(worker(args.url, args.first, args.count, args.rate_hz))
        return
    logging.basicConfig(level=logging.ERROR)
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
