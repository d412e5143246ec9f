"""The floor view's cost: N treadmills in use on one broker, the floor view and its page in headless
Chromium; how long a change takes from the broker to the tile, and what the floor process costs.

    python bench/floor.py                                  # N=100 at 5 Hz, a 60 s window
    python bench/floor.py --n 20 --seconds 15              # a dry run
    python bench/floor.py --n 100 --seconds 60 --probes 5 --probe-hz 1

Prints one JSON line. The load is ``bench/fleet.py``'s: ``--procs`` worker processes (default
``nproc``) run N controllers on ``sim://motorized?rate_hz=5``, each with its own ``MqttBridge``, each
running a session (``--plan``, one long set), so state, timer, status and telemetry flow as on a
floor in use, against a private Mosquitto on a free loopback port. The floor view is the real one
(``retrotread floor --mqtt URL --http 127.0.0.1:PORT``, its own process), its page open in Debian's
headless Chromium (``tests/browser.py``: DevTools over a websocket, no framework) at 1920×1080.

Latency: ``--probes`` extra treadmills ("probe-0".. on the same broker, the bench's instrument,
not the fleet's) publish a state message every ``1/--probe-hz`` s: a copy of a fleet treadmill's
own retained state (the daemon's payload, QoS 1, retained, as the daemon publishes it) with the
belt speed set to a new value each time. A MutationObserver on the page notes when each probe
tile's speed text changes (``dom``), and the start of the next animation frame after it
(``frame``: about when it is painted). Latency = that moment minus the publish, on the wall clock
both sides share (the page's ``performance.timeOrigin + now()``; its offset to Python's
``time.time()`` is measured over CDP and printed). A probe value never shown within 10 s counts as
missed. Reported too over the window: the floor process's CPU (% of one core, ``/proc``) and
peak RSS (``VmHWM``), Chromium's CPU (all its processes), the broker's, the workers', and the
messages per second the floor view reads (``status|state|timer|event``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent / "tests"))  # browser.py: the suite's DevTools driver
from _common import (  # noqa: E402
    Mosquitto,
    MqttTap,
    cpu_seconds,
    descendants,
    find_pids,
    free_port,
    json_line,
    machine,
    now,
    nproc,
    pct,
    status_mb,
    tree_cpu_seconds,
)

PLAN = "1x30m/0s,countdown=0s"
LEAVES = ("status", "state", "timer", "event")
SHOWN_WITHIN_S = 10.0

OBSERVER = """
(() => {
  window.__seen = []; window.__frames = [];
  const last = {};
  const grid = document.getElementById("tiles");
  new MutationObserver(() => {
    const t = performance.timeOrigin + performance.now();
    for (const d of grid.querySelectorAll('.tile[data-id^="probe-"]')) {
      const s = d.querySelector(".speed").textContent;
      if (last[d.dataset.id] !== s) {
        last[d.dataset.id] = s;
        const id = d.dataset.id;
        window.__seen.push([id, s, t]);
        requestAnimationFrame(() => window.__frames.push([id, s, performance.timeOrigin + performance.now()]));
      }
    }
  }).observe(grid, {subtree: true, childList: true, characterData: true});
  return true;
})()
"""


def spawn_workers(args: argparse.Namespace, url: str) -> list[subprocess.Popen[bytes]]:
    """``bench/fleet.py`` workers, each running its share of the treadmills with a session."""
    procs = []
    shares = [args.n // args.procs + (1 if k < args.n % args.procs else 0) for k in range(args.procs)]
    first = 0
    for share in shares:
        cmd = [
            sys.executable, str(BENCH / "fleet.py"), "--worker", "--url", url, "--first", str(first),
            "--count", str(share), "--rate-hz", str(args.rate_hz), "--clients", "daemon", "--session", args.plan,
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        first += share
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            raise SystemExit(f"bench: a fleet worker failed to start: {line!r}")
    return procs


def start_floor(url: str, n: int) -> tuple[subprocess.Popen[bytes], str]:
    """The real floor view, once it answers and holds every treadmill's tile."""
    import httpx

    port = free_port()
    exe = str(Path(sys.executable).with_name("retrotread"))
    proc = subprocess.Popen(
        [sys.executable, exe, "floor", "--mqtt", url, "--http", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = now() + 120
    with httpx.Client(base_url=base, timeout=5) as http:
        while now() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                health = http.get("/healthz").json()
                if health.get("broker") and health.get("treadmills", 0) >= n:
                    return proc, base
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"bench: the floor view did not show {n} treadmills")


async def publish_probes(
    args: argparse.Namespace, url: str, template: dict[str, Any], t_end: float, k0: int = 0
) -> list[Any]:
    """Each probe's state, a new speed each time, until ``t_end``: (id, the text the tile shows, wall ms)."""
    import aiomqtt

    from retrotread.api.mqtt.address import NO_DELAY, parse_broker_url

    broker = parse_broker_url(url)
    sent: list[tuple[str, str, float]] = []
    period = 1.0 / args.probe_hz
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-probes", socket_options=NO_DELAY) as c:
        t0 = now()
        k = k0
        while True:
            for i in range(args.probes):
                at = t0 + (k - k0 + i / args.probes) * period
                if at > t_end:
                    return sent
                await asyncio.sleep(max(0.0, at - now()))
                mph = 0.80 + (k % 40) / 100  # a new value each time: consecutive ones always differ
                body = json.loads(json.dumps(template))
                body["belt"]["speed_mph"] = mph
                body["ts"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                body["seq"] = k
                payload = json.dumps(body, separators=(",", ":"))
                t_pub = time.time() * 1000
                await c.publish(f"retrotread/probe-{i}/state", payload, qos=1, retain=True)
                sent.append((f"probe-{i}", f"{mph:.2f} mph", t_pub))
            k += 1


def clock_offset_ms(page: Any) -> tuple[float, float]:
    """The page's wall clock minus Python's (ms), from the CDP round trip with the least delay."""
    best = (float("inf"), 0.0)
    for _ in range(20):
        t0 = time.time() * 1000
        value = float(page.evaluate("performance.timeOrigin + performance.now()"))
        t1 = time.time() * 1000
        best = min(best, (t1 - t0, value - (t0 + t1) / 2))
    return best[1], best[0]


def latencies(sent: list[Any], seen: list[Any], offset_ms: float) -> tuple[list[float], int]:
    by_probe: dict[tuple[str, str], list[float]] = {}
    for pid, text, t in seen:
        by_probe.setdefault((pid, text), []).append(float(t) - offset_ms)
    out, missed = [], 0
    for pid, text, t_pub in sent:
        shown = [t for t in by_probe.get((pid, text), []) if t_pub - 5 <= t <= t_pub + SHOWN_WITHIN_S * 1000]
        if shown:
            out.append(min(shown) - t_pub)
        else:
            missed += 1
    return out, missed


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 1),
        "p99_ms": round(pct(values, 99), 1),
        "max_ms": round(max(values), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100, help="simulated treadmills in use")
    p.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    p.add_argument("--rate-hz", type=float, default=5.0, help="samples per second per treadmill")
    p.add_argument("--procs", type=int, default=nproc(), help="fleet worker processes (default: nproc)")
    p.add_argument("--plan", default=PLAN, help="the session every treadmill runs")
    p.add_argument("--probes", type=int, default=5, help="probe tiles whose updates are timed")
    p.add_argument("--probe-hz", type=float, default=1.0, help="state updates per second per probe")
    args = p.parse_args()
    from browser import chromium, chromium_path

    if chromium_path() is None:
        raise SystemExit("bench: chromium is not installed (apt-get install chromium)")
    sys.path.insert(0, str(BENCH))
    from fleet import raise_nofile

    raise_nofile()
    with Mosquitto() as broker:
        workers = spawn_workers(args, broker.url)
        floor: subprocess.Popen[bytes] | None = None
        tap = MqttTap(broker.url, tuple(f"retrotread/+/{leaf}" for leaf in LEAVES))
        try:
            floor, base = start_floor(broker.url, args.n)
            deadline = now() + 30
            while (state := tap.last("state")) is None or b'"belt":{' not in state.payload:
                if now() > deadline:
                    raise SystemExit("bench: no fleet treadmill published a state with its belt")
                time.sleep(0.05)
            template = json.loads(state.payload)
            with chromium(timeout=60) as page:
                page.viewport(1920, 1080, mobile=False, scale=1.0)
                page.goto(base + "/")
                page.wait_for(f"document.querySelectorAll('.tile').length >= {args.n}", within=60)
                page.evaluate(OBSERVER)
                # The probes' tiles appear before the window: their first state, then the timed ones.
                asyncio.run(publish_probes(args, broker.url, template, now() + 1.0 / args.probe_hz))
                page.wait_for(f"document.querySelectorAll('.tile[data-id^=\"probe-\"]').length === {args.probes}", 30)
                offset, rtt = clock_offset_ms(page)
                chrome = find_pids(b"retrotread-chromium-", b"--remote-debugging-port")
                chrome_pids = [d for pid in chrome for d in descendants(pid)]
                t0 = now()
                t_go = time.clock_gettime(time.CLOCK_MONOTONIC)
                for w in workers:
                    assert w.stdin is not None
                    w.stdin.write(f"go {t_go} {t_go + args.seconds}\n".encode())
                    w.stdin.flush()
                floor0, chrome0, broker0 = (
                    cpu_seconds(floor.pid),
                    tree_cpu_seconds(chrome_pids),
                    cpu_seconds(broker.pid),
                )
                heard0 = len(tap.between(0, t0))
                sent = asyncio.run(publish_probes(args, broker.url, template, t0 + args.seconds, k0=1))
                t1 = now()
                floor1, chrome1, broker1 = (
                    cpu_seconds(floor.pid),
                    tree_cpu_seconds(chrome_pids),
                    cpu_seconds(broker.pid),
                )
                heard = len(tap.between(t0, t1))
                rss = status_mb(floor.pid, "VmHWM")
                time.sleep(1.0)  # the last probe's update reaches the page
                seen = page.evaluate("window.__seen")
                frames = page.evaluate("window.__frames")
                tiles = page.evaluate("document.querySelectorAll('.tile').length")
                errors = list(page.errors)
            reports = []
            for w in workers:
                assert w.stdout is not None
                reports.append(json.loads(w.stdout.readline()))
        finally:
            tap.close()
            for w in workers:
                with contextlib.suppress(OSError):
                    assert w.stdin is not None
                    w.stdin.write(b"quit\n")
                    w.stdin.flush()
            for w in workers:
                try:
                    w.wait(60)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait()
            if floor is not None and floor.poll() is None:
                floor.terminate()
                try:
                    floor.wait(15)
                except subprocess.TimeoutExpired:
                    floor.kill()
                    floor.wait()
        version = broker.version
    window = t1 - t0
    dom, missed = latencies(sent, seen, offset)
    painted, _ = latencies(sent, frames, offset)

    def share(a: float, b: float) -> float:
        return round(100 * (b - a) / window, 1)

    out = {
        **machine("floor"),
        "broker": f"{version} (private, loopback)",
        "n": args.n,
        "procs": args.procs,
        "rate_hz": args.rate_hz,
        "plan": args.plan,
        "window_s": round(window, 1),
        "tiles_on_page": tiles,
        "floor_reads_per_s": round(heard / window, 1),
        "before_window_heard": heard0,
        "probes": args.probes,
        "probe_hz": args.probe_hz,
        "probe_updates": len(sent),
        "missed": missed,
        "publish_to_dom": summary(dom),
        "publish_to_frame": summary(painted),
        "clock_offset_ms": round(offset, 2),
        "clock_rtt_ms": round(rtt, 2),
        "floor_process": {"cpu_pct_of_one_core": share(floor0, floor1), "rss_mb_peak": round(rss, 1)},
        "chromium_cpu_pct_of_one_core": share(chrome0, chrome1),
        "broker_cpu_pct_of_one_core": share(broker0, broker1),
        "workers_cpu_pct_of_one_core": round(100 * sum(r["cpu_s"] for r in reports) / window, 1),
        "page_errors": errors,
        "target": {"tile_within_ms": 1000},
    }
    print(json_line(out))
    if errors or missed:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
