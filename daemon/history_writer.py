"""The history's writer thread: it owns the write connection, so a slow or failing disk never reaches the loop.

The event loop hands it writes (``submit``) and goes on at once. The thread commits them in order, in
batches, each batch one transaction. A batch that fails (disk full, another process holding the write
lock, an I/O error) is kept and retried with capped backoff; meanwhile new writes wait in a bounded
spool. The listener hears ``on_fault`` once when writes start failing and ``on_ok`` once when they
succeed again, on the event loop thread. Nothing here raises into the caller.

It must not read for anyone (reads have their own connection) and must not block the caller: the only
lock the caller takes is held for a few list operations.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from retrotread.daemon.snapshot import Event, Outcome, SetResult

log = logging.getLogger(__name__)

SPOOL_MAX = 10_000  # writes waiting; with checkpoints coalesced a session is ~10 sets + ~50 events: ~150 sessions
BATCH_MAX = 200  # writes per transaction
BACKOFF_FIRST_S = 0.05
BACKOFF_CAP_S = 2.0  # a disk that comes back is noticed within this
BUSY_TIMEOUT_S = 0.25  # SQLite's own wait for another process's lock, per attempt; the backoff does the rest
CLOSE_FLUSH_S = 2.0  # what close() spends flushing before it gives up (and says what it lost)
TRACE_BATCH_S = 1.0  # trace points wait in memory until they span this: with the commit, a crash loses < 2 s


@dataclass(frozen=True, slots=True)
class TracePoint:
    """One point of a session's 1 Hz trace: what the belt read at ``t_s`` seconds after the session began.

    ``ts`` is the wall clock (Unix seconds). A field the driver does not give is None, never 0:
    a timer-only session has points with neither speed nor distance (nothing invented)."""

    t_s: float
    ts: float
    speed_mph: float | None = None
    distance_m: float | None = None
    """Belt distance since the session began."""
    incline_pct: float | None = None
    hr: int | None = None


# Errors that say the write itself is wrong, not the disk: retrying cannot help (the batch is split and
# the bad write dropped, loudly). Everything else (OperationalError, a corrupt page) is retried.
_POISON = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.DataError)


@dataclass(frozen=True, slots=True)
class Begin:
    sid: int
    plan: str
    mode: str
    driver: str
    sets_planned: int
    started_at: str

    def apply(self, db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO sessions (id, plan, mode, driver, sets_planned, started_at) VALUES (?, ?, ?, ?, ?, ?)",
            (self.sid, self.plan, self.mode, self.driver, self.sets_planned, self.started_at),
        )

    def describe(self) -> str:
        return f"the start of session {self.sid}"


@dataclass(frozen=True, slots=True)
class PutSet:
    sid: int
    result: SetResult
    final: bool  # False: a checkpoint of the running set, which a newer one of the same set supersedes

    def apply(self, db: sqlite3.Connection) -> None:
        r = self.result
        db.execute(
            "INSERT OR REPLACE INTO sets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.sid,
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
                r.rule,
            ),
        )

    def describe(self) -> str:
        what = "set" if self.final else "checkpoint of set"
        return f"{what} {self.result.set} of session {self.sid} ({self.result.outcome})"


@dataclass(frozen=True, slots=True)
class PutTrace:
    sid: int
    points: tuple[TracePoint, ...]

    def apply(self, db: sqlite3.Connection) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO trace VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(self.sid, p.t_s, p.ts, p.speed_mph, p.distance_m, p.incline_pct, p.hr) for p in self.points],
        )

    def describe(self) -> str:
        span = f"{self.points[0].t_s:g}-{self.points[-1].t_s:g} s" if self.points else "empty"
        return f"trace of session {self.sid} ({len(self.points)} points, {span})"


@dataclass(frozen=True, slots=True)
class Migrate:
    """Schema version 1 or 2 to the current one (issues 15, 12): every old row is kept."""

    script: str
    to: int = 3
    sid: int = 0

    def apply(self, db: sqlite3.Connection) -> None:
        for statement in self.script.split(";"):  # executescript would COMMIT the batch's transaction
            if statement.strip():
                db.execute(statement)

    def describe(self) -> str:
        return f"the schema migration to version {self.to}"


@dataclass(frozen=True, slots=True)
class AddEvent:
    sid: int
    event: Event

    def apply(self, db: sqlite3.Connection) -> None:
        e = self.event
        db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.sid, e.ts, e.kind, e.rule, e.reason, e.detail, e.set),
        )

    def describe(self) -> str:
        return f"event {self.event.kind} of session {self.sid}"


@dataclass(frozen=True, slots=True)
class End:
    sid: int
    outcome: Outcome
    ended_at: str
    set_distances_m: tuple[float, ...] = ()
    fade_pct: float | None = None

    def apply(self, db: sqlite3.Connection) -> None:
        distances = ",".join(repr(d) for d in self.set_distances_m) or None
        db.execute(
            "UPDATE sessions SET outcome = ?, ended_at = ?, set_distances = ?, fade_pct = ? WHERE id = ?",
            (self.outcome, self.ended_at, distances, self.fade_pct, self.sid),
        )

    def describe(self) -> str:
        return f"the end of session {self.sid} ({self.outcome})"


@dataclass(frozen=True, slots=True)
class Recover:
    """Sessions a crashed owner left open end ``interrupted``, at the time of their last stored set."""

    sids: tuple[int, ...]
    sid: int = 0

    def apply(self, db: sqlite3.Connection) -> None:
        for sid in self.sids:
            db.execute(
                "UPDATE sessions SET outcome = 'interrupted',"
                " ended_at = COALESCE((SELECT MAX(ended_at) FROM sets WHERE session_id = ?), started_at)"
                " WHERE id = ? AND ended_at IS NULL",
                (sid, sid),
            )

    def describe(self) -> str:
        return f"marking sessions {list(self.sids)} interrupted"


Write = Begin | PutSet | PutTrace | AddEvent | End | Recover | Migrate


def commit(db: sqlite3.Connection, batch: list[Write]) -> None:
    """One transaction for the whole batch: all of it lands or none of it."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for w in batch:
            w.apply(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may have rolled back itself (disk full); the next BEGIN starts clean
        raise


class Writer:
    def __init__(self, db: sqlite3.Connection, name: str, *, spool_max: int = SPOOL_MAX) -> None:
        self._db = db
        self._name = name
        self._spool_max = spool_max
        self._cond = threading.Condition()
        self._pending: deque[Write] = deque()
        self._inflight = 0  # the first _inflight pending writes are being committed: never touched by submit
        self._closing = False
        self._deadline = 0.0
        self._failing: str | None = None
        self._attempts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_fault: Callable[[str], None] | None = None
        self._on_ok: Callable[[], None] | None = None
        self._told_fault = False  # what the listener last heard: a fault (True) or nothing / ok (False)
        self.dropped = 0
        self.committed = 0
        self._thread = threading.Thread(target=self._run, name=f"history writer {name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the caller's side

    def submit(self, w: Write) -> None:
        if self._loop is None and self._on_fault is not None:
            self._find_loop()  # set_listener ran outside the loop: the writes come from it
        with self._cond:
            if self._closing:
                self._lose(w, "the history is closed")
                return
            if isinstance(w, PutSet) and self._coalesce(w):
                return
            if len(self._pending) >= self._spool_max and not self._make_room(w):
                return
            self._pending.append(w)
            self._cond.notify()

    def _coalesce(self, w: PutSet) -> bool:
        """A newer write of the same set replaces a waiting checkpoint of it (its row would be replaced anyway)."""
        for i in range(len(self._pending) - 1, self._inflight - 1, -1):
            old = self._pending[i]
            if isinstance(old, PutSet) and old.sid == w.sid and old.result.set == w.result.set:
                if old.final and not w.final:
                    return False  # a checkpoint never replaces the finished set
                self._pending[i] = w
                return True
        return False

    def _make_room(self, w: Write) -> bool:
        # What goes first when the spool is full: a superseded checkpoint, then the oldest trace
        # points (a plot loses a stretch); a finished set or an event only when nothing else is left.
        for i in range(self._inflight, len(self._pending)):
            old = self._pending[i]
            if (isinstance(old, PutSet) and not old.final) or isinstance(old, PutTrace):
                del self._pending[i]
                log.warning(
                    "history spool full (%d writes waiting): dropped %s to keep %s",
                    self._spool_max,
                    old.describe(),
                    w.describe(),
                )
                return True
        self._lose(w, f"the spool is full ({self._spool_max} writes waiting since: {self._failing})")
        return False

    def _lose(self, w: Write, why: str) -> None:
        self.dropped += 1
        # A finished set or an event is never dropped quietly (issue 10): this is the loud line.
        log.error("HISTORY LOST %s: %s", w.describe(), why)

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def has_pending(self, sid: int) -> bool:
        with self._cond:
            return any(w.sid == sid or (isinstance(w, Recover) and sid in w.sids) for w in self._pending)

    def wait_idle(self, timeout: float) -> bool:
        """Block until every write so far is committed (tests and tools; never the loop)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending, timeout)

    @property
    def failing(self) -> str | None:
        return self._failing

    def set_listener(self, on_fault: Callable[[str], None], on_ok: Callable[[], None]) -> None:
        """The listener is only ever called on an event loop: the one running now, or else the one the
        next write comes from. A listener set while writes already fail hears ``on_fault`` at once."""
        with self._cond:
            self._loop, self._on_fault, self._on_ok, self._told_fault = None, on_fault, on_ok, False
        self._find_loop()

    def _find_loop(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        with self._cond:
            self._loop = loop
        self._reconcile()

    def close(self) -> None:
        with self._cond:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + CLOSE_FLUSH_S
                self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(CLOSE_FLUSH_S + BUSY_TIMEOUT_S + 1.0)
            if self._thread.is_alive():
                log.error("history writer %s did not stop within %.1f s", self._name, CLOSE_FLUSH_S)

    # ------------------------------------------------------------------ the thread's side

    def _run(self) -> None:
        try:
            while self._step():
                pass
        finally:
            with self._cond:
                lost = list(self._pending)
                self._pending.clear()
                self._inflight = 0
                self._cond.notify_all()
            for w in lost:
                self._lose(w, f"not saved within {CLOSE_FLUSH_S:g} s of close ({self._failing})")
            try:
                self._db.close()
            except sqlite3.Error as exc:  # pragma: no cover - close of a broken connection
                log.warning("history %s: closing the write connection: %s", self._name, exc)

    def _step(self) -> bool:
        with self._cond:
            while not self._pending and not self._closing:
                self._cond.wait()
            if not self._pending or (self._closing and time.monotonic() >= self._deadline):
                return False
            batch = list(islice(self._pending, BATCH_MAX))
            self._inflight = len(batch)
        try:
            self._commit(batch)
        except sqlite3.Error as exc:
            with self._cond:
                self._inflight = 0
            self._fault(exc)
            self._backoff()
            return True
        with self._cond:
            for _ in batch:
                self._pending.popleft()
            self._inflight = 0
            self.committed += len(batch)
            self._cond.notify_all()
        self._recovered()
        return True

    def _commit(self, batch: list[Write]) -> None:
        try:
            commit(self._db, batch)
        except _POISON as exc:
            if len(batch) > 1:
                for i, w in enumerate(batch):  # find the bad one; the others land, one by one
                    try:
                        self._commit([w])
                    except sqlite3.Error:
                        with self._cond:  # the ones that landed are not written twice on the retry
                            for _ in range(i):
                                self._pending.popleft()
                            self.committed += i
                        raise
                return
            self._lose(batch[0], f"SQLite refused it: {exc}")

    def _backoff(self) -> None:
        self._attempts += 1
        delay = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** min(self._attempts, 16))
        with self._cond:
            if self._closing:
                delay = min(delay, max(0.0, self._deadline - time.monotonic()))
            self._cond.wait_for(lambda: self._closing, delay)  # close() cuts the wait short

    def _fault(self, exc: sqlite3.Error) -> None:
        with self._cond:
            first = self._failing is None
            self._failing = f"history writes failing on {self._name}: {exc} ({len(self._pending)} waiting)"
            detail = self._failing
        if first:  # log once on failure and once on recovery (style.md)
            log.warning("%s; retrying every %.1f s at most, spooling up to %d", detail, BACKOFF_CAP_S, self._spool_max)
            self._reconcile()

    def _recovered(self) -> None:
        self._attempts = 0
        with self._cond:
            was, self._failing = self._failing, None
        if was is not None:
            log.warning("history writes on %s succeed again; the spooled writes are saved", self._name)
            self._reconcile()

    def _reconcile(self) -> None:
        """Tell the listener, on its loop, what it has not heard yet: a fault, or that the fault is over."""
        with self._cond:
            loop, on_fault, on_ok, failing = self._loop, self._on_fault, self._on_ok, self._failing
            if loop is None or on_fault is None or on_ok is None or (failing is not None) == self._told_fault:
                return
            self._told_fault = failing is not None
        try:
            if failing is not None:
                loop.call_soon_threadsafe(on_fault, failing)
            else:
                loop.call_soon_threadsafe(on_ok)
        except RuntimeError:
            pass  # the loop is closed: nobody left to tell
