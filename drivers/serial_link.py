"""The serial port under the ``csafe://`` and ``pulse://`` drivers: open, write, notice loss, reopen.

``SerialLink`` is one port path (``/dev/ttyUSB0``, a ``/dev/serial/by-id`` link, a simulator's pty
link) opened with pyserial-asyncio-fast. It hands received bytes to its owner with their monotonic
receive time, writes frames at once (no queue of its own: the stop of rule S5 must not wait behind
anything here), and reports a link that dropped (EOF, EIO, a pulled USB adapter) the moment the
transport sees it, not at the next poll timeout: rule S9 wants the daemon latched within 100 ms.

pyserial and OS errors are translated here, at the boundary (``translate_open_error``): a missing
port names the path, a permission problem names the dialout group and the command that fixes it.

``LogLimiter`` keeps a noisy line (garbage bytes, bad lines) to one log record a minute.

This module must not parse any protocol, decide anything about safety, or retry by itself: the
drivers' ``LinkMachine`` (``drivers.link_state``) calls ``open()`` again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import serial
import serial_asyncio_fast

from retrotread.drivers.errors import ConfigError, DeviceAccessError, DriverError, LinkLost, NotConnected

log = logging.getLogger(__name__)

DataSink = Callable[[bytes, float], None]
"""Receives bytes as they arrive, with the monotonic time they were read."""
LossSink = Callable[[LinkLost], None]
"""Told once when the link drops by itself (never for ``close()``)."""

CLOSE_GRACE_S = 0.5  # let a last stop frame drain before the port is closed
CLOSE_HARD_S = 2.0  # then give up on a port that will not flush (flow control stuck)

_ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
_BUSY_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK})
_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})

DIALOUT_HINT = (
    "serial ports belong to the dialout group: add your user with `sudo usermod -aG dialout $USER` "
    "and log in again (or install the udev rule from systemd/)"
)


def translate_open_error(path: str, exc: BaseException) -> DriverError | ConfigError:
    """The error of ours for a pyserial/OS error raised while opening ``path``."""
    code = getattr(exc, "errno", None)
    if code in _GONE_ERRNOS:
        return NotConnected(
            f"serial port {path} does not exist: is the adapter plugged in? (`retrotread scan` lists serial ports)"
        )
    if code in _ACCESS_ERRNOS:
        return DeviceAccessError(f"permission denied opening serial port {path}: {DIALOUT_HINT}")
    if code in _BUSY_ERRNOS:
        return DeviceAccessError(
            f"serial port {path} is in use by another program (another retrotread, a terminal, ModemManager?)"
        )
    if "configure port" in str(exc):
        # pyserial's words when tcgetattr fails: the path exists but is no terminal at all.
        return ConfigError(f"{path} is not a serial port ({exc})")
    return NotConnected(f"cannot open serial port {path}: {exc}")


class LogLimiter:
    """Logs a recurring problem at most once per ``every_s``, with how many were not logged."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0) -> None:
        self._log = logger
        self._every_s = every_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, key: str, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._every_s:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        skipped = self._skipped.pop(key, 0)
        self._last[key] = now
        if skipped:
            self._log.log(level, msg + " (and %d more like it since the last report)", *args, skipped)
        else:
            self._log.log(level, msg, *args)


class _Protocol(asyncio.Protocol):
    """One connection's protocol: forwards bytes, and tells its link when the transport is gone."""

    def __init__(self, link: SerialLink) -> None:
        self._link = link
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closing = False  # True once we closed it on purpose

    def data_received(self, data: bytes) -> None:
        self._link._received(data, time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if not self.closing:
            self._link._lost(self, exc)


class SerialLink:
    """One serial port, opened on demand. An async context manager; ``close()`` twice is harmless.

    The link is reusable: after it dropped (``on_lost`` was called) or was closed, ``open()``
    opens the same path again. Not re-entrant: one owner, one connection at a time.
    """

    def __init__(
        self,
        path: str,
        *,
        baudrate: int,
        on_data: DataSink,
        on_lost: LossSink,
        exclusive: bool = True,
    ) -> None:
        self.path = path
        self.baudrate = baudrate
        self._on_data = on_data
        self._on_lost = on_lost
        self._exclusive = exclusive
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._closing: tuple[asyncio.Transport, _Protocol] | None = None  # a close still under way
        self.opens = 0
        self.losses = 0
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def open(self) -> None:
        """Open the port (8N1, no flow control, an exclusive lock). Errors are ours, translated."""
        if self._transport is not None:
            return
        if self._closing is not None:
            await self.close()  # the port is exclusive: the old descriptor must be gone first
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(
            None,
            functools.partial(
                serial.Serial,
                self.path,
                baudrate=self.baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                exclusive=self._exclusive,
            ),
        )
        try:
            port = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The open goes on in its thread; close what it opens rather than leak the descriptor.
            opening.add_done_callback(_close_opened_port)
            raise
        except (serial.SerialException, OSError, ValueError) as exc:
            raise translate_open_error(self.path, exc) from exc
        protocol = _Protocol(self)
        transport, _ = await serial_asyncio_fast.connection_for_serial(loop, lambda: protocol, port)
        self._transport = transport
        self._protocol = protocol
        self.opens += 1

    def write(self, data: bytes) -> None:
        """Write now; the transport buffers only what the port cannot take yet."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise NotConnected(f"serial port {self.path} is not open")
        transport.write(data)
        self.bytes_out += len(data)

    async def close(self) -> None:
        """Close the port, letting what was written (a last stop) drain first.

        Returns only once the transport has really closed (its ``_call_connection_lost`` task has
        closed the descriptor and told the protocol). A second ``close()``, or one after a first
        was cancelled half way, waits for that same close instead of returning at once: that early
        return leaked the transport's close task past the driver's ``close()`` (issue 10).
        """
        transport, protocol = self._transport, self._protocol
        self._transport = self._protocol = None
        if transport is not None and protocol is not None:
            protocol.closing = True
            self._closing = (transport, protocol)
            if not transport.is_closing():
                transport.close()
        pending = self._closing
        if pending is None:
            return
        await self._finish_close(*pending)
        if self._closing is pending:
            self._closing = None

    async def _finish_close(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE_S):
                await asyncio.shield(protocol.lost)
        if not protocol.lost.done() and transport.get_write_buffer_size() > 0:
            # Bytes the port never took (a stuck line): drop them, a stop repeats anyway (S5).
            transport.abort()
        try:
            async with asyncio.timeout(CLOSE_HARD_S):
                await asyncio.shield(protocol.lost)
        except TimeoutError:
            log.error("serial port %s did not close within %.1f s", self.path, CLOSE_GRACE_S + CLOSE_HARD_S)

    # -- from the protocol ---------------------------------------------------------------------

    def _received(self, data: bytes, t: float) -> None:
        self.bytes_in += len(data)
        self._on_data(data, t)

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return
        self._transport = self._protocol = None
        self.losses += 1
        why = f"serial port {self.path} dropped" + (f": {exc}" if exc else " (end of file)")
        self._on_lost(LinkLost(why))

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _close_opened_port(future: asyncio.Future[Any]) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    with contextlib.suppress(Exception):
        future.result().close()
