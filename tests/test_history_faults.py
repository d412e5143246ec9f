"""History under real failures: another process holding SQLite's lock, a full tmpfs, a read-only or
forbidden disk, a second owner, a SIGKILLed writer. Nothing here may block the event loop or raise into it.

Ordering, not timing, shows the loop is never blocked: each write returns before the process that
blocks it is told to let go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import a_set, fill_disk

from retrotread.daemon.history import HistoryError, SqliteHistory
from retrotread.daemon.history_writer import SPOOL_MAX, PutSet, Writer
from retrotread.daemon.snapshot import Event

T0 = "2026-11-21T15:00:00.000Z"

# Another process takes SQLite's write lock and holds it until told (a line on stdin) to let go.
HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
print("released", flush=True)
"""


class LockHolder:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"


@contextlib.contextmanager
def lock_holder(path: Path) -> Iterator[LockHolder]:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        holder = LockHolder(proc)
        try:
            yield holder
        finally:
            holder.release()
            proc.wait(10)


class Listener:
    """What the history told us, in order with our own marks, and on which thread."""

    def __init__(self, order: list[str]) -> None:
        self.order = order
        self.fault = asyncio.Event()
        self.ok = asyncio.Event()
        self.details: list[str] = []
        self.threads: set[int] = set()

    def on_fault(self, detail: str) -> None:
        self.order.append("fault")
        self.details.append(detail)
        self.threads.add(threading.get_ident())
        self.fault.set()

    def on_ok(self) -> None:
        self.order.append("ok")
        self.threads.add(threading.get_ident())
        self.ok.set()

    async def wait(self, what: asyncio.Event) -> None:
        async with asyncio.timeout(15):
            await what.wait()


def a_session(store: SqliteHistory, checkpoints: int = 1) -> int:
    sid = store.begin("deadmill", "deadmill", "sim://manual", 3, T0)
    for i in range(checkpoints):
        store.checkpoint(sid, a_set(1, "interrupted", 10.0 + i))
    store.record_set(sid, a_set(1))
    store.record_event(sid, Event(kind="set_completed", set=1, ts=T0, session=sid))
    store.end(sid, "completed", "2026-11-21T15:05:00.000Z")
    return sid


def on_disk(path: Path, sid: int) -> tuple[str | None, list[str], list[str]]:
    reader = SqliteHistory.open_readonly(path)
    try:
        rec = reader.get(sid)
    finally:
        reader.close()
    assert rec is not None
    return rec.outcome, [s.outcome for s in rec.sets], [e.kind for e in rec.events]


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    return text


# A writer in its own process: one committed set, a checkpoint of the running one, then it waits to be killed.
WRITER = """
import sys
from pathlib import Path
from retrotread.daemon.history import SqliteHistory
from helpers import fill_disk
from helpers import a_set
store = SqliteHistory.open(Path(sys.argv[1]))
sid = store.begin("deadmill", "deadmill", "sim://manual", 3, "2026-11-21T15:00:00.000Z")
store.record_set(sid, a_set(1))
store.checkpoint(sid, a_set(2, "interrupted", 20.0))
assert store.flush()
print(sid, flush=True)
sys.stdin.readline()
"""


