"""``doctor``, ``token`` and ``history``: commands that read this machine, not a daemon."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from retrotread.api.cli.common import (
    CliError,
)
from retrotread.daemon.auth import load_or_create_token, rotate_token
from retrotread.daemon.config import load_settings
from retrotread.daemon.export import ExportError, export
from retrotread.daemon.export.csv import to_csv
from retrotread.daemon.history import HistoryReader, SqliteHistory
from retrotread.daemon.progress import progress, strength
from retrotread.daemon.snapshot import SessionRecord


def cmd_doctor(args: argparse.Namespace) -> int:
    from retrotread.api.doctor import run_checks

    findings = run_checks(Path(args.config) if args.config else None)
    for f in findings:
        print(f.line())
    failed = sum(f.level == "fail" for f in findings)
    print(f"{failed} problem{'s' if failed != 1 else ''} found" if failed else "all checks passed")
    return 1 if failed else 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.config) if args.config else None)
    state_dir = settings.daemon.state_dir
    token = rotate_token(state_dir) if args.rotate else load_or_create_token(state_dir)
    print(token)
    if args.rotate:
        # A running daemon follows the token file (daemon.auth.LiveToken): no restart needed.
        print(
            f"rotated ({token.path}): a running daemon takes the new token at once; the old one is refused. "
            "Give the new one to MQTT clients and other hosts that send it.",
            file=sys.stderr,
        )
    return 0


def _history_path(args: argparse.Namespace) -> Path:
    settings = load_settings(Path(args.config) if getattr(args, "config", None) else None)
    path = settings.daemon.state_dir / "history.sqlite3"
    if not path.exists():
        raise CliError(f"no history yet at {path} (set daemon.state_dir, or RETROTREAD_DAEMON__STATE_DIR, to another)")
    return path


def _open(args: argparse.Namespace) -> HistoryReader:
    return SqliteHistory.open_readonly(_history_path(args))  # never recovers: a running daemon owns the sessions


def cmd_history(args: argparse.Namespace) -> int:
    """A table a person reads by default; ``--json`` (one record a line) and ``--csv`` on request."""
    if args.limit < 1:
        raise CliError(f"--limit must be 1 or more, not {args.limit}")
    store = _open(args)
    try:
        if args.weekly:
            rows = store.weekly()
            if args.json:
                print(json.dumps([{"week": w, "plan": p, "sessions": n} for w, p, n in rows]))
            elif args.csv:
                writer = csv.writer(sys.stdout, lineterminator="\n")
                writer.writerow(["week", "plan", "sessions"])
                writer.writerows(rows)
            else:
                _print_table(["week", "plan", "sessions"], [[w, p, str(n)] for w, p, n in rows], "sessions a week")
            return 0
        records = store.recent(args.limit)
        traces = {r.id: store.get_trace(r.id) for r in records} if args.csv else {}
    finally:
        store.close()
    if args.csv:
        sys.stdout.write(to_csv(records, traces).decode())
    elif args.json:
        for r in records:
            print(json.dumps(r.model_dump(mode="json")))
    else:
        _print_table(HISTORY_COLUMNS, [history_row(r) for r in records], f"{len(records)} newest sessions")
    return 0


HISTORY_COLUMNS = ["id", "started", "plan", "mode", "outcome", "sets", "work", "distance", "fade", "driver"]


def history_row(r: SessionRecord) -> list[str]:
    """One session as the table shows it: nothing invented (a timer-only session has no distance)."""
    done = sum(s.outcome == "completed" for s in r.sets)
    work = sum(s.work_s for s in r.sets)
    m, sec = divmod(round(work), 60)
    measured = any((s.distance_m or 0) > 0 or (s.max_mph or 0) > 0 for s in r.sets)
    distance = f"{sum(s.distance_m or 0 for s in r.sets):.0f} m" if measured else "–"
    started = r.started_at.replace("T", " ")[:16]
    fade = r.fade_pct
    if fade is None and (points := strength([r])):
        fade = points[0].fade_pct  # a session stored before fades were: the history page's own figure
    return [
        str(r.id),
        started,
        r.plan,
        r.mode,
        r.outcome or "running",
        f"{done}/{r.sets_planned}",
        f"{m}:{sec:02d}",
        distance,
        f"{fade:+.0f}%" if fade is not None else "–",
        r.driver + (" (sim)" if r.simulated else ""),
    ]


def _print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        print("no sessions yet")
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def cmd_history_progress(args: argparse.Namespace) -> int:
    """The history page's figures (``daemon.progress.progress`` over the newest 1000 sessions, today)."""
    store = _open(args)
    try:
        records = store.recent(1000)
    finally:
        store.close()
    prog = progress(records, date.today())
    if getattr(args, "json", False):
        print(prog.model_dump_json())
        return 0
    pos = prog.position
    print(
        f"program: week {pos.week if pos.week is not None else '–'}, phase {pos.phase if pos.phase else '–'}"
        f" (since {pos.started_at or '–'})"
    )
    print(f"next: {pos.suggested_plan} ({pos.why})")
    _print_table(
        ["session", "week", "1-min set distances", "fade"],
        [
            [
                str(p.session) + (" (sim)" if p.simulated else ""),
                p.week,
                ", ".join(f"{d:.0f} m" for d in p.set_distances_m),
                f"{p.fade_pct:+.1f}%" if p.fade_pct is not None else "–",
            ]
            for p in prog.strength
        ],
        "deadmill strength",
    )
    _print_table(
        ["week", "plan", "sessions", "recommended", "verdict"],
        [
            [
                a.week,
                a.plan,
                str(a.sessions),
                f"{a.recommended_min}-{a.recommended_max}" if a.recommended_min is not None else "–",
                a.verdict,
            ]
            for a in prog.adherence
        ],
        "sessions a week",
    )
    return 0


def cmd_history_export(args: argparse.Namespace) -> int:
    """One session as a FIT, TCX or CSV file (``daemon.export``), from its record and 1 Hz trace."""
    store = _open(args)
    try:
        record = store.get(args.id)
        if record is None:
            raise CliError(f"no session {args.id} in {_history_path(args)}; `retrotread history` lists them")
        trace = store.get_trace(args.id)
    finally:
        store.close()
    try:
        data = export(record, trace, args.format)
    except ExportError as exc:
        raise CliError(str(exc)) from None
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    out = Path(args.output or f"retrotread-{args.id}.{args.format}")
    try:
        # Through a temporary file: an interrupted export never leaves half a file under the name.
        tmp = out.with_name(f".{out.name}.part")
        tmp.write_bytes(data)
        tmp.replace(out)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror}") from None
    print(f"wrote {out} ({len(data)} bytes, session {args.id}, {args.format})", file=sys.stderr)
    return 0
