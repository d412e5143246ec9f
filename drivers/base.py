"""The one small interface every driver implements, whatever the belt and whatever the link.

A driver is an async context manager: entering connects (or starts the simulation), leaving
disconnects; leaving twice is harmless. While entered:

* ``samples()`` yields ``BeltSample`` and ``DeviceEvent`` in the order they happened. A driver that
  reconnects by itself yields ``DISCONNECTED`` and later ``CONNECTED``; it never sends anything
  but a stop as its first command after a reconnect (rule S9).
* ``start``/``set_speed``/``set_incline``/``stop`` are motion commands. They are never called by a
  face directly: only the safety guard calls them, after the supervisor allowed them.
* ``emergency_stop()`` writes the stop ahead of anything queued or in flight (rule S5).

A driver decides nothing about safety and does no unit conversion of its own beyond encoding a
``Speed`` in the device's unit.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self
from urllib.parse import SplitResult

from retrotread.drivers.types import Capabilities, DeviceInfo, Update
from retrotread.drivers.units import Speed


class Driver(abc.ABC):
    """Base class of every driver. Subclasses implement the abstract methods."""

    url: str
    reports_rejections: bool = False
    """True if the driver yields a REJECTED event itself when the device refuses a command, so the
    guard does not report the refusal a second time."""

    @property
    def device(self) -> DeviceInfo | None:
        """What the machine said about itself (maker, model, firmware, counters), once it has;
        ``None`` from drivers whose device says nothing (simulators, sensors)."""
        return None

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: SplitResult, options: dict[str, str]) -> Self:
        """Build the driver from its URL (already split) and its query options."""

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect to the device (or start the simulation)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect. Calling it again, or before ``open``, does nothing."""

    @abc.abstractmethod
    def samples(self) -> AsyncIterator[Update]:
        """Samples and device events, in order, until the driver is closed."""

    @abc.abstractmethod
    async def start(self, speed: Speed) -> None: ...

    @abc.abstractmethod
    async def set_speed(self, speed: Speed) -> None: ...

    @abc.abstractmethod
    async def set_incline(self, incline_pct: float) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """A controlled stop."""

    @abc.abstractmethod
    async def emergency_stop(self) -> None:
        """Stop now: ahead of any poll or command in flight or queued (rule S5)."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def drain(updates: asyncio.Queue[Update | None]) -> AsyncIterator[Update]:
    """A driver's ``samples()``: what its task puts in the queue, until the None ``close()`` puts."""
    while (item := await updates.get()) is not None:
        yield item


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """End a driver's background task on ``close()``; None (never opened, closed twice) does nothing."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the caller is being cancelled too: never swallow that
