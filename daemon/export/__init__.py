"""Exports of one stored session: FIT, TCX and CSV, built from the record and its 1 Hz trace only.

Nothing is invented (history.md): a session whose driver measured no belt (timer-only) exports its
times and no distance or speed; a session run on a simulator (driver URL ``sim://`` or
``ftms+sim://``) is marked simulated in every format (FIT: developer field ``simulated`` on the
session and each lap; TCX: ``Notes`` of the Activity and each Lap; CSV: the ``simulated`` column).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from retrotread.daemon.history_writer import TracePoint
from retrotread.daemon.snapshot import SessionRecord, SetResult
from retrotread.drivers.errors import InputError

Format = Literal["fit", "tcx", "csv"]
FORMATS: tuple[Format, ...] = ("fit", "tcx", "csv")
MEDIA_TYPES: dict[Format, str] = {
    "fit": "application/vnd.ant.fit",
    "tcx": "application/vnd.garmin.tcx+xml",
    "csv": "text/csv; charset=utf-8",
}


class ExportError(InputError):
    """The session cannot be exported in that format (one line, for a 4xx)."""


def simulated(record: SessionRecord) -> bool:
    """The session ran on a simulator, not a belt (its driver URL says so)."""
    return record.simulated


def measured(record: SessionRecord, trace: Sequence[TracePoint]) -> bool:
    """A driver measured the belt: speed in the trace, or (a session stored before traces) a non-zero set.

    False is a timer-only session: it has times and nothing else."""
    if trace:
        return any(p.speed_mph is not None for p in trace)
    return any((s.distance_m or 0.0) > 0 or (s.max_mph or 0.0) > 0 for s in record.sets)


def parse_ts(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def work_sets(record: SessionRecord) -> list[SetResult]:
    """The sets that ran, in order: one lap each (a set skipped before it began has no time)."""
    return sorted((s for s in record.sets if s.work_s > 0 or s.outcome == "completed"), key=lambda s: s.set)


def set_points(s: SetResult, trace: Sequence[TracePoint]) -> list[TracePoint]:
    """The trace points inside one set, by wall clock."""
    # The set's times are stored to the millisecond (ISO 8601), a point's to the microsecond: a point
    # at the set's very end must not fall outside it by the millisecond the stamp rounded away.
    lo, hi = parse_ts(s.started_at).timestamp() - 0.001, parse_ts(s.ended_at).timestamp() + 0.001
    return [p for p in trace if lo <= p.ts <= hi]


def export(record: SessionRecord, trace: Sequence[TracePoint], format: str) -> bytes:
    """The session as a file in ``format`` (``fit``, ``tcx`` or ``csv``)."""
    if format == "fit":
        from retrotread.daemon.export.fit import to_fit

        return to_fit(record, trace)
    if format == "tcx":
        from retrotread.daemon.export.tcx import to_tcx

        return to_tcx(record, trace)
    if format == "csv":
        from retrotread.daemon.export.csv import to_csv

        return to_csv([record], {record.id: trace})
    raise ExportError(f"unknown export format {format!r}; known: {', '.join(FORMATS)}")
