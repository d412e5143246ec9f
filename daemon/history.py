"""Where finished sets and sessions go.

``MemoryHistory`` keeps them for the life of the process (the standalone ``deadmill`` command and
tests); the SQLite store keeps them across restarts. Both take a set when it ends and a
checkpoint of the running set, so a crash loses at most the last few seconds of one set.

The SQLite store has one owner, the daemon (``SqliteHistory.open``: an exclusive ``flock`` beside the
database, then crash recovery), and any number of readers (``SqliteHistory.open_readonly``: the CLI,
while the daemon runs; it never recovers and never writes). The owner's writes go to a writer thread
(``history_writer``) and never block the event loop or raise into it; a failing disk is reported through
``set_listener``. A database that is not one, fails ``PRAGMA quick_check`` or has another schema is
moved aside on owner open, never deleted. Everything that cannot be opened is a ``HistoryError``: one
line, naming the file.

Errors::

    ConfigError (retrotread.drivers.errors)
    └── HistoryError    cannot open, own or read the history database
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from retrotread.daemon.history_writer import (
    BUSY_TIMEOUT_S,
    CLOSE_FLUSH_S,
    TRACE_BATCH_S,
    AddEvent,
    Begin,
    End,
    Migrate,
    PutSet,
    PutTrace,
    Recover,
    TracePoint,
    Write,
    Writer,
    commit,
)
from retrotread.daemon.snapshot import Event, Outcome, SessionRecord, SetResult
from retrotread.drivers.errors import ConfigError

log = logging.getLogger(__name__)


__all__ = ["History", "HistoryError", "HistoryReader", "MemoryHistory", "SqliteHistory", "TracePoint"]


class HistoryError(ConfigError):
    """The history database cannot be opened, owned or read. The message is one line and names the file."""


class History(Protocol):
    def begin(self, plan: str, mode: str, driver: str, sets_planned: int, started_at: str) -> int: ...

    def checkpoint(self, session_id: int, result: SetResult) -> None:
        """The running set so far (marked ``interrupted`` until it ends)."""

    def record_set(self, session_id: int, result: SetResult) -> None: ...

    def record_event(self, session_id: int, event: Event) -> None: ...

    def trace(self, session_id: int, point: TracePoint) -> None:
        """One point of the session's 1 Hz trace (the controller's latest sample); never blocks."""

    def end(
        self,
        session_id: int,
        outcome: Outcome,
        ended_at: str,
        *,
        set_distances_m: tuple[float, ...] = (),
        fade_pct: float | None = None,
    ) -> None:
        """The session ended; with its per-set distances and the fade from the first set to the last."""

    def get(self, session_id: int) -> SessionRecord | None: ...

    def get_trace(self, session_id: int) -> list[TracePoint]:
        """The session's trace in time order (empty for a session without one)."""

    def recent(self, limit: int = 20) -> list[SessionRecord]: ...

    def set_listener(self, on_fault: Callable[[str], None], on_ok: Callable[[], None]) -> None:
        """``on_fault(detail)`` once when writes start failing, ``on_ok()`` once when they succeed again.

        Both are called on the event loop that was running when this was called."""

    def close(self) -> None: ...


class MemoryHistory:
    def __init__(self, first_id: int = 1) -> None:
        self._sessions: dict[int, SessionRecord] = {}
        self._traces: dict[int, list[TracePoint]] = {}
        self._next = first_id

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

    def trace(self, session_id: int, point: TracePoint) -> None:
        if session_id in self._sessions:
            self._traces.setdefault(session_id, []).append(point)

    def end(
        self,
        session_id: int,
        outcome: Outcome,
        ended_at: str,
        *,
        set_distances_m: tuple[float, ...] = (),
        fade_pct: float | None = None,
    ) -> None:
        rec = self._sessions[session_id]
        update = {"outcome": outcome, "ended_at": ended_at, "set_distances_m": set_distances_m, "fade_pct": fade_pct}
        self._sessions[session_id] = rec.model_copy(update=update)

    def get(self, session_id: int) -> SessionRecord | None:
        return self._sessions.get(session_id)

    def get_trace(self, session_id: int) -> list[TracePoint]:
        return list(self._traces.get(session_id, ()))

    def recent(self, limit: int = 20) -> list[SessionRecord]:
        return sorted(self._sessions.values(), key=lambda r: r.id, reverse=True)[:limit]

    def sessions(self) -> list[SessionRecord]:
        return self.recent(len(self._sessions))

    def forget(self, session_id: int) -> None:
        self._sessions.pop(session_id, None)
        self._traces.pop(session_id, None)

    def set_listener(self, on_fault: Callable[[str], None], on_ok: Callable[[], None]) -> None:
        pass  # memory never fails to take a write

    def close(self) -> None:
        pass


