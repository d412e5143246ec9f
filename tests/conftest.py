"""Shared fixtures: no leaked tasks, a real tmpfs, a simulated CSAFE console. Functions the tests share
are in ``helpers.py``."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from retrotread.sims.csafe_device import CsafeDevice
from retrotread.sims.serial_serve import serve_csafe

settings.register_profile("ci", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running behind it (style.md: no orphan tasks)."""
    before = asyncio.all_tasks()
    yield
    leaked = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()}
    if leaked:
        # Give tasks that are finishing their cancellation one turn of the loop.
        await asyncio.sleep(0)
        leaked = {t for t in leaked if not t.done()}
    for t in leaked:
        t.cancel()
    assert not leaked, f"leaked tasks: {sorted(t.get_name() for t in leaked)}"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount a real tmpfs of the given size (we are root); unmounted again whatever happens."""
    mounted: list[Path] = []

    def mount(size: str, *options: str) -> Path:
        where = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        where.mkdir()
        opts = ",".join((f"size={size}", *options))
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {out.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[CsafeDevice]:
    """A simulated CSAFE console on a real pseudo-terminal (``console.link`` is its port's path),
    with the defaults a 0.1 mph console has; a test that needs another console serves its own."""
    async with serve_csafe(tmp_path / "ttyTREAD") as device:
        yield device
