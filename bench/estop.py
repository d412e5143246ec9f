"""B1, emergency-stop latency (docs/performance.md): ``python bench/estop.py [--trials N]``.

Prints one JSON line with p50/p99/max in milliseconds for:

- ``internal_sim``: ``controller.estop()`` on ``sim://motorized`` (10 Hz) → the stop handed to the
  driver (its ``emergency_stop()`` called): the daemon's own path, no I/O.
- ``internal_pty``: ``controller.estop()`` with a ``CsafeDriver`` polling at 10 Hz → the stop frame
  read by the simulated CSAFE console, which runs in a separate process on the other end of a
  pseudo-terminal (times on the shared CLOCK_MONOTONIC). Also reported: trigger → the frame written
  by the driver, and in how many trials a poll was in flight when the stop went out.
- ``pty_floor``: a 4-byte write on a raw pty → the asyncio reader on the other end, in one process:
  what the machine allows; ``ratio_p99`` compares ``internal_pty`` with it.
- ``http_pty``: ``POST /api/v1/estop`` (httpx, in the bench's process) on the real app served by
  uvicorn on a free port → the stop frame read by the console process.
- ``http_load``: ``POST /api/v1/estop`` on the daemon's own HTTP stack (``bind_listener``,
  ``build_server``, ``create_app``; sim://motorized at 10 Hz) → the stop handed to the driver and
  → the 202 read by the client, with no load (the floor), with 500 event-stream readers, and during
  a slowloris of 1,000 connections; the load comes from a separate process (``--load-only`` skips
  the other measurements).

Each trial triggers at a random phase of the 10 Hz poll, then resets the latch. The belt stands still
throughout (the supervisor refuses a reset within 2 s of motion, S6), so this measures the stop's
path, not the belt. Logging goes where the daemon's would, formatted, but to /dev/null.

Standard library timers only (``time.monotonic``; ``perf_counter`` is the same clock on Linux).
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
import random
import shutil
import socket
import sys
import tempfile
import time
import tty
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from retrotread.daemon.controller import Controller
from retrotread.drivers.registry import open_driver

STOP_FRAME = bytes.fromhex("f1 25 03 00 00 11 86 b1 f2")  # SetSpeed 0 + GoFinished, as CsafeDriver writes it
POLL_PERIOD_S = 0.1

# The console in its own process: it prints each stop frame it reads, with its receive time.
_CONSOLE = r"""
import asyncio, json, signal, sys
from pathlib import Path
from retrotread.sims.serial_serve import serve_csafe

async def main() -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    def trace(record):
        if record.get("event") == "frame" and record.get("stop"):
            sys.stdout.write(json.dumps({"t": record["t"], "index": record["index"]}) + "\n")
            sys.stdout.flush()
    async with serve_csafe(Path(sys.argv[1]), trace=trace) as console:
        print(json.dumps({"ready": str(console.link)}), flush=True)
        await done.wait()

