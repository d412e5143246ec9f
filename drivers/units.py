"""Speed as one type at every boundary, and the exact conversions between its units.

1 mph is exactly 1.609344 km/h (the international mile, 1609.344 m). A ``Speed`` holds metres per
second; ``Speed.from_mph(1.2).kmh`` is 1.9312128. Devices work on a grid (FTMS 0.01 km/h, CSAFE
0.01 or 0.1 mph): ``steps()`` turns a speed into whole grid steps, rounding in the direction asked
for, and forgives the float noise of the conversion (1.2 mph is 120 steps of 0.01 mph, not 119.99).

This module does no I/O and imports nothing else of ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Self

KMH_PER_MPH = 1.609344
MPS_PER_MPH = 0.44704
MPS_PER_KMH = 1 / 3.6

# Quantities within this many grid steps of a whole step count as that step: float conversion
# noise, never a real difference on any device grid (the finest is 0.01 km/h).
_GRID_SLACK = 1e-6


class Rounding(Enum):
    """Which way to go when a speed falls between two grid steps."""

    DOWN = "down"
    UP = "up"
    NEAREST = "nearest"


def steps(value: float, step: float, rounding: Rounding) -> int:
    """``value / step`` as a whole number of steps, rounded as asked, forgiving float noise."""
    if step <= 0 or not math.isfinite(step):
        raise ValueError(f"grid step must be a positive number, got {step!r}")
    if not math.isfinite(value):
        raise ValueError(f"cannot put {value!r} on a grid")
    per_unit = 1 / step
    # Multiplying by a whole number of steps per unit (100 for 0.01) is exact more often than
    # dividing by 0.01, which has no exact binary form.
    q = value * round(per_unit) if abs(per_unit - round(per_unit)) < 1e-9 else value / step
    nearest = round(q)
    if abs(q - nearest) <= _GRID_SLACK:
        return int(nearest)
    if rounding is Rounding.DOWN:
        return math.floor(q)
    if rounding is Rounding.UP:
        return math.ceil(q)
    return int(nearest)


@dataclass(frozen=True, slots=True, order=True)
class Speed:
    """A belt speed (a non-negative magnitude on the wire; direction is the daemon's mode)."""

    mps: float

    @classmethod
    def from_mph(cls, mph: float) -> Self:
        return cls(mph * MPS_PER_MPH)

    @classmethod
    def from_kmh(cls, kmh: float) -> Self:
        return cls(kmh * MPS_PER_KMH)

    @classmethod
    def from_mps(cls, mps: float) -> Self:
        return cls(mps)

    @classmethod
    def zero(cls) -> Self:
        return cls(0.0)

    @property
    def mph(self) -> float:
        return self.mps / MPS_PER_MPH

    @property
    def kmh(self) -> float:
        return self.mps * 3.6

    def is_finite(self) -> bool:
        return math.isfinite(self.mps)

    def __add__(self, other: Speed) -> Speed:
        return Speed(self.mps + other.mps)

    def __sub__(self, other: Speed) -> Speed:
        return Speed(self.mps - other.mps)

    def __str__(self) -> str:
        return f"{self.mph:.2f} mph"


ZERO = Speed(0.0)


@dataclass(frozen=True, slots=True)
class _Quantity:
    """A speed quantity a device counts in (mph or km/h): how to read it off a ``Speed`` and back."""

    label: str
    of: Callable[[Speed], float]
    speed: Callable[[float], Speed]


_MPH = _Quantity("mph", lambda s: s.mph, Speed.from_mph)
_KMH = _Quantity("km/h", lambda s: s.kmh, Speed.from_kmh)


class SpeedUnit(Enum):
    """A unit a device counts speed in: the size of one step of its integer."""

    MPH = ("mph", 1.0, _MPH)
    MPH_TENTHS = ("0.1 mph", 0.1, _MPH)
    MPH_HUNDREDTHS = ("0.01 mph", 0.01, _MPH)
    KMH = ("km/h", 1.0, _KMH)
    KMH_TENTHS = ("0.1 km/h", 0.1, _KMH)
    KMH_HUNDREDTHS = ("0.01 km/h", 0.01, _KMH)

    def __init__(self, label: str, step: float, quantity: _Quantity) -> None:
        self.label = label
        self.step = step
        self.quantity = quantity

    def amount(self, speed: Speed) -> float:
        """``speed`` in this unit's quantity (mph or km/h, not counts)."""
        return self.quantity.of(speed)

    def to_count(self, speed: Speed, rounding: Rounding = Rounding.NEAREST) -> int:
        """The device integer for ``speed`` in this unit."""
        return steps(self.quantity.of(speed), self.step, rounding)

    def from_count(self, count: int) -> Speed:
        # count / 100 rather than count * 0.01: the division is exact where the product is not.
        return self.quantity.speed(count / round(1 / self.step))


@dataclass(frozen=True, slots=True)
class SpeedGrid:
    """The speeds a device can be set to: whole multiples of ``increment`` counts of ``unit``,
    from ``minimum`` to ``maximum``. One value, so its unit and its step cannot disagree.

    FTMS: ``SpeedGrid(SpeedUnit.KMH_HUNDREDTHS, increment_raw)`` from 0x2AD4; CSAFE: the unit the
    console was configured for (0.1 or 0.01 mph, ...), increment 1. Counts are device integers:
    ``encode`` is what goes on the wire, ``decode`` reads it back.
    """

    unit: SpeedUnit = SpeedUnit.KMH_HUNDREDTHS
    increment: int = 1
    """Counts of ``unit`` per settable step (FTMS 0x2AD4's increment: 10 for 0.1 km/h)."""
    minimum: Speed = ZERO
    maximum: Speed = ZERO

    def __post_init__(self) -> None:
        if self.increment < 1:
            raise ValueError(f"a speed grid's increment is a whole number of counts >= 1, got {self.increment!r}")

    @property
    def step(self) -> Speed:
        """The smallest change of settable speed."""
        return self.unit.from_count(self.increment)

    def encode(self, speed: Speed, rounding: Rounding = Rounding.NEAREST) -> int:
        """The device integer for ``speed``: a whole multiple of the increment, rounded as asked.

        DOWN never decodes above ``speed`` and UP never below, compared as ``Speed`` values
        (rule S2): ``steps`` forgives float noise, which at an exact grid point can sit on the
        wrong side by a few ulps; then one more step is taken inward.
        """
        count = steps(self.unit.amount(speed), self.unit.step * self.increment, rounding) * self.increment
        if rounding is Rounding.DOWN and self.decode(count) > speed:
            count -= self.increment
        elif rounding is Rounding.UP and self.decode(count) < speed:
            count += self.increment
        return count

    def decode(self, count: int) -> Speed:
        return self.unit.from_count(count)

    def within(self, low: Speed, high: Speed) -> tuple[int, int] | None:
        """The first and last device integers on the grid inside ``low..high`` and the device's range.

        Toward the inside (rule S2): the bottom rounds up, the top rounds down, so no count decodes
        outside the envelope. ``None`` when no step fits at all (rule S3).
        """
        first = self.encode(max(low, self.minimum), Rounding.UP)
        last = self.encode(min(high, self.maximum), Rounding.DOWN)
        return (first, last) if first <= last else None

    def __str__(self) -> str:
        q = self.unit.quantity
        return f"{q.of(self.minimum):g}..{q.of(self.maximum):g} {q.label} in steps of {q.of(self.step):g} {q.label}"
