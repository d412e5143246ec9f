"""What every driver on a serial line shares: the line, the update queue, and open/close.

A ``SerialDriver`` owns one ``SerialLink`` and one background task that owns the line. Opening
greets the device (``_greet``, e.g. CSAFE's stop-first exchange or a pulse board's first line)
before the task starts; closing ends the task, then the link, then the sample stream. Subclasses
say how to greet, what the task does (``_run``), and what to do with bytes and a lost link.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator

from drivers.base import Driver, cancel_and_wait, drain
from drivers.errors import LinkLost
from drivers.serial_link import Backoff, SerialLink
from drivers.types import Update


class SerialDriver(Driver):
    task_name = "serial"
    """Prefix of the background task's name (``csafe /dev/ttyUSB0``)."""

    def __init__(self, path: str, *, baudrate: int, backoff: Backoff | None = None) -> None:
        self.path = path
        self._backoff = backoff or Backoff()
        self._link = SerialLink(path, baudrate=baudrate, on_data=self._on_bytes, on_lost=self._on_link_lost)
        self._updates: asyncio.Queue[Update | None] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def open(self) -> None:
        if self._runner is not None:
            return
        self._updates = asyncio.Queue()  # reusable: a stream ended by close() starts afresh
        await self._link.open()
        try:
            await self._greet()
        except BaseException:
            await self._link.close()
            raise
        self._connected = True
        self._runner = asyncio.create_task(self._run(), name=f"{self.task_name} {self.path}")

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        await cancel_and_wait(runner)
        self._connected = False
        self._closing()
        await self._link.close()
        self._updates.put_nowait(None)

    def samples(self) -> AsyncIterator[Update]:
        return drain(self._updates)

    def _closing(self) -> None:
        """After the task ended, before the link closes: fail what still waits on the device."""

    @abc.abstractmethod
    async def _greet(self) -> None:
        """Hear the device on a freshly opened link (raise to fail the open)."""

    @abc.abstractmethod
    async def _run(self) -> None:
        """The task that owns the line while the driver is open."""

    @abc.abstractmethod
    def _on_bytes(self, data: bytes, t: float) -> None: ...

    @abc.abstractmethod
    def _on_link_lost(self, exc: LinkLost) -> None: ...