asyncio.run(main())
"""


def summary(latencies_s: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies_s)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, int(q * n + 0.999999) - 1))] * 1000  # nearest rank

    return {
        "n": n,
        "p50_ms": round(rank(0.50), 4),
        "p99_ms": round(rank(0.99), 4),
        "max_ms": round(ordered[-1] * 1000, 4),
    }


def timed_estop(driver: Any, written: list[float]) -> None:
    """Record when the guard hands the stop to the driver and when the driver has written it."""
    original: Callable[[], Awaitable[None]] = driver.emergency_stop

    async def emergency_stop() -> None:
        written.append(time.monotonic())  # entry: the stop reached the driver
        await original()
        written.append(time.monotonic())  # return: the frame is written (or the sim obeyed)

    driver.emergency_stop = emergency_stop


async def settle(controller: Controller) -> None:
    """Wait until the supervisor has seen the belt stand still long enough to reset and start."""
    async with asyncio.timeout(10):
        while controller.samples_seen < 15:  # noqa: ASYNC110 (a counter; 1.5 s of standing belt at 10 Hz)
            await asyncio.sleep(0.05)


async def reset(controller: Controller) -> None:
    decision = await controller.reset()
    if decision.refusal is not None:
        raise RuntimeError(f"reset refused: {decision.refusal.error}")


# -- (a) ---------------------------------------------------------------------------------------


async def internal_sim(trials: int) -> dict[str, Any]:
    driver = open_driver("sim://motorized?rate_hz=10")
    marks: list[float] = []
    timed_estop(driver, marks)
    latencies: list[float] = []
    async with Controller(driver) as controller:
        await settle(controller)
        for _ in range(trials):
            await asyncio.sleep(random.uniform(0, POLL_PERIOD_S))
            marks.clear()
            t0 = time.monotonic()
            await controller.estop("bench", "bench")
            latencies.append(marks[0] - t0)
            await reset(controller)
    return {"what": "controller.estop() -> SimBeltDriver.emergency_stop() entered (sim://motorized, 10 Hz)"} | summary(
        latencies
    )


# -- (b) and (d): the console in its own process ----------------------------------------------


@contextlib.asynccontextmanager
async def console_process(link: Path) -> AsyncIterator[asyncio.Queue[float]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CONSOLE, str(link), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    first = json.loads(await proc.stdout.readline())
    assert first["ready"] == str(link), first
    stops: asyncio.Queue[float] = asyncio.Queue()

    async def read() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            stops.put_nowait(float(json.loads(line)["t"]))

    reader = asyncio.create_task(read())
    try:
        yield stops
    finally:
        proc.terminate()
        await proc.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def read_after(stops: asyncio.Queue[float], t0: float) -> float:
    """The receive time of the first stop frame the console read after ``t0``."""
    async with asyncio.timeout(2):
        while True:
            t = await stops.get()
            if t >= t0:
                return t


async def internal_pty(trials: int, where: Path) -> dict[str, Any]:
    link = where / "ttyB1"
    async with console_process(link) as stops:
        driver = open_driver(f"csafe://{link}?poll_hz=10")
        marks: list[float] = []
        timed_estop(driver, marks)
        read: list[float] = []
        written: list[float] = []
        in_flight = 0
        async with Controller(driver) as controller:
            await settle(controller)
            for _ in range(trials):
                await asyncio.sleep(random.uniform(0, POLL_PERIOD_S))
                marks.clear()
                dropped = driver.dropped_answers  # type: ignore[attr-defined]
                t0 = time.monotonic()
                await controller.estop("bench", "bench")
                read.append(await read_after(stops, t0) - t0)
                written.append(marks[1] - t0)
                await reset(controller)
                in_flight += driver.dropped_answers > dropped  # type: ignore[attr-defined]
    return {
        "what": "controller.estop() -> stop frame read by the simulated CSAFE console (own process) over a pty; "
        "CsafeDriver polling at 10 Hz",
        **summary(read),
        "written": summary(written),
        "poll_in_flight_trials": in_flight,
    }


@contextlib.asynccontextmanager
async def serving(controller: Controller, *, daemon_stack: bool) -> AsyncIterator[int]:
    """The HTTP app over ``controller`` on a free loopback port, started and settled: its port.

    ``daemon_stack``: the daemon's own server (``bind_listener``, ``build_server``: GuardedH11Protocol,
    HttpGuard); otherwise plain uvicorn.
    """
    import uvicorn

    from retrotread.api.app import create_app
    from retrotread.api.server import bind_listener, build_server

    @contextlib.asynccontextmanager
    async def borrowed() -> AsyncIterator[Controller]:
        yield controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app = create_app(borrowed)
    sock: socket.socket | None = None
    server: uvicorn.Server
    if daemon_stack:
        sock = bind_listener(f"127.0.0.1:{port}")
        server = build_server(app)
        task = asyncio.create_task(server.serve(sockets=[sock]))
    else:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
                await asyncio.sleep(0.01)
        await settle(controller)
        yield port
    finally:
        server.should_exit = True
        await task
        if sock is not None:
            sock.close()


async def http_pty(trials: int, where: Path) -> dict[str, Any]:
    import httpx

    link = where / "ttyB1h"
    async with console_process(link) as stops:
        driver = open_driver(f"csafe://{link}?poll_hz=10")
        read: list[float] = []
        async with (
            Controller(driver) as controller,
            serving(controller, daemon_stack=False) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            await client.get("/healthz")  # the connection is open and kept alive
            for _ in range(trials):
                await asyncio.sleep(random.uniform(0, POLL_PERIOD_S))
                t0 = time.monotonic()
                answer = await client.post("/api/v1/estop", json={"reason": "bench"})
                read.append(await read_after(stops, t0) - t0)
                if answer.status_code != 202:
                    raise RuntimeError(f"estop answered {answer.status_code}: {answer.text}")
                await reset(controller)
    return {
        "what": "POST /api/v1/estop (httpx keep-alive client in the bench process, uvicorn) -> stop frame read by "
        "the console process over a pty; CsafeDriver polling at 10 Hz",
        **summary(read),
    }


# -- (e) the HTTP stop under load ---------------------------------------------------------------

# The load in its own process: N event-stream readers, or N slowloris connections that dribble a
# request head (one byte a second) and reconnect when the server drops them.
_LOAD = r"""
import asyncio, sys

async def sse(port):
    while True:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /api/v1/events HTTP/1.1\r\nhost: localhost\r\n\r\n")
            await w.drain()
            first = await r.read(65536)
            if b" 200 " not in first.split(b"\r\n", 1)[0]:
                raise SystemExit(f"stream refused: {first[:80]!r}")
            ready.release()
            while await r.read(65536):
                pass
        except OSError:
            await asyncio.sleep(0.1)

async def slowloris(port):
    counted = False
    while True:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            if not counted:
                counted = True
                ready.release()
            for b in b"GET /api/v1/state HTTP/1.1\r\nhost: localhost\r\nx-a: " + b"a" * 100000:
                w.write(bytes([b]))
                await w.drain()
                await asyncio.sleep(1.0)
        except OSError:
            await asyncio.sleep(0.05)

