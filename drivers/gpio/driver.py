"""``gpio://PIN`` — a reed switch between a GPIO pin and ground on the board itself (a Raspberry Pi).

URL: ``gpio://17?m_per_pulse=0.25`` (BCM numbering; ``gpio://GPIO17`` and ``gpio://BOARD11`` are
gpiozero's names for the same pin). Options: ``m_per_pulse`` (metres of belt per pulse, default 0.25;
``retrotread calibrate`` measures it), ``window_s`` (the speed window, default 1 s), ``bounce_ms``
(the shortest time between two counted pulses, default 20 ms).

The pin is a gpiozero ``Button`` with the pull-up on (the switch pulls it to ground); on a Pi its
default pin factory is lgpio, in tests ``GPIOZERO_PIN_FACTORY=mock``. Each press is timed by the
host's monotonic clock and counted; the count and that clock go through the same ``PulseMeter``
as ``pulse://`` (the host plays the board: ``board_ms`` is host time since the pin was opened), so
the two drivers measure alike. A sample comes on
every pulse and 5 times a second between them, so a belt that stops reads 0 after 2 s.

Debouncing, twice: gpiozero's ``bounce_time`` (``BOUNCE_TIME_S``, 2 ms: lgpio reports an edge only
once the level held that long, and a reed switch bounces for about 1 ms) and our own minimum
interval between counted presses (``bounce_ms``, 20 ms: the bounce of a switch opening again, and
any pin factory that does not filter; the fastest real pulse is about 40 ms apart, at 22 km/h on
0.25 m per pulse).

The daemon cannot drive this belt (``Unpowered``): ``start``/``set_speed``/``set_incline`` raise
``Unsupported``; ``stop`` and ``emergency_stop`` do nothing and say so in the log (S13). A pin cannot come unplugged,
so this driver never reports a lost link.

This module must not compute speed itself (``drivers.pulse.meter`` does) nor decide anything about
safety.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any, Final, Self
from urllib.parse import SplitResult

from retrotread.drivers.base import Driver, cancel_and_wait, drain
from retrotread.drivers.errors import ConfigError, NotConnected
from retrotread.drivers.pulse.meter import PulseMeter, Unpowered
from retrotread.drivers.registry import float_option
from retrotread.drivers.types import Capabilities, DeviceEvent, DeviceEventKind, Update
from retrotread.drivers.units import Speed, SpeedGrid

log = logging.getLogger(__name__)

PERIOD_S: Final = 0.2
"""A sample this often between pulses (pulse.md's 5 lines a second, as a board would write)."""
BOUNCE_TIME_S: Final = 0.002
"""gpiozero's own debounce (see the module docstring)."""
_OPTIONS: Final = frozenset({"m_per_pulse", "window_s", "bounce_ms"})
_PIN = re.compile(r"(?:(?:GPIO|BCM|BOARD)\d{1,2}|\d{1,2})", re.IGNORECASE)


class GpioDriver(Unpowered, Driver):
    """A reed switch on a GPIO pin (see the module docstring)."""

    logger = log

    def __init__(self, pin: str, *, m_per_pulse: float = 0.25, window_s: float = 1.0, bounce_ms: float = 20.0) -> None:
        self.pin = pin
        self.url = f"gpio://{pin}"
        self.m_per_pulse = m_per_pulse
        self.window_s = window_s
        self.bounce_s = bounce_ms / 1000
        self._caps = Capabilities(
            can_drive=False,
            speed_grid=SpeedGrid(minimum=Speed.zero(), maximum=Speed.from_mph(10.0)),
            nominal_period_s=PERIOD_S,
        )
        self._meter = PulseMeter(m_per_pulse, window_s, name=self.url, logger=log)
        self._updates: asyncio.Queue[Update | None] = asyncio.Queue()
        self._button: Any = None  # gpiozero.Button: gpiozero has no type hints
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self._last_t = 0.0  # the time of the last reading: readings never go back in time
        self._last_counted: float | None = None
        self.pulses = 0
        """Presses counted since the pin was opened."""
        self.bounces = 0
        """Edges refused as bounce (closer than ``bounce_ms`` to the last counted press)."""

    @classmethod
    def from_url(cls, url: SplitResult, options: dict[str, str]) -> Self:
        pin = url.netloc
        if url.path not in ("", "/") or not _PIN.fullmatch(pin):
            raise ConfigError(
                f"gpio://{url.netloc}{url.path}: give the pin after gpio://, e.g. gpio://17 (BCM numbering) "
                "or gpio://BOARD11"
            )
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(f"gpio:// has no option {unknown[0]!r}; known: {', '.join(sorted(_OPTIONS))}")
        return cls(
            pin.upper(),
            m_per_pulse=float_option(options, "m_per_pulse", 0.25, minimum=0.001, maximum=10.0),
            window_s=float_option(options, "window_s", 1.0, minimum=0.1, maximum=10.0),
            bounce_ms=float_option(options, "bounce_ms", 20.0, minimum=0.0, maximum=1000.0),
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def connected(self) -> bool:
        return self._button is not None

    @property
    def bad_samples(self) -> int:
        """Samples refused because no belt can produce them (plausible.py)."""
        return self._meter.bad_samples

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._button is not None:
            return
        try:
            from gpiozero import Button  # type: ignore[import-untyped]  # gpiozero ships no type hints
        except ModuleNotFoundError as exc:
            raise ConfigError(f"gpio:// needs gpiozero (pip install gpiozero; on a Pi also lgpio): {exc}") from exc
        pin: int | str = int(self.pin) if self.pin.isdigit() else self.pin
        try:
            button = Button(pin, pull_up=True, bounce_time=BOUNCE_TIME_S)
        except Exception as exc:  # gpiozero raises its own kinds: no pin factory, pin in use, bad pin
            raise NotConnected(f"{self.url}: cannot open the pin: {type(exc).__name__}: {exc}") from exc
        self._loop = asyncio.get_running_loop()
        self._updates = asyncio.Queue()
        now = time.monotonic()
        self._t0 = self._last_t = now
        self._last_counted = None
        self.pulses = self.bounces = 0
        self._meter = PulseMeter(self.m_per_pulse, self.window_s, name=self.url, logger=log)
        self._meter.base(now)  # a pin already pressed at open is no pulse
        button.when_pressed = self._on_press
        self._button = button
        self._updates.put_nowait(DeviceEvent(now, DeviceEventKind.CONNECTED, f"{self.url} open"))
        self._ticker = asyncio.create_task(self._tick(), name=f"gpio {self.url}")

    async def close(self) -> None:
        ticker, self._ticker = self._ticker, None
        await cancel_and_wait(ticker)
        button, self._button = self._button, None
        if button is None:
            return
        button.when_pressed = None
        with contextlib.suppress(Exception):  # closing a pin the factory already dropped
            button.close()
        self._loop = None
        self._updates.put_nowait(None)

    def samples(self) -> AsyncIterator[Update]:
        return drain(self._updates)

    # -- the pin -------------------------------------------------------------------------------

    def _on_press(self) -> None:
        # gpiozero calls this from its own thread (lgpio's callback thread; the caller's with
        # mock pins): take the time now, count on the event loop.
        t = time.monotonic()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed under a late edge
                loop.call_soon_threadsafe(self._press, t)

    def _press(self, t: float) -> None:
        if self._button is None:
            return
        last = self._last_counted
        if last is not None and t - last < self.bounce_s:
            self.bounces += 1
            return
        self._last_counted = t
        self.pulses += 1
        self._reading(t)

    async def _tick(self) -> None:
        k = 0
        while True:
            k += 1
            delay = self._t0 + k * PERIOD_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._reading(time.monotonic())

    def _reading(self, t: float) -> None:
        t = max(t, self._last_t)  # a press timed in another thread may arrive after a later tick
        self._last_t = t
        for update in self._meter.count(t - self._t0, self.pulses, t):
            self._updates.put_nowait(update)


__all__ = ["GpioDriver"]
