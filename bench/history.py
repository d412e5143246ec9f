"""History at a year's scale (issue 15): ~400 daily sessions with 1 Hz traces.

Measures what the history page asks for (``recent(50)`` + ``progress`` over ``recent(1000)``), the FIT
export of a 10-minute session (record + trace from the database), and the database size per session.
Targets on the project machine: the view ≤ 50 ms, the FIT export ≤ 200 ms.

    .venv/bin/python bench/history.py [--days 365]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from retrotread.daemon.export import export
from retrotread.daemon.history import SqliteHistory, TracePoint
from retrotread.daemon.progress import progress
from retrotread.daemon.snapshot import SetResult, iso

MPS = 0.44704


def session(store: SqliteHistory, t0: float, plan: str, sets: int, work_s: int, rest_s: int, mps: float) -> int:
    sid = store.begin(plan, "deadmill" if plan == "deadmill" else "reverse", "csafe:///dev/ttyUSB0", sets, iso(t0))
    t, dist = 5, 0.0
    for k in range(sets):
        for i in range(work_s + (rest_s if k < sets - 1 else 0)):
            moving = i < work_s
            dist += mps if moving else 0.0
            store.trace(sid, TracePoint(float(t + i), t0 + t + i, mps / MPS if moving else 0.0, dist, 0.0))
        store.record_set(
            sid,
            SetResult(
                set=k + 1,
                started_at=iso(t0 + t),
                ended_at=iso(t0 + t + work_s),
                started_mono=float(t),
                ended_mono=float(t + work_s),
                work_s=float(work_s),
                distance_m=round(mps * work_s, 2),
                avg_mph=mps / MPS,
                max_mph=mps / MPS * 1.05,
                outcome="completed",
            ),
        )
        t += work_s + rest_s
    store.end(sid, "completed", iso(t0 + t))
    return sid


def fill(store: SqliteHistory, days: int, start: datetime) -> int:
    """Daily flat-retro (10 min) plus deadmill three times a week: about 400 sessions a year."""
    ten_min = 0
    for d in range(days):
        t0 = (start + timedelta(days=d)).timestamp()
        ten_min = session(store, t0, "flat-retro", 1, 600, 0, 0.6)
        if d % 7 in (0, 2, 4) and d % 2 == 0:
            session(store, t0 + 3600, "deadmill", 3, 60, 60, 0.55 + d / 4000)
        store.flush(60)  # a year in seconds outruns the writer's spool; a real day has hours to spare
    store.flush(120)
    return ten_min


def timed(fn: object, n: int) -> tuple[float, float]:
    runs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        runs.append((time.perf_counter() - t) * 1000)
    return statistics.median(runs), max(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=365)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.sqlite3"
        store = SqliteHistory.open(path)
        start = datetime(2025, 1, 6, 7, tzinfo=UTC)
        t = time.perf_counter()
        sid = fill(store, args.days, start)
        fill_s = time.perf_counter() - t
        store.close()
        reader = SqliteHistory.open_readonly(path)  # cold: nothing cached in memory, as after a restart
        n = len(reader.recent(100_000))
        points = len(reader.get_trace(sid))
        assert points == 600, f"the 10-minute session kept {points} trace points"
        today = date(2025, 1, 6) + timedelta(days=args.days)

        def view() -> None:
            reader.recent(50)
            progress(reader.recent(1000), today).model_dump(mode="json")

        def fit() -> None:
            rec = reader.get(sid)
            assert rec is not None
            export(rec, reader.get_trace(sid), "fit")

        view_med, view_max = timed(view, 5)
        fit_med, fit_max = timed(fit, 5)
        reader.close()
        size = sum(os.path.getsize(p) for p in Path(tmp).glob("history.sqlite3*"))
        print(f"sessions {n} (filled in {fill_s:.1f} s), trace points ~{600 * args.days + 360 * (n - args.days)}")
        print(f"history view (recent 50 + progress over 1000): median {view_med:.1f} ms, max {view_max:.1f} ms")
        print(f"FIT export of a 10-minute session (600 points): median {fit_med:.1f} ms, max {fit_max:.1f} ms")
        print(f"database {size / 1e6:.1f} MB, {size / n / 1024:.1f} KiB per session")


if __name__ == "__main__":
    main()
