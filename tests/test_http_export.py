"""Issues 15.2/15.4 over HTTP, and 12.7 (token rotation), against a real ``retrotread run``.

The history is written through a real ``SqliteHistory`` into the daemon's state directory before it
starts; the daemon serves it with real uvicorn. The FIT file is read back with ``fitdecode``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from daemon_proc import Daemon, daemon, run_cli
from helpers import DISTS, fit_messages, write_deadmill_session

from retrotread.daemon.history import SqliteHistory
from retrotread.daemon.progress import progress


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Daemon, int]]:
    with tempfile.TemporaryDirectory(prefix="retrotread-export-") as tmp:
        state = Path(tmp)
        os.chmod(state, 0o700)
        sid = write_deadmill_session(state / "history.sqlite3", "csafe:///dev/ttyUSB0", DISTS)
        with daemon("--driver", "sim://manual", "--mode", "deadmill", env={"RETROTREAD_DAEMON__STATE_DIR": tmp}) as d:
            yield d, sid


def test_progress_is_the_history_pages_figures(served: tuple[Daemon, int]) -> None:
    d, sid = served
    resp = d.http.get("/api/v1/progress", headers={"Authorization": ""})  # loopback reads need no token
    assert resp.status_code == 200, resp.text
    body = resp.json()
    reader = SqliteHistory.open_readonly(Path(d.env["RETROTREAD_DAEMON__STATE_DIR"]) / "history.sqlite3")
    try:
        expected = progress(reader.recent(1000), date.today()).model_dump(mode="json")
    finally:
        reader.close()
    assert body == expected
    (point,) = body["strength"]
    assert point["session"] == sid
    assert point["set_distances_m"] == list(DISTS)


def test_export_fit_is_an_attachment_that_fitdecode_reads(served: tuple[Daemon, int]) -> None:
    d, sid = served
    resp = d.http.get(f"/api/v1/history/{sid}/export", params={"format": "fit"}, headers={"Authorization": ""})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/vnd.ant.fit"
    assert resp.headers["content-disposition"] == f'attachment; filename="retrotread-{sid}.fit"'
    msgs = fit_messages(resp.content)
    assert msgs["file_id"][0]["type"] == "activity"
    assert len(msgs["lap"]) == 3
    assert sum(lap["total_distance"] for lap in msgs["lap"]) == pytest.approx(sum(DISTS), abs=0.5)


@pytest.mark.parametrize(
    ("fmt", "media", "needle"),
    [("tcx", "application/vnd.garmin.tcx+xml", b"<Lap"), ("csv", "text/csv; charset=utf-8", b"session,plan")],
)
def test_export_tcx_and_csv(served: tuple[Daemon, int], fmt: str, media: str, needle: bytes) -> None:
    d, sid = served
    resp = d.http.get(f"/api/v1/history/{sid}/export?format={fmt}")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == media
    assert resp.headers["content-disposition"].startswith("attachment;")
    assert needle in resp.content


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/history/999/export?format=fit", 404),
        ("/api/v1/history/1/export?format=gpx", 422),
        ("/api/v1/history/1/export?format=", 422),
        ("/api/v1/history/0/export?format=fit", 422),
        ("/api/v1/history/abc/export?format=fit", 422),
        ("/api/v1/history/99999999999999999999999/export", 422),
    ],
)
def test_export_refusals_are_4xx_with_a_message(served: tuple[Daemon, int], path: str, status: int) -> None:
    d, _ = served
    resp = d.http.get(path)
    assert resp.status_code == status, resp.text
    assert resp.json().get("error") or resp.json().get("detail")


def test_token_rotation_takes_effect_without_a_restart() -> None:
    """Issue 12: after ``token --rotate`` the new token works at once and the old one is refused."""
    with daemon("--driver", "sim://manual", "--mode", "deadmill") as d:
        old = d.http.headers["Authorization"]
        assert d.post("/api/v1/session/abort").status_code != 401  # nothing to abort, but allowed to ask
        rotated = run_cli("token", "--rotate", env=d.env)
        assert rotated.returncode == 0, rotated.stderr
        new = rotated.stdout.strip()
        assert f"Bearer {new}" != old
        resp = d.http.post("/api/v1/session/abort", headers={"Authorization": old})
        assert resp.status_code == 401, resp.text
        resp = d.http.post("/api/v1/session/abort", headers={"Authorization": f"Bearer {new}"})
        assert resp.status_code != 401, resp.text
        # and the command line, which reads the token file, is not locked out
        status = run_cli("session", "abort", "--url", d.url, env=d.env)
        assert "401" not in status.stderr, status.stderr


def test_a_token_file_others_can_write_is_not_adopted(tmp_path: Path) -> None:
    """A rotation is followed; a token planted through a loosened file is not (the start-up rule)."""
    from retrotread.daemon.auth import LiveToken, load_or_create_token, rotate_token

    state = tmp_path / "state"
    live = LiveToken(load_or_create_token(state))
    new = rotate_token(state)
    assert live.matches(new)
    (state / "token").write_text("planted\n")
    os.chmod(state / "token", 0o666)
    assert not live.matches("planted") and live.matches(new)