async def main():
    global ready
    kind, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ready = asyncio.Semaphore(0)
    fn = sse if kind == "sse" else slowloris
    tasks = [asyncio.create_task(fn(port)) for _ in range(n)]
    for _ in range(n):
        await ready.acquire()
    print("ready", flush=True)
    await asyncio.get_running_loop().connect_read_pipe(asyncio.Protocol, sys.stdin)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def load_process(kind: str, port: int, n: int) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LOAD,
        kind,
        str(port),
        str(n),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = await proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"load {kind} did not start: {line!r}")
        yield
    finally:
        proc.terminate()
        await proc.wait()


async def http_load(trials: int) -> dict[str, Any]:
    import httpx

    driver = open_driver("sim://motorized?rate_hz=10")
    marks: list[float] = []
    timed_estop(driver, marks)
    out: dict[str, Any] = {
        "what": "POST /api/v1/estop on the daemon's HTTP stack (GuardedH11Protocol, HttpGuard), httpx keep-alive "
        "client in the bench process, load from another process; sim://motorized at 10 Hz",
    }
    async with Controller(driver) as controller, serving(controller, daemon_stack=True) as port:
        try:
            for name, kind, n in (("floor", None, 0), ("sse_500", "sse", 500), ("slowloris_1000", "slowloris", 1000)):
                load = load_process(kind, port, n) if kind else contextlib.nullcontext()
                async with load:
                    to_driver: list[float] = []
                    to_answer: list[float] = []
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                        await client.get("/healthz")  # the connection is open and kept alive
                        health: list[float] = []
                        for i in range(trials):
                            await asyncio.sleep(random.uniform(0, POLL_PERIOD_S))
                            marks.clear()
                            t0 = time.monotonic()
                            answer = await client.post("/api/v1/estop", json={"reason": "bench"})
                            to_answer.append(time.monotonic() - t0)
                            to_driver.append(marks[0] - t0)
                            if answer.status_code != 202:
                                raise RuntimeError(f"estop answered {answer.status_code}: {answer.text}")
                            await reset(controller)
                            if i % 10 == 0:
                                t1 = time.monotonic()
                                await client.get("/healthz")
                                health.append(time.monotonic() - t1)
                    out[name] = {
                        "to_driver": summary(to_driver),
                        "to_answer": summary(to_answer),
                        "healthz": summary(health),
                        "subscribers": controller.hub.subscribers,
                    }
        finally:
            controller.hub.close()  # ends the SSE readers' open responses, which the server's shutdown waits on
    return out


# -- (c) ---------------------------------------------------------------------------------------


async def pty_floor(trials: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    os.set_blocking(slave, False)
    arrived: asyncio.Future[float] | None = None

    def readable() -> None:
        os.read(master, 64)
        if arrived is not None and not arrived.done():
            arrived.set_result(time.monotonic())

    loop.add_reader(master, readable)
    latencies: list[float] = []
    try:
        for _ in range(trials):
            await asyncio.sleep(random.uniform(0, 0.01))
            arrived = loop.create_future()
            t0 = time.monotonic()
            os.write(slave, STOP_FRAME)
            latencies.append(await arrived - t0)
    finally:
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)
    return {"what": "os.write on a raw pty -> asyncio reader on the other end, one process"} | summary(latencies)


async def main(trials: int, with_http: bool, load_only: bool = False) -> dict[str, Any]:
    where = Path(tempfile.mkdtemp(prefix="retrotread-b1-"))
    try:
        result: dict[str, Any] = {
            "figure": "B1",
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "trials": trials,
        }
        if load_only:
            result["http_load"] = await http_load(trials)
            result["target_p99_ms"] = {"http": 10.0}
            return result
        result["internal_sim"] = await internal_sim(trials)
        result["internal_pty"] = await internal_pty(trials, where)
        result["pty_floor"] = await pty_floor(trials)
        result["ratio_p99"] = round(result["internal_pty"]["p99_ms"] / result["pty_floor"]["p99_ms"], 1)
        if with_http:
            result["http_pty"] = await http_pty(trials, where)
            result["http_load"] = await http_load(trials)
        result["target_p99_ms"] = {"internal": 2.0, "http": 10.0}
        result["belt"] = "standing (latch reset between trials); trigger at a random phase of the 10 Hz poll"
        return result
    finally:
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=500, help="trials per measurement (default 500)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP measurements")
    parser.add_argument("--load-only", action="store_true", help="only the HTTP stop under load (http_load)")
    args = parser.parse_args()
    # Where the daemon's log lines go, formatted, so their cost is in the figure; not to the terminal.
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=open(os.devnull, "w"),  # noqa: SIM115
    )
    print(json.dumps(asyncio.run(main(args.trials, not args.no_http, args.load_only))), flush=True)
