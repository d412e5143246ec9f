"""Speed as one type at every boundary, and the exact conversions between its units.

1 mph is exactly 1.609344 km/h (the international mile, 1609.344 m). A ``Speed`` holds metres per
second; ``Speed.from_mph(1.2).kmh`` is 1.9312128. Devices work on a grid (FTMS 0.01 km/h, CSAFE
0.01 or 0.1 mph): ``steps()`` turns a speed into whole grid steps, rounding in the direction asked
for, and forgives the float noise of the conversion (1.2 mph is 120 steps of 0.01 mph, not 119.99).

This module does no I/O and imports nothing else of ours.
"""

from __future__ import annotations

import math
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


class SpeedUnit(Enum):
    """A unit a device counts speed in: the size of one step of its integer."""

    MPH = ("mph", 1.0)
    MPH_TENTHS = ("0.1 mph", 0.1)
    MPH_HUNDREDTHS = ("0.01 mph", 0.01)
    KMH = ("km/h", 1.0)
    KMH_TENTHS = ("0.1 km/h", 0.1)
    KMH_HUNDREDTHS = ("0.01 km/h", 0.01)

    def __init__(self, label: str, step: float) -> None:
        self.label = label
        self.step = step

    @property
    def imperial(self) -> bool:
        return self.name.startswith("MPH")

    def to_count(self, speed: Speed, rounding: Rounding = Rounding.NEAREST) -> int:
        """The device integer for ``speed`` in this unit."""
        value = speed.mph if self.imperial else speed.kmh
        return steps(value, self.step, rounding)

    def from_count(self, count: int) -> Speed:
        per_unit = round(1 / self.step)
        value = count / per_unit
        return Speed.from_mph(value) if self.imperial else Speed.from_kmh(value)
