"""What a new user found (issue 12), as they ran it: real processes, a real daemon, a real pty."""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import subprocess
import time

import pytest
from daemon_proc import RETROTREAD, daemon, run_cli

from retrotread.api.cli import _parser

pytestmark = pytest.mark.slow


def test_status_prints_no_python_none() -> None:
    # deadmill mode: no target speed, no session, no stop reason: every one of them a None in the state
    with daemon("--driver", "sim://manual", "--mode", "deadmill") as d:
        out = run_cli("status", "--url", d.url, env=d.env)
        assert out.returncode == 0, out.stderr
        assert "None" not in out.stdout, out.stdout
        assert "target –" in out.stdout and "session: none" in out.stdout


def test_watch_without_a_daemon_says_how_to_start_one() -> None:
    out = run_cli("status", "--watch", "--url", "http://127.0.0.1:9", input_text="")
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert "cannot reach the daemon at http://127.0.0.1:9" in line and "retrotread run" in line
    assert "lost" not in line


def _options(parser: argparse.ArgumentParser, where: str) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub, f"{where} {name}")
        elif not isinstance(action, argparse._HelpAction):
            found.append((where, action))
    return found


def test_every_option_has_help() -> None:
    missing = [f"{where}: {a.option_strings or a.dest}" for where, a in _options(_parser(), "retrotread") if not a.help]
    assert not missing


def test_decode_joins_its_arguments_into_one_frame() -> None:
    out = run_cli("decode", "csafe", "f1", "a5", "a5", "f2")  # the README's example
    assert out.returncode == 0, out.stdout
    (frame,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert frame["direction"] == "request"
    assert [c["command"] for c in frame["commands"]] == ["GetSpeed"]
    each = run_cli("decode", "csafe", "--each", "f1a5a5f2", "f1 25 03 78 00 12 4c f2")
    assert len(each.stdout.splitlines()) == 2, each.stdout


def _pty_run(args: list[str], steps: list[tuple[bytes, bytes]], within: float = 30.0) -> tuple[int, bytes]:
    """Run ``retrotread ARGS`` on a real pseudo-terminal; for each step, once its text is on the
    screen, type its keys. Returns the exit code and everything the screen got."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "LINES": "30", "TERM": "xterm"}
    proc = subprocess.Popen([RETROTREAD, *args], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    seen = b""
    todo = list(steps)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if todo and todo[0][0] in seen:
                os.write(master, todo.pop(0)[1])
            if proc.poll() is not None and not ready:
                break
        return proc.wait(10), seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_deadmill_view_shows_its_keys_and_space_does_not_pause() -> None:
    # Space means EMERGENCY STOP in status --watch; here (no motor, S13) it must do nothing at all.
    code, screen = _pty_run(["deadmill", "--plan", "1x3s,countdown=0s", "--json"], [(b"p pause/resume", b" ")])
    assert b"p pause/resume" in screen and b"q end session" in screen
    assert b"(paused)" not in screen
    assert code == 0, screen.decode(errors="replace")[-2000:]


def test_deadmill_view_p_pauses_and_q_ends() -> None:
    code, screen = _pty_run(
        ["deadmill", "--plan", "1x30s,countdown=0s", "--json"], [(b"p pause/resume", b"p"), (b"(paused)", b"q")]
    )
    assert b"(paused)" in screen
    assert code == 1  # ended before the plan: not "completed"


def test_watch_view_space_is_the_emergency_stop() -> None:
    with daemon("--driver", "sim://motorized?rate_hz=20") as d:
        code, screen = _pty_run(
            ["status", "--watch", "--url", d.url], [(b"space/s EMERGENCY STOP", b" "), (b"STOPPED", b"q")]
        )
        assert d.state()["stop"]["latched"]
        assert b"q quit" in screen
        assert code == 0, screen.decode(errors="replace")[-2000:]
