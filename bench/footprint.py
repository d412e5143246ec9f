"""B4, footprint: the daemon on the simulated belt at 10 Hz with one SSE client (and MQTT when a
broker URL is given), measured over a window: RSS, CPU share of one core, and ready time
(process start → HTTP answering, and → READY=1 on a notify socket). Prints one JSON line.

    python bench/footprint.py [--seconds 60] [--mqtt mqtt://127.0.0.1:1883]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

RETROTREAD = str(Path(sys.executable).with_name("retrotread"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--mqtt", default="none")
    args = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as state, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify_path = Path(state) / "notify.sock"
        notify.bind(str(notify_path))
        env = {**os.environ, "RETROTREAD_DAEMON__STATE_DIR": state, "NOTIFY_SOCKET": str(notify_path)}
        t_spawn = time.monotonic()
        proc = subprocess.Popen(
            [
                RETROTREAD,
                "run",
                "--driver",
                "sim://motorized?rate_hz=10",
                "--http",
                f"127.0.0.1:{port}",
                "--mqtt",
                args.mqtt,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            notify.settimeout(30)
            while not notify.recv(4096).startswith(b"READY=1"):
                pass
            t_ready_notify = time.monotonic() - t_spawn
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url) as client:
                while True:
                    try:
                        client.get("/api/v1/state").raise_for_status()
                        break
                    except httpx.HTTPError:
                        time.sleep(0.005)
            t_ready_http = time.monotonic() - t_spawn
            events = 0
            stop = threading.Event()

            def sse() -> None:
                nonlocal events
                with (
                    httpx.Client(base_url=url, timeout=httpx.Timeout(5, read=None)) as c,
                    c.stream("GET", "/api/v1/events") as resp,
                ):
                    for line in resp.iter_lines():
                        if line.startswith("data:"):
                            events += 1
                        if stop.is_set():
                            return

            reader = threading.Thread(target=sse, daemon=True)
            reader.start()
            time.sleep(2.0)  # settle: the SSE client connected, first samples flowing
            cpu0, w0 = cpu_seconds(proc.pid), time.monotonic()
            peak = 0.0
            while time.monotonic() - w0 < args.seconds:
                time.sleep(1.0)
                peak = max(peak, rss_mb(proc.pid))
            cpu1, w1 = cpu_seconds(proc.pid), time.monotonic()
            stop.set()
        finally:
            proc.terminate()
            proc.wait(10)
    print(
        json.dumps(
            {
                **machine("B4"),
                "window_s": round(w1 - w0, 1),
                "mqtt": args.mqtt,
                "rss_mb_peak": round(peak, 1),
                "cpu_pct_of_one_core": round(100 * (cpu1 - cpu0) / (w1 - w0), 2),
                "ready_http_s": round(t_ready_http, 3),
                "ready_notify_s": round(t_ready_notify, 3),
                "sse_events": events,
                "target": {"rss_mb": 60, "cpu_pct": 2, "ready_s": 1.5},
            }
        )
    )


if __name__ == "__main__":
    main()