SCHEMA_VERSION = 3
TABLES_V1 = frozenset({"sessions", "sets", "events"})
TABLES = TABLES_V1 | {"trace"}
# Version 2 (issue 15) adds the 1 Hz trace. Version 3 (issue 12): a set's distance and speeds may be
# NULL (a timer-only set measured nothing, never 0), a set stores the rule of the stop that cut it,
# and a session its per-set distances and fade. An older history is migrated in place by its owner
# (``Migrate``: one transaction, the old rows kept) and read as it is by a reader.
TRACE_TABLE = """
CREATE TABLE IF NOT EXISTS trace (
    session_id INTEGER NOT NULL REFERENCES sessions(id), t_s REAL NOT NULL, ts REAL NOT NULL,
    speed_mph REAL, distance_m REAL, incline_pct REAL, hr INTEGER,
    PRIMARY KEY (session_id, t_s)
) WITHOUT ROWID;
"""
SETS_V3 = """
CREATE TABLE IF NOT EXISTS {name} (
    session_id INTEGER NOT NULL REFERENCES sessions(id), set_no INTEGER NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT NOT NULL, started_mono REAL NOT NULL, ended_mono REAL NOT NULL,
    work_s REAL NOT NULL, distance_m REAL, avg_mph REAL, max_mph REAL,
    outcome TEXT NOT NULL, rule TEXT,
    PRIMARY KEY (session_id, set_no)
);
"""
# SQLite cannot drop a NOT NULL: the sets table is copied into one without (every row kept).
MIGRATE_V3 = (
    SETS_V3.format(name="sets_v3")
    + "INSERT INTO sets_v3 SELECT *, NULL FROM sets;\n"
    + "DROP TABLE sets;\n"
    + "ALTER TABLE sets_v3 RENAME TO sets;\n"
    + "ALTER TABLE sessions ADD COLUMN set_distances TEXT;\n"
    + "ALTER TABLE sessions ADD COLUMN fade_pct REAL;\n"
)
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    plan TEXT NOT NULL, mode TEXT NOT NULL, driver TEXT NOT NULL, sets_planned INTEGER NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT, outcome TEXT, set_distances TEXT, fade_pct REAL
);
"""
    + SETS_V3.format(name="sets")
    + """
CREATE TABLE IF NOT EXISTS events (
    session_id INTEGER NOT NULL REFERENCES sessions(id), ts TEXT NOT NULL, kind TEXT NOT NULL,
    rule TEXT, reason TEXT, detail TEXT NOT NULL DEFAULT '', set_no INTEGER
);
"""
)
SCHEMA = SCHEMA + TRACE_TABLE + f"PRAGMA user_version = {SCHEMA_VERSION};\n"

CACHED_SESSIONS = 64  # the owner's newest sessions, served from memory so a read sees every write at once

# SQLite's primary result codes for "this file is not a (sound) database", as opposed to "cannot get at it".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # an error without a code (older SQLite): judge by the words SQLite uses
        return "not a database" in str(exc) or "malformed" in str(exc)
    return int(code) & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _connect_ro(path: Path) -> sqlite3.Connection:
    # mode=ro: this connection can never write, whoever holds it (the URI needs the path quoted: '?', '#').
    return sqlite3.connect(
        f"file:{quote(str(path))}?mode=ro", uri=True, check_same_thread=False, timeout=BUSY_TIMEOUT_S
    )


def _schema_problem(db: sqlite3.Connection) -> str | None:
    """Why this sound database is not a retrotread history, or None (an empty database is a new one)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version == 0 and not tables:
        return None
    if version not in (1, 2, SCHEMA_VERSION):  # older: migrated by the owner, read as it is by a reader
        return f"another schema (user_version {version}, expected {SCHEMA_VERSION})"
    wanted = TABLES if version == SCHEMA_VERSION else TABLES_V1
    if not tables >= wanted:
        return f"another schema (no {', '.join(sorted(wanted - tables))} table)"
    return None


