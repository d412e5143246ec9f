"""What every driver on a serial line shares: the line, the update queue, and open/close.

A ``SerialDriver`` owns one ``SerialLink``, one ``LinkMachine`` that keeps it up, and one
background task that runs the machine. Opening is the machine's first attempt (``connect()``):
the port opens, then the driver greets the device (``_greet``, e.g. CSAFE's stop-first exchange
or a pulse board's first line); a failure there is raised to the caller, never retried. The task
then serves the line (``_converse``) and, after a loss, lets the machine reopen and greet again
with backoff. Closing ends the task, then the link, then the sample stream. Subclasses say how to
greet, what the line does while up, and what to do with bytes and a lost link.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import AsyncIterator, Collection, Sequence
from urllib.parse import SplitResult

from retrotread.drivers.base import Driver, cancel_and_wait, drain
from retrotread.drivers.errors import ConfigError, LinkLost, TreadError
from retrotread.drivers.link_state import Backoff, LinkChange, LinkFailure, LinkMachine, LinkState
from retrotread.drivers.serial_link import SerialLink
from retrotread.drivers.types import DeviceEvent, DeviceEventKind, Update

log = logging.getLogger(__name__)


def port_and_baud(
    scheme: str,
    url: SplitResult,
    options: dict[str, str],
    *,
    known: Collection[str],
    bauds: Sequence[int],
    default_baud: int,
    example: str,
) -> tuple[str, int]:
    """The port's path and the baud rate of a serial driver's URL, checked the same way for every
    serial scheme (``csafe://``, ``pulse://``), each problem in words that say how to fix it.

    ``known`` are the scheme's options (any other is refused, so a typo is not silently ignored);
    ``example`` is a URL that shows the form, for the error when the path is missing.
    """
    if url.netloc or not url.path.startswith("/"):
        raise ConfigError(
            f"{scheme}://{url.netloc}{url.path}: give the port's absolute path after {scheme}://, e.g. {example}"
        )
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"{scheme}:// has no option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    baud = options.get("baud", str(default_baud))
    if not baud.isdigit() or int(baud) not in bauds:
        raise ConfigError(f"{scheme}:// option baud={baud!r}: allowed {', '.join(map(str, bauds))}")
    return url.path, int(baud)


class SerialDriver(Driver):
    task_name = "serial"
    """Prefix of the background task's name (``csafe /dev/ttyUSB0``)."""

    def __init__(self, path: str, *, baudrate: int, backoff: Backoff | None = None) -> None:
        self.path = path
        self._link = SerialLink(path, baudrate=baudrate, on_data=self._on_bytes, on_lost=self._on_link_lost)
        self._machine = LinkMachine(
            f"{self.task_name}://{path}",
            opening=self._link.open,
            greeting=self._greet,
            up=self._up,
            closing=self._link.close,
            backoff=backoff or Backoff(),
            # TreadError is a link or device problem: retried. Anything else is a bug of ours
            # and ends the driver (see _run).
            retry_on=(TreadError,),
            on_failure=self._link_failed,
            logger=log,
        )
        self._machine.add_listener(self._link_changed)
        self._updates: asyncio.Queue[Update | None] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def link_machine(self) -> LinkMachine:
        """The state machine that keeps the line up (its state, and ``wait_for``)."""
        return self._machine

    async def open(self) -> None:
        if self._runner is not None:
            return
        self._updates = asyncio.Queue()  # reusable: a stream ended by close() starts afresh
        await self._machine.connect()
        self._runner = asyncio.create_task(self._run(), name=f"{self.task_name} {self.path}")

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        await cancel_and_wait(runner)
        self._machine.closed()
        self._connected = False
        self._closing()
        await self._link.close()
        self._updates.put_nowait(None)

    def samples(self) -> AsyncIterator[Update]:
        return drain(self._updates)

    def _closing(self) -> None:
        """After the task ended, before the link closes: fail what still waits on the device."""

    async def _run(self) -> None:
        """The task that keeps the line: the link machine, until close() cancels it."""
        try:
            await self._machine.run()
        except Exception as exc:
            # A bug of ours: end the stream rather than fall silent, so the daemon latches (S9).
            log.exception("%s: the %s driver failed", self.path, self.task_name)
            self._lose(f"driver failed: {exc}")
            self._updates.put_nowait(None)

    async def _up(self) -> None:
        why = await self._converse()
        raise LinkLost(why)

    def _link_failed(self, failure: LinkFailure) -> None:
        if failure.state is LinkState.UP:
            self._lose(str(failure.error))
        else:
            self._lost(str(failure.error))

    def _link_changed(self, change: LinkChange) -> None:
        if change.after is LinkState.UP:
            self._connected = True
            if change.recovered:
                self._reconnected()

    def _reconnected(self) -> None:
        """The link is back and the device greeted (S9: its first command was a stop)."""

    def _lose(self, why: str) -> None:
        """The link is gone: say so once (S9)."""
        was = self._connected
        self._connected = False
        self._lost(why)
        if was:
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
    def _on_bytes(self, data: bytes, t: float) -> None: ...

    @abc.abstractmethod
    def _on_link_lost(self, exc: LinkLost) -> None: ...
