"""Helpers the tests share (fixtures live in conftest.py; import these by name, never conftest)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def fill_disk(disk: Path) -> Path:
    """Fill a tmpfs to the last page; the returned file frees it all again."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    return filler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(predicate: Callable[[], Any], updates: Any, within: float = 10.0) -> Any:
    """Wait, update by update from a hub subscription, until ``predicate()`` is truthy."""
    async with asyncio.timeout(within):
        while not (result := predicate()):
            await updates.next()
        return result


def trace_commands(trace: Path) -> list[dict[str, Any]]:
    """The commands a simulated device logged in its ``trace=`` file, in order (none before it exists)."""
    if not trace.exists():
        return []
    return [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]


def heard(trace: Path, cmd: str) -> int:
    """How many times the simulated device has heard ``cmd`` so far."""
    return sum(c["cmd"] == cmd for c in trace_commands(trace))


def wait_heard(trace: Path, cmd: str, more_than: int, within: float = 10.0) -> int:
    """Wait, polling the trace with a deadline, until the device has heard ``cmd`` more than ``more_than`` times."""
    deadline = time.monotonic() + within
    while (n := heard(trace, cmd)) <= more_than:
        assert time.monotonic() < deadline, f"the device heard no new {cmd} (still {n})"
        time.sleep(0.02)
    return n

