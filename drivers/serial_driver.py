"""What every driver on a serial line shares: the line, the update queue, and open/close.

A ``SerialDriver`` owns one ``SerialLink`` and one background task that owns the line. Opening
greets the device (``_greet``, e.g. CSAFE's stop-first exchange or a pulse board's first line)
before the task starts; closing ends the task, then the link, then the sample stream. Subclasses
say how to greet, what the task does (``_run``), and what to do with bytes and a lost link.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import AsyncIterator

from retrotread.drivers.base import Driver, cancel_and_wait, drain
from retrotread.drivers.errors import LinkLost
from retrotread.drivers.serial_link import Backoff, SerialLink
from retrotread.drivers.types import DeviceEvent, DeviceEventKind, Update

log = logging.getLogger(__name__)


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

    async def _run(self) -> None:
        """The task that owns the line: talk until the link is lost, say so, get it back, again."""
        try:
            while True:
                why = await self._converse()
                self._lose(why)
                await self._link.close()
                await self._reconnect()
        except Exception as exc:
            # A bug of ours: end the stream rather than fall silent, so the daemon latches (S9).
            log.exception("%s: the %s driver failed", self.path, self.task_name)
            self._lose(f"driver failed: {exc}")
            self._updates.put_nowait(None)

    def _lose(self, why: str) -> None:
        """The link is gone: say so once (S9)."""
        was = self._connected
        self._connected = False
        self._lost(why)
        if was:
            log.warning("%s: link lost: %s", self.path, why)
            self._updates.put_nowait(DeviceEvent(time.monotonic(), DeviceEventKind.DISCONNECTED, why))

    def _lost(self, why: str) -> None:
        """What else a lost link ends (commands in flight, waiters); called before it is reported."""

    @abc.abstractmethod
    async def _greet(self) -> None:
        """Hear the device on a freshly opened link (raise to fail the open)."""

    @abc.abstractmethod
    async def _converse(self) -> str:
        """Work the line until the link is lost; return why."""

    @abc.abstractmethod
    async def _reconnect(self) -> None:
        """Get the link back (with backoff) and greet the device again."""

    @abc.abstractmethod
    def _on_bytes(self, data: bytes, t: float) -> None: ...

    @abc.abstractmethod
    def _on_link_lost(self, exc: LinkLost) -> None: ...
