"""``retrotread history`` as a person runs it (issue 12, 15): a table by default, ``--json`` and
``--csv`` on request, ``progress`` with the history page's figures, ``export`` to a file.

Real processes over a history written by a real ``SqliteHistory``; the FIT read back with fitdecode.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from datetime import date
from pathlib import Path

import fitdecode
import pytest
from daemon_proc import RETROTREAD, run_cli
from helpers import DISTS, write_deadmill_session

from retrotread.daemon.history import SqliteHistory
from retrotread.daemon.progress import progress


@pytest.fixture
def state(tmp_path: Path) -> tuple[dict[str, str], int]:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    sid = write_deadmill_session(state_dir / "history.sqlite3", "csafe:///dev/ttyUSB0", DISTS)
    return {"RETROTREAD_DAEMON__STATE_DIR": str(state_dir), "COLUMNS": "200"}, sid


def test_plain_history_is_a_table_not_one_json_line(state: tuple[dict[str, str], int]) -> None:
    env, sid = state
    out = run_cli("history", env=env)
    assert out.returncode == 0, out.stderr
    assert not out.stdout.lstrip().startswith("[")
    for column in ("id", "started", "plan", "outcome", "sets", "distance", "fade"):
        assert column in out.stdout
    row = next(line for line in out.stdout.splitlines() if "deadmill" in line and "completed" in line)
    assert f"{sid}" in row and "3/3" in row and f"{sum(DISTS):.0f} m" in row and "-14%" in row


def test_history_json_and_csv_on_request(state: tuple[dict[str, str], int]) -> None:
    env, sid = state
    out = run_cli("history", "--json", env=env)
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert record["id"] == sid and len(record["sets"]) == 3
    out = run_cli("history", "--csv", env=env)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [float(r["distance_m"]) for r in rows] == list(DISTS)
    assert {r["simulated"] for r in rows} == {"false"}


def test_history_progress_prints_the_pages_figures(state: tuple[dict[str, str], int]) -> None:
    env, _ = state
    out = run_cli("history", "progress", "--json", env=env)
    assert out.returncode == 0, out.stderr
    reader = SqliteHistory.open_readonly(Path(env["RETROTREAD_DAEMON__STATE_DIR"]) / "history.sqlite3")
    try:
        expected = progress(reader.recent(1000), date.today()).model_dump(mode="json")
    finally:
        reader.close()
    assert json.loads(out.stdout) == expected
    out = run_cli("history", "progress", env=env)
    assert out.returncode == 0, out.stderr
    assert "42 m, 40 m, 36 m" in out.stdout and "-14.3%" in out.stdout
    assert expected["position"]["suggested_plan"] in out.stdout


def test_history_export_writes_a_fit_file_fitdecode_reads(state: tuple[dict[str, str], int], tmp_path: Path) -> None:
    env, sid = state
    target = tmp_path / "walk.fit"
    out = run_cli("history", "export", str(sid), "--format", "fit", "-o", str(target), env=env)
    assert out.returncode == 0, out.stderr
    laps = []
    with fitdecode.FitReader(str(target), check_crc=fitdecode.CrcCheck.ENABLED) as reader:
        for frame in reader:
            if isinstance(frame, fitdecode.FitDataMessage) and frame.name == "lap":
                laps.append(frame.get_value("total_distance"))
    assert sum(laps) == pytest.approx(sum(DISTS), abs=0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state", "walk.fit"]  # no part file left behind


def test_history_export_default_name_and_stdout(state: tuple[dict[str, str], int], tmp_path: Path) -> None:
    env, sid = state
    done = subprocess.run(
        [RETROTREAD, "history", "export", str(sid), "--format", "tcx"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / f"retrotread-{sid}.tcx").read_bytes().startswith(b"<?xml")
    out = run_cli("history", "export", str(sid), "--format", "csv", "-o", "-", env=env)
    assert out.returncode == 0 and out.stdout.startswith("session,plan"), out.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["history", "export", "999"], "no session 999"),
        (["history", "export", "1", "-o", "/nonexistent/dir/x.fit"], "cannot write"),
        (["history", "--limit", "0"], "--limit"),
    ],
)
def test_history_errors_are_one_line(state: tuple[dict[str, str], int], args: list[str], needle: str) -> None:
    env, _ = state
    out = run_cli(*args, env=env)
    assert out.returncode == 1, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr


def test_bad_export_format_is_a_usage_error(state: tuple[dict[str, str], int]) -> None:
    env, _ = state
    out = run_cli("history", "export", "1", "--format", "gpx", env=env)
    assert out.returncode == 2 and "invalid choice" in out.stderr
    assert "Traceback" not in out.stderr
