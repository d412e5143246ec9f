"""One row per set (``retrotread history --csv``). Timer-only sets leave distance and speed empty."""

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
)


def to_csv(records: Iterable[SessionRecord], traces: Mapping[int, Sequence[TracePoint]] | None = None) -> bytes:
    """The sets of ``records``; ``traces`` (by session id) decides timer-only when given, else the sets do."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for r in records:
        belt = measured(r, (traces or {}).get(r.id, ()))
        sim = "true" if simulated(r) else "false"
        for st in r.sets:
            distance: list[object] = [st.distance_m, st.avg_mph, st.max_mph] if belt else ["", "", ""]
            head = [r.id, r.plan, r.mode, r.started_at, r.outcome, st.set, st.started_at, st.work_s]
            writer.writerow([*head, *distance, st.outcome, r.driver, sim])
    return out.getvalue().encode()
