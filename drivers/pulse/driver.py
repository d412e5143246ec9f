"""``pulse://`` — a roller pulse sensor on a microcontroller's USB serial, for manual treadmills.

URL: ``pulse:///dev/ttyACM0?m_per_pulse=0.25``. Options: ``m_per_pulse`` (metres of belt per
pulse, default 0.25; ``retrotread doctor`` explains how to calibrate it), ``window_s`` (the speed
window, default 1 s), ``baud`` (115200).

The board writes ``P <board_ms> <total_pulses>`` at least 5 times a second and on every pulse
(docs/pulse.md). Every reading becomes a ``BeltSample`` through ``PulseMeter`` (the same
speedometer and plausibility gate as ``gpio://``), timed by the monotonic clock when the line
arrived; the distance never goes backwards, and a board that restarted (its counters went back)
yields ``DEVICE_RESET``. Bad lines are counted and logged at
most once a minute, never fatal; comment lines are logged.

The link: a port that drops yields ``DISCONNECTED`` at once (S9); a board silent for
``SILENT_S`` (ten lines it owed us) is treated the same, and the link machine
(``drivers.link_state``) closes the port and reopens it with capped backoff. ``CONNECTED`` comes
with the first line the board writes on the new link.

The daemon cannot drive this belt (``Unpowered``): ``start``/``set_speed``/``set_incline`` raise
``Unsupported``; ``stop`` and ``emergency_stop`` do nothing and say so in the log, because there is
no motor to stop and the daemon must not pretend otherwise (S13).

This module must not parse lines or compute speed itself (``drivers.pulse.codec`` and
``drivers.pulse.meter`` do) nor decide anything about safety.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Self
from urllib.parse import SplitResult

from retrotread.drivers.errors import LinkLost, NotConnected
from retrotread.drivers.link_state import Backoff
from retrotread.drivers.pulse.codec import BadLine, Comment, PulseReading, PulseStream
from retrotread.drivers.pulse.meter import PulseMeter, Unpowered
from retrotread.drivers.registry import float_option
from retrotread.drivers.serial_driver import SerialDriver, port_and_baud
from retrotread.drivers.serial_link import LogLimiter
from retrotread.drivers.types import Capabilities, DeviceEvent, DeviceEventKind
from retrotread.drivers.units import Speed, SpeedGrid

log = logging.getLogger(__name__)

FIRST_LINE_S = 5.0  # an Arduino resets when its port opens and boots for about 2 s
SILENT_S = 2.0  # pulse.md: at least 5 lines a second, so 2 s of silence is 10 lines lost
BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400)
_OPTIONS = frozenset({"m_per_pulse", "window_s", "baud"})


class PulseDriver(Unpowered, SerialDriver):
    """A pulse board on a serial port (see the module docstring)."""

    task_name = "pulse"
    logger = log

    def __init__(
        self,
        path: str,
        *,
        m_per_pulse: float = 0.25,
        window_s: float = 1.0,
        baudrate: int = 115200,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = f"pulse://{path}"
        self.m_per_pulse = m_per_pulse
        self.window_s = window_s
        self._meter = PulseMeter(m_per_pulse, window_s, name=self.url, logger=log)
        self._stream = PulseStream()
        self._caps = Capabilities(
            can_drive=False,
            speed_grid=SpeedGrid(minimum=Speed.zero(), maximum=Speed.from_mph(10.0)),
            nominal_period_s=0.2,  # pulse.md: at least 5 lines a second
        )
        super().__init__(path, baudrate=baudrate, backoff=backoff)
        self._heard = asyncio.Event()  # set by every line; the runner's watchdog waits on it
        self._announce = False  # the next line starts a reconnected link: say CONNECTED first
        self._noisy = LogLimiter(log)

    @classmethod
    def from_url(cls, url: SplitResult, options: dict[str, str]) -> Self:
        path, baud = port_and_baud(
            "pulse", url, options, known=_OPTIONS, bauds=BAUD_RATES, default_baud=115200, example="pulse:///dev/ttyACM0"
        )
        return cls(
            path,
            m_per_pulse=float_option(options, "m_per_pulse", 0.25, minimum=0.001, maximum=10.0),
            window_s=float_option(options, "window_s", 1.0, minimum=0.1, maximum=10.0),
            baudrate=baud,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def bad_lines(self) -> int:
        return self._stream.bad_lines + self._stream.overlong_lines

    @property
    def bad_samples(self) -> int:
        """Readings refused because no belt can produce them (plausible.py)."""
        return self._meter.bad_samples

    @property
    def readings(self) -> int:
        return self._stream.readings

    # -- the link ------------------------------------------------------------------------------

    async def _greet(self) -> None:
        self._stream = PulseStream()  # a partial line of the old link means nothing on this one
        self._heard.clear()
        self._announce = self.link_machine.ups > 0  # a reconnected link: its first line says CONNECTED
        try:
            async with asyncio.timeout(FIRST_LINE_S):
                await self._heard.wait()
        except TimeoutError:
            self._announce = False
            raise NotConnected(
                f"{self.path}: no line from the pulse board within {FIRST_LINE_S:g} s: is it running the "
                f"retrotread sketch at {self._link.baudrate} baud?"
            ) from None

    async def _converse(self) -> str:
        while True:
            self._heard.clear()
            if not self._link.is_open or not self._connected:
                return f"{self.path} dropped"
            try:
                async with asyncio.timeout(SILENT_S):
                    await self._heard.wait()
            except TimeoutError:
                return f"no line from the board for {SILENT_S:g} s"

    def _lost(self, why: str) -> None:
        self._heard.set()  # wake the listener: the line it waits on is gone

    def _on_link_lost(self, exc: LinkLost) -> None:
        # Straight from the transport's callback, so the daemon hears of it at once (S9).
        self._lose(str(exc))

    def _on_bytes(self, data: bytes, t: float) -> None:
        for line in self._stream.feed(data):
            if self._announce:
                self._announce = False
                self._connected = True
                self._updates.put_nowait(DeviceEvent(t, DeviceEventKind.CONNECTED, f"{self.path} talks again"))
            self._heard.set()
            if isinstance(line, PulseReading):
                for update in self._meter.read(line, t):
                    self._updates.put_nowait(update)
            elif isinstance(line, Comment):
                log.info("%s: board says: %s", self.path, line.text)
            elif isinstance(line, BadLine):
                self._noisy("bad-line", logging.WARNING, "%s: bad line (%s): %r", self.path, line.reason, line.line)


__all__ = ["PulseDriver"]
