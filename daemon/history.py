"""Where finished sets and sessions go.

``MemoryHistory`` keeps them for the life of the process (the standalone ``deadmill`` command and
tests); the SQLite store keeps them across restarts. Both take a set when it ends and a
checkpoint of the running set, so a crash loses at most the last few seconds of one set.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from retrotread.daemon.snapshot import Event, Outcome, SessionRecord, SetResult
from retrotread.drivers.errors import ConfigError


class History(Protocol):
    def begin(self, plan: str, mode: str, driver: str, sets_planned: int, started_at: str) -> int: ...

    def checkpoint(self, session_id: int, result: SetResult) -> None:
        """The running set so far (marked ``interrupted`` until it ends)."""

    def record_set(self, session_id: int, result: SetResult) -> None: ...

    def record_event(self, session_id: int, event: Event) -> None: ...

    def end(self, session_id: int, outcome: Outcome, ended_at: str) -> None: ...

    def get(self, session_id: int) -> SessionRecord | None: ...

    def recent(self, limit: int = 20) -> list[SessionRecord]: ...

    def close(self) -> None: ...


class MemoryHistory:
    def __init__(self) -> None:
        self._sessions: dict[int, SessionRecord] = {}
        self._next = 1

    def begin(self, plan: str, mode: str, driver: str, sets_planned: int, started_at: str) -> int:
        sid = self._next
        self._next += 1
        self._sessions[sid] = SessionRecord(
            id=sid,
            plan=plan,
            mode=mode,
            driver=driver,
            started_at=started_at,
            ended_at=None,
            outcome=None,
            sets_planned=sets_planned,
            sets=(),
        )
        return sid

    def _put_set(self, session_id: int, result: SetResult) -> None:
        rec = self._sessions[session_id]
        others = tuple(s for s in rec.sets if s.set != result.set)
        self._sessions[session_id] = rec.model_copy(update={"sets": (*others, result)})

    def checkpoint(self, session_id: int, result: SetResult) -> None:
        self._put_set(session_id, result)

    def record_set(self, session_id: int, result: SetResult) -> None:
        self._put_set(session_id, result)

    def record_event(self, session_id: int, event: Event) -> None:
        rec = self._sessions[session_id]
        self._sessions[session_id] = rec.model_copy(update={"events": (*rec.events, event)})

    def end(self, session_id: int, outcome: Outcome, ended_at: str) -> None:
        rec = self._sessions[session_id]
        self._sessions[session_id] = rec.model_copy(update={"outcome": outcome, "ended_at": ended_at})

    def get(self, session_id: int) -> SessionRecord | None:
        return self._sessions.get(session_id)

    def recent(self, limit: int = 20) -> list[SessionRecord]:
        return sorted(self._sessions.values(), key=lambda r: r.id, reverse=True)[:limit]

    def close(self) -> None:
        pass


SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    plan TEXT NOT NULL, mode TEXT NOT NULL, driver TEXT NOT NULL, sets_planned INTEGER NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT, outcome TEXT
);
CREATE TABLE IF NOT EXISTS sets (
    session_id INTEGER NOT NULL REFERENCES sessions(id), set_no INTEGER NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT NOT NULL, started_mono REAL NOT NULL, ended_mono REAL NOT NULL,
    work_s REAL NOT NULL, distance_m REAL NOT NULL, avg_mph REAL NOT NULL, max_mph REAL NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (session_id, set_no)
);
CREATE TABLE IF NOT EXISTS events (
    session_id INTEGER NOT NULL REFERENCES sessions(id), ts TEXT NOT NULL, kind TEXT NOT NULL,
    rule TEXT, reason TEXT, detail TEXT NOT NULL DEFAULT '', set_no INTEGER
);
PRAGMA user_version = 1;
"""