def _unusable(path: Path) -> str | None:
    """Why the file at ``path`` must be moved aside, or None if it is a history or nothing (yet)."""
    if path.is_dir():
        return "a directory is in its place"
    if not path.exists():
        return None
    if not path.is_file():
        return "not a regular file"
    if path.stat().st_size == 0:
        return None  # SQLite's empty database: a new history, nothing to keep
    try:
        db = _connect_ro(path)
    except sqlite3.Error as exc:
        raise HistoryError(f"cannot open the history {path}: {exc}") from exc
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            return f"PRAGMA quick_check: {rows[0][0]}"
        return _schema_problem(db)
    except sqlite3.Error as exc:
        if _is_corrupt(exc):
            return str(exc)
        raise HistoryError(f"cannot open the history {path}: {exc}") from exc
    finally:
        db.close()


def _move_aside(path: Path, reason: str) -> None:
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.rename(path, target)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if os.path.lexists(side):
                os.rename(side, target.with_name(target.name + suffix))
    except OSError as exc:
        raise HistoryError(f"history {path} is unusable ({reason}) and cannot be moved aside: {exc.strerror}") from exc
    log.warning("history %s is unusable (%s): moved aside to %s; starting a new one", path, reason, target.name)


def _take_ownership(path: Path) -> int:
    """The exclusive flock that makes this process the history's one writer; held until close."""
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise HistoryError(f"cannot open the history {path}: {exc.strerror} ({exc.filename})") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise HistoryError(
                f"another retrotread process{who} owns the history {path} (it holds {lock.name});"
                " stop it first, or read with `retrotread history`"
            ) from exc
        raise HistoryError(f"cannot lock the history {path}: {exc.strerror}") from exc
    with contextlib.suppress(OSError):  # the pid is for the message above; a full disk may refuse it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class HistoryReader:
    """Reads of a history database on a connection that cannot write; any process, any time."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        self._read_lock = threading.Lock()
        self._trace_known = False  # a reader of a version 1 history sees the table once the owner migrates

    @classmethod
    def open(cls, path: Path) -> HistoryReader:
        if path.is_dir():
            raise HistoryError(f"history {path} is unusable: a directory is in its place")
        if not path.exists():
            raise HistoryError(f"no history at {path}")
        try:
            db = _connect_ro(path)
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot open the history {path}: {exc}") from exc
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
            problem = f"PRAGMA quick_check: {rows[0][0]}" if rows != [("ok",)] else _schema_problem(db)
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if problem is None and not tables:
                problem = "an empty database"
        except sqlite3.Error as exc:
            db.close()
            raise HistoryError(f"history {path} is unusable: {exc}") from exc
        if problem is not None:
            db.close()
            raise HistoryError(f"history {path} is unusable: {problem}")
        return cls(path, db)

    def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._read_lock:
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise HistoryError(f"cannot read the history {self.path}: {exc}") from exc

    def get(self, session_id: int) -> SessionRecord | None:
        def q(db: sqlite3.Connection) -> SessionRecord | None:
            row = db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
            return None if row is None else self._record(db, row)

        result: SessionRecord | None = self._read(q)
        return result

    def recent(self, limit: int = 20) -> list[SessionRecord]:
        def q(db: sqlite3.Connection) -> list[SessionRecord]:
            rows = db.execute("SELECT * FROM sessions ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            return [self._record(db, r) for r in rows]

        result: list[SessionRecord] = self._read(q)
        return result

    def get_trace(self, session_id: int) -> list[TracePoint]:
        def q(db: sqlite3.Connection) -> list[TracePoint]:
            if not self._has_trace(db):
                return []  # a version 1 history, read as it is: no session has a trace
            rows = db.execute(
                "SELECT t_s, ts, speed_mph, distance_m, incline_pct, hr FROM trace WHERE session_id = ? ORDER BY t_s",
                (session_id,),
            )
            return [TracePoint(*r) for r in rows]

        result: list[TracePoint] = self._read(q)
        return result

    def _has_trace(self, db: sqlite3.Connection) -> bool:
        if not self._trace_known:
            self._trace_known = (
                db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'trace'").fetchone() is not None
            )
        return self._trace_known

    def _started(self) -> dict[int, tuple[str, str]]:
        def q(db: sqlite3.Connection) -> dict[int, tuple[str, str]]:
            return {sid: (s, p) for sid, s, p in db.execute("SELECT id, started_at, plan FROM sessions")}

        result: dict[int, tuple[str, str]] = self._read(q)
        return result

    def weekly(self) -> list[tuple[str, str, int]]:
        """Sessions per ISO week per plan (program.md: the user can see the rhythm; nothing enforced)."""
        return _weekly(self._started())

    @staticmethod
    def _record(db: sqlite3.Connection, row: tuple[Any, ...]) -> SessionRecord:
        # A history older than version 3 (read as it is) has neither the summary nor the set's rule.
        sid, plan, mode, driver, sets_planned, started_at, ended_at, outcome = row[:8]
        distances, fade_pct = (row[8], row[9]) if len(row) >= 10 else (None, None)
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
                rule=s[11] if len(s) > 11 else None,
            )
            for s in db.execute("SELECT * FROM sets WHERE session_id = ? ORDER BY set_no", (sid,))
        )
        events = tuple(
            Event(ts=e[1], kind=e[2], rule=e[3], reason=e[4], detail=e[5], set=e[6], session=sid)
            for e in db.execute("SELECT * FROM events WHERE session_id = ? ORDER BY rowid", (sid,))
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
            set_distances_m=tuple(float(d) for d in distances.split(",")) if distances else (),
            fade_pct=fade_pct,
        )

    def close(self) -> None:
        with self._read_lock:
            self._db.close()  # closing twice is harmless in sqlite3


def _weekly(started: dict[int, tuple[str, str]]) -> list[tuple[str, str, int]]:
    counts: dict[tuple[str, str], int] = {}
    for _, (started_at, plan) in sorted(started.items()):
        year, week, _ = datetime.fromisoformat(started_at.replace("Z", "+00:00")).isocalendar()
        key = (f"{year}-W{week:02d}", plan)
        counts[key] = counts.get(key, 0) + 1
    return [(week, plan, n) for (week, plan), n in counts.items()]


class SqliteHistory(HistoryReader):
    """Sessions and sets in SQLite (WAL) under the state directory; survives a SIGKILL. The daemon's.

    Every batch of writes is one committed transaction, made by the writer thread: with WAL, a
    committed write survives the process being killed, so a crash loses at most the time since the
    last checkpoint of the running set. Session ids come from this process (``MAX(id)`` at open: the
    flock makes it the only writer), so ``begin`` returns at once.

    Reads see every write this process made, at once and without waiting for the disk: the newest
    ``CACHED_SESSIONS`` sessions it began are served from memory (read-through), the rest from the
    database. A session leaves memory only once it has ended and all its writes are committed.
    """

    def __init__(self, path: Path) -> None:
        lock_fd = _take_ownership(path)
        try:
            problem = _unusable(path)
            if problem is not None:
                _move_aside(path, problem)
            db, next_id, open_sids, version = self._open_writer(path)
        except BaseException:
            os.close(lock_fd)
            raise
        first: list[Write] = []
        if version < SCHEMA_VERSION:
            script = (TRACE_TABLE if version < 2 else "") + MIGRATE_V3
            first.append(Migrate(script + f"PRAGMA user_version = {SCHEMA_VERSION}", to=SCHEMA_VERSION))
        if open_sids:
            first.append(Recover(tuple(open_sids)))
        if first:
            try:
                commit(db, first)
            except sqlite3.Error as exc:  # disk full, a lock held elsewhere: the writer keeps trying
                log.warning("history %s: %s waits: %s", path, " and ".join(w.describe() for w in first), exc)
            else:
                first = []
        try:
            reader = _connect_ro(path)
        except sqlite3.Error as exc:
            db.close()
            os.close(lock_fd)
            raise HistoryError(f"cannot open the history {path}: {exc}") from exc
        super().__init__(path, reader)
        self._lock_fd: int | None = lock_fd
        self._lock = threading.Lock()
        self._mine = MemoryHistory(first_id=next_id)
        self._trace_buf: dict[int, list[TracePoint]] = {}
        self._writer = Writer(db, str(path))
        for w in first:  # before anything else: a trace write waits behind the migration
            self._writer.submit(w)

    @staticmethod
    def _open_writer(path: Path) -> tuple[sqlite3.Connection, int, list[int], int]:
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot open the history {path}: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables >= TABLES_V1:  # a new database (an existing one is not written to here: a full disk opens)
                db.executescript(SCHEMA)
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            next_id = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM sessions").fetchone()[0]
            open_sids = [r[0] for r in db.execute("SELECT id FROM sessions WHERE ended_at IS NULL ORDER BY id")]
        except sqlite3.Error as exc:
            db.close()
            raise HistoryError(f"cannot open the history {path}: {exc}") from exc
        return db, int(next_id), open_sids, version

    @classmethod
    def open(cls, path: Path) -> SqliteHistory:
        """The daemon's open: own the history (flock), move a broken file aside, recover a crash."""
        return cls(path)

    @classmethod
    def open_readonly(cls, path: Path) -> HistoryReader:
        """The CLI's open: reads only, never recovers, never writes; works while the daemon runs."""
        return HistoryReader.open(path)

    # ------------------------------------------------------------------ writes (the event loop's)

    def begin(self, plan: str, mode: str, driver: str, sets_planned: int, started_at: str) -> int:
        with self._lock:
            sid = self._mine.begin(plan, mode, driver, sets_planned, started_at)
            self._forget_old()
        self._writer.submit(Begin(sid, plan, mode, driver, sets_planned, started_at))
        return sid

    def checkpoint(self, session_id: int, result: SetResult) -> None:
        self._flush_trace(session_id)
        with self._lock:
            if self._mine.get(session_id) is not None:
                self._mine.checkpoint(session_id, result)
        self._writer.submit(PutSet(session_id, result, final=False))

    def record_set(self, session_id: int, result: SetResult) -> None:
        with self._lock:
            if self._mine.get(session_id) is not None:
                self._mine.record_set(session_id, result)
        self._writer.submit(PutSet(session_id, result, final=True))

    def record_event(self, session_id: int, event: Event) -> None:
        with self._lock:
            if self._mine.get(session_id) is not None:
                self._mine.record_event(session_id, event.model_copy(update={"session": session_id}))
        self._writer.submit(AddEvent(session_id, event))

    def trace(self, session_id: int, point: TracePoint) -> None:
        with self._lock:
            self._mine.trace(session_id, point)
            buf = self._trace_buf.setdefault(session_id, [])
            buf.append(point)
            full = point.t_s - buf[0].t_s >= TRACE_BATCH_S
        if full:
            self._flush_trace(session_id)

    def _flush_trace(self, session_id: int) -> None:
        with self._lock:
            points = self._trace_buf.pop(session_id, None)
        if points:
            self._writer.submit(PutTrace(session_id, tuple(points)))

    def end(
        self,
        session_id: int,
        outcome: Outcome,
        ended_at: str,
        *,
        set_distances_m: tuple[float, ...] = (),
        fade_pct: float | None = None,
    ) -> None:
        self._flush_trace(session_id)
        with self._lock:
            if self._mine.get(session_id) is not None:
                self._mine.end(session_id, outcome, ended_at, set_distances_m=set_distances_m, fade_pct=fade_pct)
        self._writer.submit(End(session_id, outcome, ended_at, set_distances_m, fade_pct))

    def _forget_old(self) -> None:
        cached = sorted(r.id for r in self._mine.sessions())
        for sid in cached[: max(0, len(cached) - CACHED_SESSIONS)]:
            rec = self._mine.get(sid)
            if rec is not None and rec.outcome is not None and not self._writer.has_pending(sid):
                self._mine.forget(sid)

    def set_listener(self, on_fault: Callable[[str], None], on_ok: Callable[[], None]) -> None:
        self._writer.set_listener(on_fault, on_ok)

    @property
    def failing(self) -> str | None:
        """What is wrong with the writes right now, or None."""
        return self._writer.failing

    @property
    def writes_pending(self) -> int:
        return self._writer.pending()

    @property
    def writes_dropped(self) -> int:
        return self._writer.dropped

    def flush(self, timeout: float = CLOSE_FLUSH_S) -> bool:
        """Wait until every write so far is committed (tools and tests; blocking, so never the loop)."""
        return self._writer.wait_idle(timeout)

    # ------------------------------------------------------------------ reads (read-through)

    def get(self, session_id: int) -> SessionRecord | None:
        with self._lock:
            rec = self._mine.get(session_id)
        return rec if rec is not None else super().get(session_id)

    def recent(self, limit: int = 20) -> list[SessionRecord]:
        with self._lock:
            mine = {r.id: r for r in self._mine.recent(limit)}
        stored = {r.id: r for r in super().recent(limit)}
        merged = stored | mine  # what this process wrote wins over what has reached the disk so far
        return [merged[sid] for sid in sorted(merged, reverse=True)[:limit]]

    def get_trace(self, session_id: int) -> list[TracePoint]:
        with self._lock:
            if self._mine.get(session_id) is not None:
                return self._mine.get_trace(session_id)
        return super().get_trace(session_id)

    def weekly(self) -> list[tuple[str, str, int]]:
        with self._lock:
            mine = {r.id: (r.started_at, r.plan) for r in self._mine.sessions()}
        return _weekly(self._started() | mine)

    def close(self) -> None:
        """Flush what can be flushed within ``CLOSE_FLUSH_S``, stop the writer, give up ownership. Twice is fine."""
        with self._lock:
            buffered = list(self._trace_buf)
        for sid in buffered:
            self._flush_trace(sid)
        self._writer.close()
        super().close()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)
