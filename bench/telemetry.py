"""Figure B2: telemetry freshness, a simulated sample produced → the same sample received over MQTT.

    python bench/telemetry.py                       # a private Mosquitto on a free loopback port
    python bench/telemetry.py --broker mqtt://127.0.0.1:1883    # the machine's broker instead

Prints one JSON line. A controller runs the simulated motorized belt at ``--rate-hz`` with the belt
moving (so state is published alongside telemetry, as in use), and its ``MqttBridge`` publishes to
the broker; a subscriber in the same process listens on ``retrotread/<id>/telemetry``. The moment a
sample is produced is when the controller hands its telemetry to the hub (recorded in process by
``seq``); the moment it is received is when the subscriber has the message. Reported: p50/p99/max
over ``--samples`` samples after a warm-up, samples lost, and the floor measured in the same run:
a raw message of the same size published by one client and received by another through the same
broker (p50/p99 over as many messages, paced at the same rate), with the ratio of the p99s.

This script must not need anything beyond the standard library, our packages and their
dependencies, and a ``mosquitto`` binary (for the private broker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/telemetry.py` from a checkout, installed or not

import aiomqtt  # noqa: E402

from retrotread.api.mqtt import NO_DELAY, MqttBridge  # noqa: E402
from retrotread.daemon.controller import Controller  # noqa: E402
from retrotread.drivers import open_driver  # noqa: E402
from retrotread.drivers.units import Speed  # noqa: E402

TARGET_P99_MS = 5.0
WARMUP = 50


def now() -> float:
    # CLOCK_MONOTONIC is one clock for every process on the machine (bench/fleet.py compares across them).
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def machine() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
    }


# ------------------------------------------------------------------ a private broker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_exe() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)


@contextlib.asynccontextmanager
async def private_mosquitto(extra_config: str = "") -> AsyncIterator[tuple[str, str]]:
    """A Mosquitto of our own on a free loopback port: yields (url, version); killed at the end."""
    exe = mosquitto_exe()
    if exe is None:
        raise SystemExit("bench: mosquitto is not installed (apt install mosquitto), or pass --broker URL")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="retrotread-bench-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages false\n" + ("user root\n" if os.geteuid() == 0 else "") + extra_config
        )
        proc = await asyncio.create_subprocess_exec(
            exe, "-c", str(conf), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        version = "mosquitto"
        try:
            async with asyncio.timeout(10):
                while line := (await proc.stderr.readline()).decode():
                    if " running" in line:
                        version = line.split(": ", 1)[-1].replace(" running", "").strip()
                        break
                else:
                    raise SystemExit("bench: mosquitto did not start")
            drain = asyncio.get_running_loop().create_task(proc.stderr.read())  # never let its pipe fill
            try:
                yield f"mqtt://127.0.0.1:{port}", version
            finally:
                proc.kill()
                await proc.wait()
                await drain
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def broker_url(args: argparse.Namespace, stack: contextlib.AsyncExitStack) -> tuple[str, str]:
    if args.broker:
        return args.broker, "given"
    url, version = await stack.enter_async_context(private_mosquitto())
    return url, f"{version} (private, loopback)"


def host_port(url: str) -> tuple[str, int]:
    from retrotread.api.mqtt import parse_broker_url

    b = parse_broker_url(url)
    return b.host, b.port


# ------------------------------------------------------------------ measurements


async def floor(url: str, count: int, period_s: float, size: int) -> list[float]:
    """Raw publish → receive through the broker, paced like the samples: the machine's floor."""
    host, port = host_port(url)
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    done = asyncio.Event()
    pad = "x" * max(0, size - 30)
    async with (
        aiomqtt.Client(host, port, identifier=f"b2-floor-sub-{os.getpid()}", socket_options=NO_DELAY) as sub,
        aiomqtt.Client(host, port, identifier=f"b2-floor-pub-{os.getpid()}", socket_options=NO_DELAY) as pub,
    ):
        await sub.subscribe("bench/b2/floor", qos=0)

        async def receive() -> None:
            async for m in sub.messages:
                t = now()
                seq = json.loads(m.payload)["seq"]
                got[seq] = t
                if len(got) >= count:
                    done.set()
                    return

        reader = asyncio.get_running_loop().create_task(receive())
        start = now()
        for seq in range(count):
            await asyncio.sleep(max(0.0, start + seq * period_s - now()))
            sent[seq] = now()
            await pub.publish("bench/b2/floor", json.dumps({"seq": seq, "pad": pad}), qos=0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await done.wait()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return [(got[s] - sent[s]) * 1000 for s in sent if s in got]


def instrument(controller: Controller, on_telemetry: Callable[[Any], None]) -> None:
    """Record the moment each telemetry update reaches the hub, i.e. the sample's production."""
    publish = controller.hub.publish

    def recorded(kind: Any, payload: Any) -> None:
        if kind == "telemetry":
            on_telemetry(payload)
        publish(kind, payload)

    controller.hub.publish = recorded  # type: ignore[method-assign]


async def standstill(controller: Controller, rate_hz: float) -> None:
    """Until the belt has been still long enough for a start to be accepted (S4)."""
    sup = controller.supervisor
    updates = controller.hub.subscribe(("telemetry",), replay=False)
    try:
        while sup.last_motion_age(controller.clock()) is not None or controller.samples_seen < rate_hz * 1.2:
            await updates.next(within=5)
    finally:
        controller.hub.unsubscribe(updates)


async def freshness(url: str, samples: int, rate_hz: float) -> tuple[list[float], int, int]:
    host, port = host_port(url)
    tid = f"b2-{os.getpid()}"
    produced: dict[int, float] = {}
    received: dict[int, float] = {}
    enough = asyncio.Event()
    first = sys.maxsize  # the last seq before the belt was started; counted are the ones after it
    async with Controller(open_driver(f"sim://motorized?rate_hz={rate_hz:g}"), treadmill_id=tid) as controller:
        instrument(controller, lambda t: produced.__setitem__(t.seq, now()))
        async with (
            MqttBridge(controller, url, discovery=False) as bridge,
            aiomqtt.Client(host, port, identifier=f"{tid}-sub", socket_options=NO_DELAY) as sub,
        ):
            await bridge.wait_connected(within=10)
            await sub.subscribe(f"retrotread/{tid}/telemetry", qos=0)

            async def receive() -> None:
                counted = 0
                async for m in sub.messages:
                    t = now()
                    seq = json.loads(m.payload)["seq"]
                    received[seq] = t
                    counted += seq > first
                    if counted >= samples + WARMUP:
                        enough.set()

            reader = asyncio.get_running_loop().create_task(receive())
            # The belt moving, as in use: state changes are published between the samples.
            await standstill(controller, rate_hz)
            first = max(produced, default=0)
            decision = await controller.start_belt(Speed.from_mph(1.0))
            if decision.refusal is not None:
                raise SystemExit(f"bench: start refused: {decision.refusal.error}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(samples / rate_hz * 2 + 10):
                    await enough.wait()
            last = max(received, default=first)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    window = [s for s in sorted(produced) if first < s <= last][WARMUP:]
    window = window[:samples]
    latencies = [(received[s] - produced[s]) * 1000 for s in window if s in received]
    lost = sum(1 for s in window if s not in received)
    return latencies, lost, len(window)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=2000, help="samples measured (after a warm-up of 50)")
    p.add_argument("--rate-hz", type=float, default=100.0, help="the simulated belt's sample rate")
    p.add_argument("--broker", help="mqtt:// URL of a broker to use instead of a private Mosquitto")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)  # stdout is the figure; the daemon's warnings are noise here
    async with contextlib.AsyncExitStack() as stack:
        url, broker = await broker_url(args, stack)
        lat, lost, window = await freshness(url, args.samples, args.rate_hz)
        probe = json.dumps({"speed_mph": 1.002, "incline_pct": 0.0, "distance_m": 123.4,
                            "ts": "2026-11-21T15:03:46.423Z", "seq": 123456})  # fmt: skip
        base = await floor(url, len(lat) or args.samples, 1.0 / args.rate_hz, len(probe))
    out = {
        "figure": "B2",
        **machine(),
        "broker": broker,
        "rate_hz": args.rate_hz,
        "samples": len(lat),
        "lost": lost,
        "window": window,
        "p50_ms": round(statistics.median(lat), 3) if lat else None,
        "p99_ms": round(percentile(lat, 99), 3),
        "max_ms": round(max(lat), 3) if lat else None,
        "floor_samples": len(base),
        "floor_p50_ms": round(statistics.median(base), 3) if base else None,
        "floor_p99_ms": round(percentile(base, 99), 3),
        "p99_over_floor": round(percentile(lat, 99) / percentile(base, 99), 2) if lat and base else None,
        "target_p99_ms": TARGET_P99_MS,
        "ok": bool(lat) and lost == 0 and percentile(lat, 99) <= TARGET_P99_MS,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
