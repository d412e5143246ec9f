"""B3, timer truth: a 3x5s/3s plan in real time on the controller.

For each phase boundary: when the timer update reached a subscriber, against the plan's
boundary (monotonic); drift is the last boundary's error minus the first's. For the 1 Hz ticks:
each update's arrival against the whole second it stands for. Prints one JSON line.

    python bench/timer.py [--plan 3x5s/3s] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pct

from retrotread.daemon.controller import Controller
from retrotread.daemon.plans import parse_plan
from retrotread.drivers import open_driver
from retrotread.safety import Mode, SafetyConfig


async def one_run(plan_text: str) -> tuple[list[float], list[float]]:
    plan = parse_plan(plan_text)
    driver = open_driver("sim://manual?rate_hz=10")
    async with Controller(driver, safety=SafetyConfig(mode=Mode.DEADMILL)) as c:
        sub = c.hub.subscribe(("timer",), maxsize=10_000, replay=False)
        await c.start_session(plan)
        session = c.session
        assert session is not None
        timer = session.timer
        starts = [timer.segment_start(i) for i in range(len(timer.segments))]
        ends = [timer.segment_end(i) for i in range(len(timer.segments))]
        arrivals: list[tuple[float, str, int]] = []
        async with asyncio.timeout(plan.total_s + 10):
            async for update in sub:
                now = time.monotonic()
                view = update.payload
                arrivals.append((now, view.phase, view.set))
                if view.phase in ("done", "aborted"):
                    break
    boundary_err: list[float] = []
    tick_err: list[float] = []
    seen_phases: list[tuple[str, int]] = []
    for t, phase, set_no in arrivals:
        key = (phase, set_no)
        if not seen_phases or seen_phases[-1] != key:
            seen_phases.append(key)
            idx = len(seen_phases) - 1  # the k-th phase began at the end of phase k-1
            if idx > 0:
                boundary_err.append(t - ends[idx - 1])
            continue
        idx = len(seen_phases) - 1
        if idx < len(starts):
            # A tick stands for a whole second of the phase's remaining time.
            since = t - starts[idx]
            tick_err.append(since - round(since))
    return boundary_err, tick_err


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", default="3x5s/3s,countdown=2s")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    boundaries: list[float] = []
    ticks: list[float] = []
    drifts: list[float] = []
    for _ in range(args.runs):
        b, t = await one_run(args.plan)
        boundaries += b
        ticks += t
        drifts.append(b[-1] - b[0])
    ms = [x * 1000 for x in boundaries]
    jitter = [abs(x) * 1000 for x in ticks]
    print(
        json.dumps(
            {
                **machine("B3"),
                "plan": args.plan,
                "runs": args.runs,
                "boundaries": len(ms),
                "boundary_error_ms": {
                    "min": round(min(ms), 3),
                    "max": round(max(ms), 3),
                    "max_abs": round(max(abs(x) for x in ms), 3),
                },
                "drift_ms": round(max(abs(d) for d in drifts) * 1000, 3),
                "ticks": len(jitter),
                "tick_jitter_ms": {"p50": round(pct(jitter, 50), 3), "p99": round(pct(jitter, 99), 3)},
                "target": {"boundary_max_abs_ms": 10, "tick_jitter_p99_ms": 20},
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