@contextlib.contextmanager
def live_writer(path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The writer process, mid-session; the caller kills it (SIGKILL), or it is told to go on the way out."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        sid = int(proc.stdout.readline())
        try:
            yield proc, sid
        finally:
            if proc.poll() is None:
                proc.stdin.write("\n")
                proc.stdin.flush()
            proc.wait(10)
        assert proc.returncode in (0, -signal.SIGKILL)


async def test_a_write_while_another_process_holds_the_lock_returns_before_it_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = SqliteHistory.open(path)
    order: list[str] = []
    heard = Listener(order)
    store.set_listener(heard.on_fault, heard.on_ok)
    with lock_holder(path) as holder:
        sid = a_session(store)
        order.append("returned")
        record = store.get(sid)  # a read sees this process's writes at once, from memory
        assert record is not None and record.outcome == "completed" and record.sets == (a_set(1),)
        assert [r.id for r in store.recent(5)] == [sid]
        await heard.wait(heard.fault)
        assert store.writes_pending > 0
        holder.release()
        order.append("released")
        await heard.wait(heard.ok)
    assert order == ["returned", "fault", "released", "ok"]
    assert heard.threads == {threading.get_ident()}  # told on the event loop's thread
    assert "locked" in heard.details[0]
    assert store.flush()
    assert on_disk(path, sid) == ("completed", ["completed"], ["set_completed"])
    store.close()
    store.close()  # twice is harmless


async def test_a_full_disk_spools_the_writes_and_lands_them_when_space_comes_back(
    tmpfs: Callable[..., Path],
) -> None:
    disk = tmpfs("1m")
    path = disk / "history.sqlite3"
    store = SqliteHistory.open(path)
    order: list[str] = []
    heard = Listener(order)
    store.set_listener(heard.on_fault, heard.on_ok)
    filler = fill_disk(disk)
    sid = a_session(store, checkpoints=5)
    order.append("returned")
    await heard.wait(heard.fault)
    assert "full" in heard.details[0]
    assert store.writes_pending == 4  # begin, set 1 (its 5 checkpoints superseded by it), the event, the end
    filler.unlink()
    order.append("freed")
    await heard.wait(heard.ok)
    assert order == ["returned", "fault", "freed", "ok"]
    assert store.flush()
    assert on_disk(path, sid) == ("completed", ["completed"], ["set_completed"])
    assert store.writes_dropped == 0
    store.close()


async def test_an_existing_history_on_a_full_disk_opens_and_recovers_once_there_is_room(
    tmpfs: Callable[..., Path],
) -> None:
    disk = tmpfs("1m")
    path = disk / "history.sqlite3"
    with live_writer(path) as (proc, sid):
        proc.send_signal(signal.SIGKILL)  # a crash mid-session: no end()
    filler = fill_disk(disk)
    store = SqliteHistory.open(path)  # must not fail: the daemon runs, the history catches up
    order: list[str] = []
    heard = Listener(order)
    store.set_listener(heard.on_fault, heard.on_ok)
    await heard.wait(heard.fault)
    new = a_session(store)
    assert new == sid + 1
    filler.unlink()
    order.append("freed")
    await heard.wait(heard.ok)
    assert order == ["fault", "freed", "ok"]
    assert store.flush()
    assert on_disk(path, sid) == ("interrupted", ["completed", "interrupted"], [])
    assert on_disk(path, new) == ("completed", ["completed"], ["set_completed"])
    store.close()


def test_a_new_history_on_a_full_disk_is_a_clear_error(tmpfs: Callable[..., Path]) -> None:
    disk = tmpfs("256k")
    fill_disk(disk)
    with pytest.raises(HistoryError) as err:
        SqliteHistory.open(disk / "history.sqlite3")
    assert "full" in one_line(err.value) and "history.sqlite3" in str(err.value)


def test_a_read_only_disk_is_a_clear_error(tmpfs: Callable[..., Path]) -> None:
    disk = tmpfs("256k", "ro")
    with pytest.raises(HistoryError) as err:
        SqliteHistory.open(disk / "history.sqlite3")
    assert "Read-only file system" in one_line(err.value)


def test_a_state_directory_we_may_not_write_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)  # nobody's, and root without CAP_DAC_OVERRIDE is just another user
    code = (
        "import sys; from pathlib import Path\n"
        "from retrotread.daemon.history import HistoryError, SqliteHistory\n"
        "try:\n    SqliteHistory.open(Path(sys.argv[1]))\n"
        "except HistoryError as exc:\n    print(exc); sys.exit(3)\n"
    )
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    out = subprocess.run(
        [*drop, sys.executable, "-c", code, str(state / "history.sqlite3")], capture_output=True, text=True
    )
    if "setpriv" in out.stderr:
        pytest.skip(f"cannot drop capabilities here: {out.stderr.strip()}")
    assert out.returncode == 3, out.stderr
    assert "Permission denied" in out.stdout and out.stdout.count("\n") == 1 and not out.stderr


