"""A history file that is not one: the owner moves it aside (never deletes it) and starts anew with one
WARNING line; a reader says so in one line. Every broken file we can make, made for real."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import a_set

from retrotread.daemon.history import HistoryError, SqliteHistory


def a_good_history(path: Path, sessions: int = 300) -> None:
    store = SqliteHistory.open(path)
    for _ in range(sessions):
        sid = store.begin("deadmill", "deadmill", "sim://manual", 3, "2026-11-21T15:00:00.000Z")
        for n in (1, 2, 3):
            store.record_set(sid, a_set(n))
        store.end(sid, "completed", "2026-11-21T15:05:00.000Z")
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, so cutting it breaks it
    db.close()


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(64 * 1024))
    path.with_name(path.name + "-wal").write_bytes(os.urandom(4096))  # a stray WAL goes aside with it


def truncated(path: Path) -> None:
    a_good_history(path)
    assert path.stat().st_size > 16 * 4096  # many pages: half of them is not a database
    os.truncate(path, path.stat().st_size // 2)


def garbage_pages(path: Path) -> None:
    a_good_history(path)
    size = path.stat().st_size
    assert size > 16 * 4096
    with path.open("r+b") as f:  # page 1 (the header and the schema) intact, every other page noise
        f.seek(4096)
        f.write(os.urandom(size - 4096))


def another_schema_version(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE sessions (id INTEGER PRIMARY KEY); PRAGMA user_version = 7;")
    db.close()


def another_schema_tables(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE recipes (name TEXT);")
    db.close()


def a_directory(path: Path) -> None:
    path.mkdir()
    (path / "keep").write_text("mine")


BROKEN: dict[str, Callable[[Path], None]] = {
    "random bytes": random_bytes,
    "truncated": truncated,
    "garbage pages": garbage_pages,
    "user_version 7": another_schema_version,
    "other tables": another_schema_tables,
    "a directory": a_directory,
}


def snapshot(path: Path) -> bytes | None:
    return None if path.is_dir() else path.read_bytes()


@pytest.mark.parametrize("make", BROKEN.values(), ids=BROKEN.keys())
def test_a_reader_of_a_broken_history_gets_one_line(tmp_path: Path, make: Callable[[Path], None]) -> None:
    path = tmp_path / "history.sqlite3"
    make(path)
    before = snapshot(path)
    with pytest.raises(HistoryError) as err:
        SqliteHistory.open_readonly(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"history {path} is unusable: ")
    assert snapshot(path) == before  # a reader moves nothing and mends nothing


@pytest.mark.parametrize("make", BROKEN.values(), ids=BROKEN.keys())
def test_the_owner_moves_a_broken_history_aside_and_starts_anew(
    tmp_path: Path, make: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "history.sqlite3"
    make(path)
    before = snapshot(path)
    had_wal = path.with_name(path.name + "-wal").exists()
    with caplog.at_level(logging.INFO, logger="retrotread.daemon.history"):
        store = SqliteHistory.open(path)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "moved aside to history.sqlite3.corrupt-" in warnings[0].getMessage()
    (aside,) = tmp_path.glob("history.sqlite3.corrupt-*[0-9]")
    assert snapshot(aside) == before  # kept, byte for byte
    assert (tmp_path / f"{aside.name}-wal").exists() or not had_wal
    sid = store.begin("deadmill", "deadmill", "sim://manual", 3, "2026-11-21T15:00:00.000Z")
    assert sid == 1
    assert store.flush()
    store.close()
    reader = SqliteHistory.open_readonly(path)
    assert [r.id for r in reader.recent()] == [1]
    reader.close()


def test_an_empty_file_is_a_new_history_not_a_broken_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "history.sqlite3"
    path.touch()
    with pytest.raises(HistoryError, match="is unusable: an empty database"):
        SqliteHistory.open_readonly(path)
    with caplog.at_level(logging.WARNING):
        store = SqliteHistory.open(path)
    assert not caplog.records and not list(tmp_path.glob("*.corrupt-*"))
    store.close()


def test_a_good_history_is_kept_and_a_second_broken_one_goes_aside_beside_the_first(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    a_good_history(path, sessions=3)
    store = SqliteHistory.open(path)
    assert [r.id for r in store.recent()] == [3, 2, 1]
    store.close()
    assert not list(tmp_path.glob("*.corrupt-*"))
    for _ in range(2):  # twice within the same second: two names, nothing overwritten
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
        random_bytes(path)
        SqliteHistory.open(path).close()
    assert len(list(tmp_path.glob("history.sqlite3.corrupt-*[0-9]"))) == 2
