"""The 1 Hz trace in the history database (issue 15): stored, read back, survives a SIGKILL, migrated."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from helpers import old_history

from retrotread.daemon.history import SCHEMA_VERSION, SqliteHistory, TracePoint

T0 = 1_790_000_000.0


def points(n: int, *, timer_only: bool = False) -> list[TracePoint]:
    if timer_only:
        return [TracePoint(t_s=float(i), ts=T0 + i) for i in range(n)]
    return [
        TracePoint(t_s=float(i), ts=T0 + i, speed_mph=1.5, distance_m=0.67 * i, incline_pct=0.0, hr=100 + i % 5)
        for i in range(n)
    ]


def test_trace_round_trips_and_is_read_at_once_by_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = SqliteHistory.open(path)
    sid = store.begin("deadmill", "deadmill", "csafe:///dev/ttyUSB0", 3, "2026-11-21T15:00:00.000Z")
    trace = points(25)
    for p in trace:
        store.trace(sid, p)
    assert store.get_trace(sid) == trace  # before anything reached the disk
    store.end(sid, "completed", "2026-11-21T15:05:00.000Z")
    store.close()
    reader = SqliteHistory.open_readonly(path)
    assert reader.get_trace(sid) == trace
    assert reader.get_trace(sid + 1) == []
    reader.close()


def test_a_timer_only_trace_keeps_speed_and_distance_empty_not_zero(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = SqliteHistory.open(path)
    sid = store.begin("deadmill", "deadmill", "none", 3, "2026-11-21T15:00:00.000Z")
    for p in points(5, timer_only=True):
        store.trace(sid, p)
    store.end(sid, "completed", "2026-11-21T15:05:00.000Z")
    store.close()
    db = sqlite3.connect(path)
    cur = db.execute("SELECT speed_mph, distance_m, incline_pct, hr FROM trace WHERE session_id = ?", (sid,))
    rows = cur.fetchall()
    db.close()
    assert rows == [(None, None, None, None)] * 5


CHILD = """
import sys
from retrotread.daemon.history import SqliteHistory, TracePoint
store = SqliteHistory.open(__import__("pathlib").Path(sys.argv[1]))
sid = store.begin("deadmill", "deadmill", "csafe:///dev/ttyUSB0", 3, "2026-11-21T15:00:00.000Z")
for i in range(int(sys.argv[2])):
    store.trace(sid, TracePoint(t_s=float(i), ts=1790000000.0 + i, speed_mph=1.5, distance_m=0.67 * i))
assert store.flush(10)  # what was handed to the writer is committed; what is buffered is not
print(sid, flush=True)
sys.stdin.read()  # hold on until killed
"""


def test_sigkill_loses_at_most_two_seconds_of_trace(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    n = 37
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            sid = int(child.stdout.readline())
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
    again = SqliteHistory.open(path)
    kept = again.get_trace(sid)
    again.close()
    assert kept, "nothing of the trace survived"
    assert [p.t_s for p in kept] == [float(i) for i in range(len(kept))]
    assert (n - 1) - kept[-1].t_s <= 2.0


V1_EVENT = "INSERT INTO events VALUES (1, '2026-01-05T18:01:05.000Z', 'set_completed', NULL, NULL, '', 1);"


def test_a_version_1_history_is_migrated_and_keeps_its_sessions(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    old_history(path, 1, V1_EVENT)
    reader = SqliteHistory.open_readonly(path)  # a CLI reading the old file: works, no trace
    assert reader.get(1) is not None and reader.get_trace(1) == []
    store = SqliteHistory.open(path)
    old = store.get(1)
    assert old is not None and old.sets[0].distance_m == 41.5 and old.events[0].kind == "set_completed"
    assert list(path.parent.glob("*.corrupt-*")) == []  # migrated in place, not moved aside
    sid = store.begin("deadmill", "deadmill", "csafe:///dev/ttyUSB0", 3, "2026-01-07T18:00:00.000Z")
    assert sid == 2
    for p in points(4):
        store.trace(sid, p)
    store.end(sid, "completed", "2026-01-07T18:06:00.000Z")
    assert store.flush(10)
    assert reader.get_trace(sid) == points(4)  # the reader opened before the migration sees the table now
    reader.close()
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    again = SqliteHistory.open(path)
    assert again.get_trace(sid) == points(4) and again.get(1) == old
    again.close()