def test_a_second_owner_is_told_who_owns_the_history(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = SqliteHistory.open(path)
    with pytest.raises(HistoryError) as err:
        SqliteHistory.open(path)
    assert f"another retrotread process (pid {os.getpid()}) owns" in one_line(err.value)
    code = (
        "import sys; from pathlib import Path\n"
        "from retrotread.daemon.history import HistoryError, SqliteHistory\n"
        "try:\n    SqliteHistory.open(Path(sys.argv[1]))\n"
        "except HistoryError as exc:\n    print(exc); sys.exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert out.returncode == 3 and f"(pid {os.getpid()}) owns" in out.stdout, out.stderr
    store.close()
    SqliteHistory.open(path).close()  # once the owner is gone, the next one may own it


def test_a_reader_never_touches_a_live_session_and_sigkill_keeps_the_committed_sets(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    with live_writer(path) as (proc, sid):
        for _ in range(2):  # `retrotread history` twice during the session: it stays live
            reader = SqliteHistory.open_readonly(path)
            live = reader.get(sid)
            reader.close()
            assert live is not None and live.outcome is None and live.ended_at is None
        with pytest.raises(HistoryError, match="another retrotread process"):
            SqliteHistory.open(path)
        proc.send_signal(signal.SIGKILL)
    store = SqliteHistory.open(path)  # the owner, after the crash: now, and only now, it is interrupted
    record = store.get(sid)
    assert record is not None and record.outcome == "interrupted"
    assert [s.outcome for s in record.sets] == ["completed", "interrupted"]
    store.close()


def test_a_reader_of_no_history_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError) as err:
        SqliteHistory.open_readonly(tmp_path / "history.sqlite3")
    assert "no history at" in one_line(err.value)
    assert not (tmp_path / "history.sqlite3").exists()  # and it made none


async def test_close_gives_up_within_its_bound_and_says_what_it_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "history.sqlite3"
    store = SqliteHistory.open(path)
    with lock_holder(path) as holder:
        sid = a_session(store)
        with caplog.at_level(logging.ERROR, logger="retrotread.daemon.history_writer"):
            store.close()
        store.close()
        assert not holder.released  # close() came back while the lock was still held
        store.record_event(sid, Event(kind="fault", reason="late", ts=T0))  # after close: logged, never raised
    lost = [r.getMessage() for r in caplog.records if r.getMessage().startswith("HISTORY LOST")]
    assert len(lost) == 5 and "set 1 of session 1 (completed): not saved within 2 s of close" in lost[1]
    assert lost[4] == "HISTORY LOST event fault of session 1: the history is closed"


async def test_a_full_spool_drops_checkpoints_first_and_never_a_finished_set_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "history.sqlite3"
    SqliteHistory.open(path).close()
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0.25)
    with lock_holder(path), caplog.at_level(logging.WARNING, logger="retrotread.daemon.history_writer"):
        writer = Writer(db, "test", spool_max=3)
        # (The writer may have the first write or two in flight: those are not the spool's to drop.)
        writer.submit(PutSet(1, a_set(1, "interrupted"), final=False))
        writer.submit(PutSet(1, a_set(2, "interrupted"), final=False))
        writer.submit(PutSet(1, a_set(2, "interrupted", 30.0), final=False))  # supersedes the one before
        writer.submit(PutSet(1, a_set(3, "interrupted"), final=False))
        for n in (4, 5, 6, 7):
            writer.submit(PutSet(1, a_set(n), final=True))
        assert writer.pending() <= 4
    assert writer.wait_idle(10)
    writer.close()
    reader = sqlite3.connect(path)
    landed: dict[int, float] = dict(reader.execute("SELECT set_no, work_s FROM sets"))
    reader.close()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "spool full" in r.getMessage()]
    lost = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert lost and all(m.startswith("HISTORY LOST set ") and "the spool is full" in m for m in lost)
    assert all("dropped checkpoint of set" in m for m in warned)
    lost_sets = {int(m.split()[3]) for m in lost}
    assert lost_sets | {n for n in landed if n >= 4} == {4, 5, 6, 7}  # a finished set lands or is named
    assert len(landed) + len(lost) + len(warned) == 7  # 8 writes, one superseded, none gone quietly
    assert landed.get(2, 30.0) == 30.0  # if set 2 landed, it is the newer checkpoint
    assert SPOOL_MAX >= 1000


async def test_a_listener_set_off_the_loop_is_told_on_the_loop_the_writes_come_from(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = SqliteHistory.open(path)
    order: list[str] = []
    heard = Listener(order)
    await asyncio.to_thread(store.set_listener, heard.on_fault, heard.on_ok)  # no loop on that thread
    with lock_holder(path) as holder:
        a_session(store)
        order.append("returned")
        await heard.wait(heard.fault)
        holder.release()
        order.append("released")
        await heard.wait(heard.ok)
    assert order == ["returned", "fault", "released", "ok"]
    assert heard.threads == {threading.get_ident()}
    store.close()
