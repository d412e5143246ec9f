"""``none://`` (or plain ``none``): no treadmill at all, a plain set timer.

For flat-ground retro walking, Phase 1 in a hallway, hills and sled drags, or a deadmill without a
sensor: sessions are timed and stored with their times only. It measures nothing, so it reports
nothing (no belt, no speed, no distance: nothing is invented), and it drives nothing: it cannot
move a belt (``can_drive`` is False, so reverse mode does not arm, S3, and start and speed are
refused before they reach it, S13). Motion commands that reach it anyway are a bug and say so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Self
from urllib.parse import SplitResult

from retrotread.drivers.base import Driver
from retrotread.drivers.errors import ConfigError, Unsupported
from retrotread.drivers.types import Capabilities, Update
from retrotread.drivers.units import Speed


class NoDriver(Driver):
    def __init__(self) -> None:
        self._open = False
        self.url = "none://"
        self._closed = asyncio.Event()

    @classmethod
    def from_url(cls, url: SplitResult, options: dict[str, str]) -> Self:
        if url.netloc or url.path not in ("", "/") or options:
            raise ConfigError(f"none:// takes no device and no options; got {url.geturl()!r}")
        return cls()

    @property
    def capabilities(self) -> Capabilities:
        # No samples ever come, so staleness (S8) never applies; the period only sizes timeouts.
        return Capabilities(can_drive=False, nominal_period_s=1.0)

    @property
    def connected(self) -> bool:
        return self._open  # nothing to lose: a timer is "connected" while it runs

    async def open(self) -> None:
        self._open = True
        self._closed.clear()

    async def close(self) -> None:
        self._open = False
        self._closed.set()

    async def samples(self) -> AsyncIterator[Update]:
        # Nothing is measured, so nothing is yielded: the stream only ends when the timer closes.
        await self._closed.wait()
        nothing: tuple[Update, ...] = ()
        for update in nothing:
            yield update

    async def start(self, speed: Speed) -> None:
        raise Unsupported("none:// has no belt to start (S13)")

    async def set_speed(self, speed: Speed) -> None:
        raise Unsupported("none:// has no belt to drive (S13)")

    async def set_incline(self, incline_pct: float) -> None:
        raise Unsupported("none:// has no deck to incline (S13)")

    async def stop(self) -> None:
        return  # a stop is never refused (S5); there is nothing to stop

    async def emergency_stop(self) -> None:
        return
