"""A pseudo-terminal as the device end of a serial cable, for the simulated serial devices.

``PtyEndpoint`` opens a pty (``os.openpty()``) in raw mode and symlinks the host end's name
(``/dev/pts/N``) at a path of your choosing, so a driver opens ``csafe:///tmp/ttyTREAD`` exactly as
it would open ``/dev/ttyUSB0``. The device end (the master) is read with an asyncio reader callback:
no task, nothing to leak. The endpoint keeps the host end open itself, so a driver that closes and
reopens the port never makes the device end see EOF.

"Unplug" closes both ends and removes the link: the driver's next read fails with EIO, as a pulled
USB adapter's does. "Replug" makes a new pty and points the link at it.

``PtyDevice`` is what the simulated CSAFE console and pulse board share: the endpoint behind a
``sims.link.FaultyLink`` (stall, garbage and unplug are manipulators of the byte stream), the fault
engine (``sims.faults.FaultSchedule`` on the event loop's monotonic clock, plus ``strike_next()`` to
bring the next fault forward, e.g. on SIGUSR1), and an optional trace sink that gets one JSON-able
dict per thing that happened.

This module must not speak any protocol, and must not replace a path that is not a symlink.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
import tty
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from retrotread.drivers.errors import ConfigError
from retrotread.sims.faults import Fault, FaultKind, FaultSchedule, Recovery
from retrotread.sims.link import FaultyLink, Manipulator

log = logging.getLogger(__name__)

BytesSink = Callable[[bytes, float], None]
TraceSink = Callable[[dict[str, Any]], None]


class PtyEndpoint:
    """The device end of a pty whose host end is linked at ``link``. ``close()`` twice is harmless."""

    def __init__(self, link: Path, on_data: BytesSink) -> None:
        self.link = Path(link)
        self._on_data = on_data
        self._master: int | None = None
        self._slave: int | None = None
        self.host_name: str | None = None
        self.dropped_bytes = 0

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def plug(self) -> None:
        """A new pty, raw, with the link pointing at its host end. Needs a running event loop."""
        if self._master is not None:
            return
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        try:
            # Raw: no echo, no line discipline, 8-bit clean, as a serial port opened by pyserial.
            tty.setraw(slave)
            os.set_blocking(master, False)
            name = os.ttyname(slave)
            _point(self.link, name)
            loop.add_reader(master, self._readable)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave, self.host_name = master, slave, name

    def unplug(self) -> None:
        """Close both ends (the host sees EIO) and remove the link if it is still ours."""
        master, slave, name = self._master, self._slave, self.host_name
        self._master = self._slave = None
        if master is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may already be closing
            asyncio.get_running_loop().remove_reader(master)
        for fd in (master, slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        with contextlib.suppress(OSError):
            if self.link.is_symlink() and os.readlink(self.link) == name:
                self.link.unlink()

    def write(self, data: bytes) -> int:
        """Write toward the host. What the pty cannot take now is dropped, as a UART FIFO would."""
        master = self._master
        if master is None:
            self.dropped_bytes += len(data)
            return 0
        try:
            written = os.write(master, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            written = 0
        self.dropped_bytes += len(data) - written
        return written

    def _readable(self) -> None:
        master = self._master
        if master is None:
            return
        try:
            data = os.read(master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while the host end is being torn down; the endpoint holds it open otherwise
        if data:
            self._on_data(data, time.monotonic())

    async def close(self) -> None:
        self.unplug()

    async def __aenter__(self) -> Self:
        self.plug()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _point(link: Path, target: str) -> None:
    """Make ``link`` a symlink to ``target``, replacing a stale symlink but nothing else."""
    if link.exists() and not link.is_symlink():
        raise ConfigError(f"{link} exists and is not a symlink; refusing to replace it with a simulated device")
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)  # atomic: a driver never sees the path missing while it is replaced


class PtyDevice:
    """Base of the simulated serial devices: a pty endpoint behind a ``FaultyLink``, a fault
    schedule (``sims.faults.FaultSchedule``) and a trace.

    Subclasses implement ``_on_bytes`` (what the host wrote) and ``_on_fault``/``_on_recovery``
    (their own faults; the link's are applied before), may give ``garbage`` (their wire's noise) and
    may extend ``open``/``close``. Faults are given in seconds after ``open()``; each kind a subclass
    does not simulate is refused at construction (``ConfigError`` naming the kinds it does).
    Everything a subclass writes goes through ``self.wire``.
    """

    kind = "serial device"
    fault_kinds: frozenset[FaultKind] = frozenset(FaultKind)

    def __init__(
        self,
        link: Path,
        *,
        faults: Sequence[Fault] = (),
        trace: TraceSink | None = None,
        garbage: Manipulator[bytes] | None = None,
    ) -> None:
        self.endpoint = PtyEndpoint(link, self._on_bytes)
        self.wire: FaultyLink[bytes] = FaultyLink(
            self.endpoint.write, garbage=garbage, unplug=self.endpoint.unplug, plug=self.endpoint.plug
        )
        self.schedule = FaultSchedule(faults, self, link=self.wire, allowed=self.fault_kinds, device=self.kind)
        self.faults = self.schedule.faults
        self._trace = trace
        self.started_at = 0.0
        self.history: list[tuple[float, str]] = []
        """What happened to the device (faults, unplug, replug ...), with monotonic times."""
        self._waiters: list[tuple[str, asyncio.Future[float]]] = []

    @property
    def link(self) -> Path:
        return self.endpoint.link

    @property
    def host_name(self) -> str | None:
        return self.endpoint.host_name

    @property
    def active(self) -> frozenset[FaultKind]:
        """The faults struck and not cleared."""
        return self.schedule.struck

    async def open(self) -> None:
        if self.endpoint.plugged:
            return
        self.started_at = time.monotonic()
        self.wire.clear()
        self.wire.plugged = True
        self.endpoint.plug()
        self.note("plugged", host=self.endpoint.host_name)
        self.schedule.start(self.started_at)
        self.schedule.attach(asyncio.get_running_loop())

    async def close(self) -> None:
        self.schedule.stop()
        self.endpoint.unplug()
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- faults (sims.faults.FaultTarget) -------------------------------------------------------

    def strike(self, kind: FaultKind) -> None:
        """Make fault ``kind`` happen now."""
        self.schedule.strike(kind)

    def strike_next(self) -> FaultKind | None:
        """Bring the next scheduled fault forward to now (SIGUSR1 of ``retrotread sim-device``)."""
        return self.schedule.strike_next()

    def on_fault(self, kind: FaultKind, now: float) -> None:
        self.note(f"fault:{kind.value}")
        if kind is FaultKind.UNPLUG:
            self.note("unplugged", why="cable unplugged")
        self._on_fault(kind, now)

    def on_recovery(self, step: Recovery, now: float) -> None:
        if step is Recovery.REPLUG:
            self.note("replugged", why="cable back", host=self.endpoint.host_name)
        self._on_recovery(step, now)

    def _on_fault(self, kind: FaultKind, now: float) -> None:
        """What ``kind`` does to this device beyond the link (nothing, unless a subclass says)."""

    def _on_recovery(self, step: Recovery, now: float) -> None:
        """The device's part of a recovery step (nothing, unless a subclass says)."""

    def unplug(self, why: str) -> None:
        self.wire.unplug()
        self.note("unplugged", why=why)

    def replug(self, why: str) -> None:
        self.wire.replug()
        self.note("replugged", why=why, host=self.endpoint.host_name)

    # -- what happened -------------------------------------------------------------------------

    def note(self, what: str, **detail: Any) -> None:
        """Record something that happened to the device, for tests (``wait_for``) and the trace."""
        now = time.monotonic()
        self.history.append((now, what))
        self.trace({"t": now, "event": what, **detail})
        for name, waiter in list(self._waiters):
            if name == what and not waiter.done():
                waiter.set_result(now)

    def trace(self, record: dict[str, Any]) -> None:
        if self._trace is not None:
            self._trace(record)

    async def wait_for(self, what: str, *, after: float = 0.0, within: float = 10.0) -> float:
        """The monotonic time ``what`` (e.g. ``"replugged"``) happened at or after ``after``."""
        for t, name in self.history:
            if name == what and t >= after:
                return t
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        entry = (what, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(within):
                return await waiter
        finally:
            self._waiters.remove(entry)

    def _on_bytes(self, data: bytes, t: float) -> None:
        raise NotImplementedError


__all__ = ["PtyDevice", "PtyEndpoint"]
