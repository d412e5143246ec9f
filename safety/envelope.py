"""The reverse envelope and how a speed lands on a device's grid inside it (rules S1, S2, S3).

The envelope is 0.8 to 1.2 mph (program.md). Configuration may narrow it, never widen it. A device
speaks in steps of its own (FTMS 0.01 km/h, CSAFE 0.1 or 0.01 mph, or the machine's increment from
0x2AD4); ``Grid`` lists the steps inside both the envelope and the device's range, so every speed
the daemon sends in reverse mode decodes to at most the envelope's top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from retrotread.drivers.errors import ConfigError
from retrotread.drivers.types import Capabilities
from retrotread.drivers.units import Rounding, Speed, SpeedGrid, SpeedUnit

REVERSE_MIN_MPH = 0.8
REVERSE_MAX_MPH = 1.2


class EnvelopeError(ConfigError):
    """A configured envelope that is wider than the protocol's, or empty."""


@dataclass(frozen=True, slots=True)
class Envelope:
    low: Speed
    high: Speed

    @classmethod
    def reverse(cls, low_mph: float = REVERSE_MIN_MPH, high_mph: float = REVERSE_MAX_MPH) -> Envelope:
        """The reverse envelope, narrowed as configured; wider is an error (S1)."""
        for name, value in (("low", low_mph), ("high", high_mph)):
            if not math.isfinite(value):
                raise EnvelopeError(f"envelope {name} {value!r} is not a number")
        if low_mph < REVERSE_MIN_MPH - 1e-9:
            raise EnvelopeError(
                f"envelope minimum {low_mph} mph is below {REVERSE_MIN_MPH} mph: it may be narrowed, never widened (S1)"
            )
        if high_mph > REVERSE_MAX_MPH + 1e-9:
            raise EnvelopeError(
                f"envelope maximum {high_mph} mph is above {REVERSE_MAX_MPH} mph: "
                "it may be narrowed, never widened (S1)"
            )
        if low_mph > high_mph:
            raise EnvelopeError(f"envelope minimum {low_mph} mph is above its maximum {high_mph} mph")
        return cls(Speed.from_mph(low_mph), Speed.from_mph(high_mph))

    def holds(self, speed: Speed) -> bool:
        mph = speed.mph
        return self.low.mph - 1e-9 <= mph <= self.high.mph + 1e-9

    @property
    def mph(self) -> tuple[float, float]:
        return (round(self.low.mph, 4), round(self.high.mph, 4))

    @property
    def kmh(self) -> tuple[float, float] | None:
        """The envelope in km/h to 0.01, rounded toward the inside (S2) as a device grid is, for a
        face that shows km/h (1.29..1.93 for 0.8..1.2 mph): every value in it is inside in mph too.
        None for an envelope narrowed below one 0.01 km/h step."""
        grid = SpeedGrid(SpeedUnit.KMH_HUNDREDTHS, 1, self.low, self.high)
        span = grid.within(self.low, self.high)
        if span is None:
            return None
        return (round(grid.decode(span[0]).kmh, 2), round(grid.decode(span[1]).kmh, 2))


@dataclass(frozen=True, slots=True)
class Grid:
    """The device's speed steps that lie inside the envelope and the device's range."""

    speeds: SpeedGrid
    first: int  # lowest allowed device count
    last: int  # highest allowed device count

    @classmethod
    def inside(cls, envelope: Envelope, caps: Capabilities) -> Grid | None:
        """The usable grid, or None if no step of the device lies inside the envelope (S3)."""
        span = caps.speed_grid.within(envelope.low, envelope.high)  # toward the inside (S2)
        if span is None:
            return None
        return cls(caps.speed_grid, *span)

    def speed(self, count: int) -> Speed:
        return self.speeds.decode(count)

    def count(self, speed: Speed, rounding: Rounding) -> int:
        return self.speeds.encode(speed, rounding)

    @property
    def lowest(self) -> Speed:
        return self.speed(self.first)

    @property
    def highest(self) -> Speed:
        return self.speed(self.last)

    def snap(self, speed: Speed, rounding: Rounding = Rounding.NEAREST) -> Speed:
        """The grid step for ``speed``, kept inside the envelope (S2)."""
        return self.speed(min(self.last, max(self.first, self.count(speed, rounding))))
