"""Issue 10: ``retrotread estop`` stops the belt whatever reason it is given (S5).

A real daemon on the simulated belt logs every command its device hears. Hypothesis hands the CLI
arbitrary reasons as raw argument bytes (any length an argument may have, any encoding, shell
metacharacters, control characters): each call exits 0, the device hears one more stop, and the
stop is latched.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_proc import RETROTREAD, Daemon, daemon
from helpers import heard, wait_heard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

# An argument is bytes without NUL, up to the kernel's 128 KiB per argument.
REASONS = st.one_of(
    st.binary(max_size=512).map(lambda b: b.replace(b"\0", b"")),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=300).map(os.fsencode),
    st.integers(0, 100_000).map(lambda n: b"r" * n),
)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    trace = tmp_path_factory.mktemp("cli-estop") / "device.jsonl"
    with daemon("--driver", f"sim://motorized?rate_hz=20&trace={trace}", "--mode", "reverse") as d:
        yield d, trace


@given(reason=REASONS)
@example(reason=b"x" * 201)  # one over the old limit: was refused, and the belt kept running
@example(reason=b"\xff\xfe not utf-8")
@example(reason=b"r" * 100_000)
@example(reason=b"$(reboot); `rm -rf /` \"'")
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_any_reason_given_to_the_cli_estop_stops_the_belt(running: tuple[Daemon, Path], reason: bytes) -> None:
    d, trace = running
    before = heard(trace, "estop")
    out = subprocess.run(
        [os.fsencode(RETROTREAD), b"estop", b"--url", d.url.encode(), b"--reason", reason],
        capture_output=True,
        timeout=60,
        env={**os.environ, **d.env},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert b"EMERGENCY STOP sent" in out.stdout
    wait_heard(trace, "estop", before)
    assert d.state()["stop"]["latched"]
