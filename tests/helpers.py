"""Helpers the tests share (fixtures live in conftest.py; import these by name, never conftest)."""

from __future__ import annotations

import asyncio
import socket
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
