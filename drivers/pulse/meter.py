"""What every pulse-counting driver shares: counts in, the daemon's updates out, and no motor.

``pulse://`` (a board on a serial line counts the pulses) and ``gpio://`` (the host counts a pin's
presses itself) measure the same belt the same way. Both used to write the same steps out: the
reading through ``PulseSpeedometer``, an implausible one counted and logged, a board reset said as
``DEVICE_RESET``, the sample through ``SampleGate``. ``PulseMeter`` is those steps once, so a change
to how a pulse becomes a sample reaches both drivers (``tests/test_pulse_codec.py`` pins it, and
each driver's own tests pin it through the real driver).

``Unpowered`` is the other half they share: a belt the daemon can measure but not drive, so the
motion commands raise ``Unsupported`` and a stop is obeyed by doing nothing and saying so (S5: a
stop is never refused; S13: there is no motor, and the daemon must not pretend otherwise).

This module must not do I/O, read a clock or decide anything about safety: times come in with
each reading.
"""

from __future__ import annotations

import logging

from retrotread.drivers.errors import Unsupported
from retrotread.drivers.plausible import SampleGate
from retrotread.drivers.pulse.codec import COUNTER_MODULUS, PulseReading, PulseSpeedometer
from retrotread.drivers.serial_link import LogLimiter
from retrotread.drivers.types import BeltSample, DeviceEvent, DeviceEventKind, Update
from retrotread.drivers.units import Speed

__all__ = ["PulseMeter", "Unpowered"]


class PulseMeter:
    """Pulse readings as ``BeltSample`` and ``DeviceEvent`` values, through one speedometer and one gate.

    ``name`` (the driver's URL) and ``logger`` say whose readings were refused. The gate's
    resolution is one pulse (``m_per_pulse``): the count's own step must always pass.
    """

    def __init__(self, m_per_pulse: float, window_s: float, *, name: str, logger: logging.Logger) -> None:
        self._speedometer = PulseSpeedometer(m_per_pulse, window_s)
        self._gate = SampleGate(m_per_pulse, name=name, logger=logger)
        self._name = name
        self._noisy = LogLimiter(logger)

    @property
    def bad_samples(self) -> int:
        """Readings refused because no belt can produce them (``drivers.plausible``)."""
        return self._gate.bad_samples

    def base(self, t: float) -> None:
        """Start counting from zero at host time ``t`` (a pin opened: a press held already is no pulse)."""
        self._speedometer.update(PulseReading(0, 0), t)

    def count(self, elapsed_s: float, pulses: int, t: float) -> list[Update]:
        """A count the host keeps itself: ``pulses`` since ``base``, ``elapsed_s`` after it, seen at ``t``.

        The host plays the board: its time and count wrap like a board's counters (pulse.md).
        """
        return self.read(PulseReading(int(elapsed_s * 1000) % COUNTER_MODULUS, pulses % COUNTER_MODULUS), t)

    def read(self, reading: PulseReading, t: float) -> list[Update]:
        """What one reading, arrived at host time ``t``, tells the daemon (none, one or two updates)."""
        measured = self._speedometer.update(reading, t)
        if measured.implausible:
            self._gate.bad_samples += 1  # counted like every refusal; the gate logs the others
            self._noisy("implausible", logging.WARNING, "%s: refused a reading no belt makes: %s", self._name, reading)
            return []
        updates: list[Update] = []
        if measured.reset:
            updates.append(DeviceEvent(t, DeviceEventKind.DEVICE_RESET, "the board's counters went back: it restarted"))
        sample = self._gate.admit(BeltSample(t, measured.speed, None, measured.distance_m, measured.span_s))
        if sample is not None:
            updates.append(sample)
        return updates


class Unpowered:
    """The motion commands of a driver that measures a belt it cannot drive (see the module docstring).

    A mixin for a ``Driver`` subclass: it uses only the driver's ``url``, and ``logger`` (the
    driver module's, so its records keep their name).
    """

    url: str
    logger: logging.Logger = logging.getLogger(__name__)

    async def start(self, speed: Speed) -> None:
        raise Unsupported(f"{self.url} measures a belt it cannot drive")

    async def set_speed(self, speed: Speed) -> None:
        raise Unsupported(f"{self.url} measures a belt it cannot drive")

    async def set_incline(self, incline_pct: float) -> None:
        raise Unsupported(f"{self.url} measures a belt it cannot drive")

    async def stop(self) -> None:
        self.logger.debug("%s: stop ignored: there is no motor to stop", self.url)

    async def emergency_stop(self) -> None:
        self.logger.debug("%s: emergency stop ignored: there is no motor to stop (S13)", self.url)
