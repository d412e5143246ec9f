"""``doctor``, ``token`` and ``history``: commands that read this machine, not a daemon."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from retrotread.api.cli.common import (
    CliError,
)
from retrotread.daemon.auth import load_or_create_token, rotate_token
from retrotread.daemon.config import load_settings
from retrotread.daemon.history import SqliteHistory


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
        print("rotated: restart the daemon for it to take effect", file=sys.stderr)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    import csv

    settings = load_settings(Path(args.config) if args.config else None)
    path = settings.daemon.state_dir / "history.sqlite3"
    if not path.exists():
        raise CliError(f"no history yet at {path}")
    store = SqliteHistory.open_readonly(path)  # never recovers: a running daemon owns the sessions
    try:
        if args.weekly:
            rows = store.weekly()
            if args.json:
                print(json.dumps([{"week": w, "plan": p, "sessions": n} for w, p, n in rows]))
            else:
                writer = csv.writer(sys.stdout)
                writer.writerow(["week", "plan", "sessions"])
                writer.writerows(rows)
            return 0
        records = store.recent(args.limit)
    finally:
        store.close()
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(
            [
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
            ]
        )
        for r in records:
            for st in r.sets or ():
                writer.writerow(
                    [
                        r.id,
                        r.plan,
                        r.mode,
                        r.started_at,
                        r.outcome,
                        st.set,
                        st.started_at,
                        st.work_s,
                        st.distance_m,
                        st.avg_mph,
                        st.max_mph,
                        st.outcome,
                    ]
                )
    else:
        print(json.dumps([r.model_dump(mode="json") for r in records]))
    return 0