class SqliteHistory:
    """Sessions and sets in SQLite (WAL) under the state directory; survives a SIGKILL.

    Every write is its own committed transaction: with WAL, a committed write survives the
    process being killed, so a crash loses at most the time since the last checkpoint of the
    running set. On open, sessions a crash left unfinished are marked ``interrupted``.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"history database {path}: {exc}") from exc
        self._recover()

    def _recover(self) -> None:
        rows = self._db.execute("SELECT id FROM sessions WHERE ended_at IS NULL").fetchall()
        for (sid,) in rows:
            last = self._db.execute("SELECT MAX(ended_at) FROM sets WHERE session_id = ?", (sid,)).fetchone()[0]
            self._db.execute(
                "UPDATE sessions SET outcome = 'interrupted', ended_at = COALESCE(?, started_at) WHERE id = ?",
                (last, sid),
            )

    def begin(self, plan: str, mode: str, driver: str, sets_planned: int, started_at: str) -> int:
        cur = self._db.execute(
            "INSERT INTO sessions (plan, mode, driver, sets_planned, started_at) VALUES (?, ?, ?, ?, ?)",
            (plan, mode, driver, sets_planned, started_at),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _put_set(self, session_id: int, r: SetResult) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session_id,
                r.set,
                r.started_at,
                r.ended_at,
                r.started_mono,
                r.ended_mono,
                r.work_s,
                r.distance_m,
                r.avg_mph,
                r.max_mph,
                r.outcome,
            ),
        )

    def checkpoint(self, session_id: int, result: SetResult) -> None:
        self._put_set(session_id, result)

    def record_set(self, session_id: int, result: SetResult) -> None:
        self._put_set(session_id, result)

    def record_event(self, session_id: int, event: Event) -> None:
        self._db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (session_id, event.ts, event.kind, event.rule, event.reason, event.detail, event.set),
        )

    def end(self, session_id: int, outcome: Outcome, ended_at: str) -> None:
        self._db.execute("UPDATE sessions SET outcome = ?, ended_at = ? WHERE id = ?", (outcome, ended_at, session_id))

    def get(self, session_id: int) -> SessionRecord | None:
        row = self._db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return None if row is None else self._record(row)

    def recent(self, limit: int = 20) -> list[SessionRecord]:
        rows = self._db.execute("SELECT * FROM sessions ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [self._record(r) for r in rows]

    def _record(self, row: tuple[Any, ...]) -> SessionRecord:
        sid, plan, mode, driver, sets_planned, started_at, ended_at, outcome = row
        sets = tuple(
            SetResult(
                set=s[1],
                started_at=s[2],
                ended_at=s[3],
                started_mono=s[4],
                ended_mono=s[5],
                work_s=s[6],
                distance_m=s[7],
                avg_mph=s[8],
                max_mph=s[9],
                outcome=s[10],
            )
            for s in self._db.execute("SELECT * FROM sets WHERE session_id = ? ORDER BY set_no", (sid,))
        )
        events = tuple(
            Event(ts=e[1], kind=e[2], rule=e[3], reason=e[4], detail=e[5], set=e[6], session=sid)
            for e in self._db.execute("SELECT * FROM events WHERE session_id = ? ORDER BY rowid", (sid,))
        )
        return SessionRecord(
            id=sid,
            plan=plan,
            mode=mode,
            driver=driver,
            started_at=started_at,
            ended_at=ended_at,
            outcome=outcome,
            sets_planned=sets_planned,
            sets=sets,
            events=events,
        )

    def weekly(self) -> list[tuple[str, str, int]]:
        """Sessions per ISO week per plan (program.md: the user can see the rhythm; nothing enforced)."""
        rows = self._db.execute("SELECT started_at, plan FROM sessions ORDER BY id").fetchall()
        counts: dict[tuple[str, str], int] = {}
        for started_at, plan in rows:
            year, week, _ = datetime.fromisoformat(started_at.replace("Z", "+00:00")).isocalendar()
            key = (f"{year}-W{week:02d}", plan)
            counts[key] = counts.get(key, 0) + 1
        return [(week, plan, n) for (week, plan), n in counts.items()]

    def close(self) -> None:
        self._db.close()
