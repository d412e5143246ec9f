"""One row per set (``retrotread history --csv``). Timer-only sets leave distance and speed empty.

A session with no set (aborted in the countdown) still has its row, with the set columns empty:
it happened, and a history that leaves it out undercounts what was tried (issue 12)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence

from retrotread.daemon.export import measured, simulated
from retrotread.daemon.history_writer import TracePoint
from retrotread.daemon.snapshot import SessionRecord

HEADER = (
    "session",
    "plan",
    "mode",
    "started_at",
    "outcome",
    "set",
    "set_started_at",
    "work_s",
    "distance_m",
    "avg_mph",
    "max_mph",
    "set_outcome",
    "driver",
    "simulated",
    "set_rule",
)


def to_csv(records: Iterable[SessionRecord], traces: Mapping[int, Sequence[TracePoint]] | None = None) -> bytes:
    """The sets of ``records``; ``traces`` (by session id) decides timer-only when given, else the sets do."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for r in records:
        belt = measured(r, (traces or {}).get(r.id, ()))
        sim = "true" if simulated(r) else "false"
        session = [r.id, r.plan, r.mode, r.started_at, r.outcome or ""]
        if not r.sets:
            writer.writerow([*session, "", "", "", "", "", "", "", r.driver, sim, ""])
        for st in r.sets:
            numbers = (st.distance_m, st.avg_mph, st.max_mph)
            distance: list[object] = ["" if x is None else x for x in numbers] if belt else ["", "", ""]
            head = [*session, st.set, st.started_at, st.work_s]
            writer.writerow([*head, *distance, st.outcome, r.driver, sim, st.rule or ""])
    return out.getvalue().encode()
