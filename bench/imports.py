"""B4's start-up half (issue 16): what ``retrotread run`` imports, what that costs in memory and
time, and how soon it answers, beside the floor of its own stack measured in the same run.

    python bench/imports.py [--runs 10] [--driver sim://motorized?rate_hz=10] [--top 15]

Prints one JSON line:

- ``rss_after_import_mb``, ``import_s``: a fresh interpreter importing the run path (the CLI, the
  composition root, the app, the server, the driver), read from ``/proc/self/status`` after it;
- ``importtime``: a real ``run`` under ``python -X importtime`` up to its first state answer, as the
  sum of every module's own time, the module count, the ``top`` modules by cumulative time and the
  ``top`` top-level packages by their modules' own time (importtime's figures run high: they are for
  ranking, ``run`` below is the real clock);
- ``run``: ``runs`` real ``retrotread run --driver DRIVER --mqtt none`` processes, each from exec to
  its first HTTP 200 on ``GET /api/v1/state`` (``ready_s``), with its peak RSS (VmHWM) and the CPU
  it had used by then (steadier than the wall clock on a busy machine);
- ``floor``: the same for a one-route FastAPI app on uvicorn (the stack the daemon is built on, with
  nothing of ours), alternating with the daemon's runs so both see the same machine.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

RETROTREAD = str(Path(sys.executable).with_name("retrotread"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET = {"rss_mb": 45, "ready_s": 0.8}

IMPORT_RUN_PATH = """
import importlib, sys, time
t0 = time.perf_counter()
import retrotread.api.cli, retrotread.api.cli.serve, retrotread.api.compose, retrotread.api.app, retrotread.api.server
from retrotread.drivers.registry import BACKENDS
from urllib.parse import urlsplit
importlib.import_module(BACKENDS[urlsplit(sys.argv[1]).scheme][0])
dt = time.perf_counter() - t0
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
print(rss / 1024, dt, len(sys.modules))
"""

# The floor: FastAPI and uvicorn serving one small model on the route the bench polls.
FLOOR = """
import asyncio, socket, sys
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

class State(BaseModel):
    connected: bool
    speed_mph: float

app = FastAPI()

@app.get("/api/v1/state", response_model=State)
async def state() -> State:
    return State(connected=True, speed_mph=0.0)

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(128)
server = uvicorn.Server(uvicorn.Config(app, ws="none", log_level="warning", access_log=False, lifespan="on"))
asyncio.run(server.serve(sockets=[sock]))
"""


class Sample(NamedTuple):
    ready_s: float  # exec -> first 200
    rss_mb: float  # VmHWM then
    cpu_s: float  # CPU used by then


IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"bench: no VmHWM for {pid}")


def answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/api/v1/state")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def cpu_s(pid: int) -> float:
    """utime + stime so far: the start-up's own work, which a busy machine stretches less than the wall clock."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start(cmd: list[str], port: int, env: dict[str, str], stderr: Any, within: float = 30.0) -> Sample:
    """Exec ``cmd``, poll until it answers 200 (every 2 ms), then stop it."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        while not answers(port):
            if proc.poll() is not None:
                raise SystemExit(f"bench: {cmd[:4]} exited with {proc.returncode} before it answered")
            if time.monotonic() - t0 > within:
                raise SystemExit(f"bench: {cmd[:4]} did not answer within {within} s")
            time.sleep(0.002)
        ready = time.monotonic() - t0
        return Sample(ready, peak_rss_mb(proc.pid), cpu_s(proc.pid))
    finally:
        proc.terminate()
        proc.wait(15)


def daemon_cmd(driver: str, port: int, *python_flags: str) -> list[str]:
    run = ["run", "--driver", driver, "--mqtt", "none", "--http", f"127.0.0.1:{port}"]
    return [sys.executable, *python_flags, RETROTREAD, *run]


def importtime_profile(driver: str, env: dict[str, str], top: int) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryFile("w+") as err:
        rss = start(daemon_cmd(driver, port, "-X", "importtime"), port, env, err).rss_mb
        err.seek(0)
        rows = [(int(m[1]), int(m[2]), m[4]) for m in map(IMPORTTIME.match, err) if m]
    packages: collections.Counter[str] = collections.Counter()
    for own, _, name in rows:
        packages[name.split(".")[0]] += own
    return {
        "total_s": round(sum(own for own, _, _ in rows) / 1e6, 3),
        "modules": len(rows),
        "rss_peak_mb": round(rss, 1),
        "top_cumulative_ms": [[name, round(cum / 1000, 1)] for _, cum, name in sorted(rows, key=lambda r: -r[1])[:top]],
        "top_packages_ms": [[name, round(us / 1000, 1)] for name, us in packages.most_common(top)],
    }


def summary(samples: list[Sample]) -> dict[str, Any]:
    ready = [x.ready_s for x in samples]
    rss = [x.rss_mb for x in samples]
    return {
        "ready_s_median": round(statistics.median(ready), 3),
        "ready_s_min": round(min(ready), 3),
        "ready_s_max": round(max(ready), 3),
        "cpu_s_to_ready_median": round(statistics.median(x.cpu_s for x in samples), 3),
        "rss_peak_mb_median": round(statistics.median(rss), 1),
        "rss_peak_mb_max": round(max(rss), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=10, help="real runs of the daemon and of the floor (default 10)")
    ap.add_argument("--driver", default="sim://motorized?rate_hz=10", help="the daemon's --driver")
    ap.add_argument("--top", type=int, default=15, help="modules and packages listed (default 15)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="retrotread-bench-") as state:
        # The daemon's own config only: none from the machine, and state in a directory of our own.
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RETROTREAD_")}
        env["RETROTREAD_DAEMON__STATE_DIR"] = state
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_RUN_PATH, args.driver], env=env, capture_output=True, text=True, check=True
        )
        rss_import, import_s, modules = out.stdout.split()
        profile = importtime_profile(args.driver, env, args.top)
        daemon: list[Sample] = []
        floor: list[Sample] = []
        for _ in range(args.runs):
            port = free_port()
            daemon.append(start(daemon_cmd(args.driver, port), port, env, subprocess.DEVNULL))
            port = free_port()
            floor.append(start([sys.executable, "-c", FLOOR, str(port)], port, env, subprocess.DEVNULL))
    print(
        json.dumps(
            {
                **machine("B4-imports"),
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "driver": args.driver,
                "runs": args.runs,
                "rss_after_import_mb": round(float(rss_import), 1),
                "import_s": round(float(import_s), 3),
                "modules_after_import": int(modules),
                "importtime": profile,
                "run": summary(daemon),
                "floor": summary(floor),
                "target": TARGET,
            }
        )
    )


if __name__ == "__main__":
    main()
