"""Belt physics, pure and lazily evaluated: ``advance_to(t)`` moves the belt to time ``t``.

A motorized belt follows its commanded speed with the motor's limited acceleration (a real drive
takes seconds to reach speed, it never jumps). A manual belt (a deadmill) moves only while someone
pushes it: it is pulled toward the pushing speed and friction slows it when they stop. Walking is
not smooth: each step surges the belt a little, which the gait term models.

No I/O, no clock of its own: time is always passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from retrotread.drivers.units import KMH_PER_MPH, MPS_PER_MPH, Speed

RUNAWAY_MPS2 = 0.5 * MPS_PER_MPH
"""A runaway motor (the ``runaway`` fault) gains half a mph per second past its command."""


class Lie(Enum):
    """A simulated machine whose speed unit is not the one it claims (../shared/docs/hardware.md).

    ``lie=mph`` on a machine that claims km/h (FTMS; ``kmh`` on one that claims mph, CSAFE): it
    takes and reports the other unit, so its readings agree with its commands while the belt runs
    1.609 (or 0.621) times too fast. ``mph-in``/``kmh-in``: it takes the other unit and reports
    honestly (Horizon 7.0AT reading Set Target Speed as mph). ``mph-out``/``kmh-out``: it takes
    its commands right and reports in the other unit (Bowflex T9 reporting mph).
    """

    NONE = ""
    MPH = "mph"
    MPH_IN = "mph-in"
    MPH_OUT = "mph-out"
    KMH = "kmh"
    KMH_IN = "kmh-in"
    KMH_OUT = "kmh-out"

    @classmethod
    def parse(cls, raw: str, *, claims: str) -> Lie:
        """``raw`` from a URL option; ``claims`` is the unit the machine says it uses (kmh or mph)."""
        allowed = [m.value for m in cls if m.value and not m.value.startswith(claims)]
        if raw == "":
            return cls.NONE
        if raw not in allowed:
            raise ValueError(f"lie={raw!r}: allowed {', '.join(allowed)} (this machine claims {claims})")
        return cls(raw)

    @property
    def factor(self) -> float:
        """The true unit over the claimed one: 1.609 for a machine using mph where it claims km/h."""
        if self is Lie.NONE:
            return 1.0
        return KMH_PER_MPH if self.value.startswith("mph") else 1 / KMH_PER_MPH

    @property
    def takes(self) -> float:
        """Multiply a commanded speed by this for the belt's true speed."""
        return self.factor if self.value in ("mph", "mph-in", "kmh", "kmh-in") else 1.0

    @property
    def reports(self) -> float:
        """Multiply the belt's true speed by this for what the machine reports."""
        return 1 / self.factor if self.value in ("mph", "mph-out", "kmh", "kmh-out") else 1.0


@dataclass(frozen=True, slots=True)
class PushSegment:
    """From ``at_s`` (seconds after the start) on, the user pushes toward ``speed``."""

    at_s: float
    speed: Speed


def parse_push(spec: str) -> tuple[PushSegment, ...]:
    """``1.5`` (push at 1.5 mph from the start) or ``1.5@0,0@60,1.5@120`` (mph@seconds)."""
    segments = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        mph_s, sep, at_s = part.partition("@")
        try:
            mph = float(mph_s)
            at = float(at_s) if sep else 0.0
        except ValueError:
            raise ValueError(f"push {part!r}: expected MPH or MPH@SECONDS, e.g. 1.5@0") from None
        if not (math.isfinite(mph) and 0 <= mph <= 10 and math.isfinite(at) and at >= 0):
            raise ValueError(f"push {part!r}: mph must be 0..10 and seconds >= 0")
        segments.append(PushSegment(at, Speed.from_mph(mph)))
    return tuple(sorted(segments, key=lambda s: s.at_s))


@dataclass
class Belt:
    """One belt's state. ``motorized`` picks the physics."""

    motorized: bool
    t: float
    speed_mps: float = 0.0
    distance_m: float = 0.0
    incline_pct: float = 0.0
    command_mps: float = 0.0
    accel_mps2: float = 1.0 * MPS_PER_MPH  # a treadmill drive: about 1 mph per second up
    decel_mps2: float = 2.0 * MPS_PER_MPH  # and 2 mph per second down
    runaway_mps2: float = 0.0  # > 0 while a runaway fault drives the motor
    powered: bool = True  # False once the safety key cut the motor
    push: tuple[PushSegment, ...] = ()
    push_started_at: float = 0.0
    friction_mps2: float = 1.5 * MPS_PER_MPH  # a manual belt coasts to a stop in about a second
    gait_hz: float = 1.7
    gait_share: float = 0.06
    _pushed: Speed | None = field(default=None, repr=False)

    def run_away(self) -> None:
        """The motor accelerates past its command until something stops it."""
        self.runaway_mps2 = RUNAWAY_MPS2

    def stop_motor(self) -> None:
        """A stop command: the motor's goal is 0, and a runaway (a wrong command) ends with it."""
        self.command_mps = 0.0
        self.runaway_mps2 = 0.0

    def push_now(self, speed: Speed | None) -> None:
        """Override the push profile from now on (``None`` returns to the profile)."""
        self._pushed = speed

    def pushing_speed(self, t: float) -> float:
        if self._pushed is not None:
            return self._pushed.mps
        mps = 0.0
        for seg in self.push:
            if t - self.push_started_at >= seg.at_s:
                mps = seg.speed.mps
        return mps

    def advance_to(self, t: float) -> None:
        """Move the belt forward in time to ``t`` (earlier times are ignored)."""
        # Integrate in small steps so ramps and pushes are followed faithfully whatever the
        # caller's rhythm; 10 ms is far below any rate the drivers sample at.
        while self.t < t:
            if self._steady():
                # A powered motor at its command stays there: the steps would change nothing
                # but the distance, which a constant speed gives exactly.
                self.distance_m += self.speed_mps * (t - self.t)
                self.t = t
                return
            dt = min(0.01, t - self.t)
            self._step(dt)
            self.t += dt

    def _steady(self) -> bool:
        """A step would leave the speed as it is: a powered motor, no runaway, at its command."""
        return self.motorized and self.powered and self.runaway_mps2 <= 0 and self.speed_mps == self.command_mps

    def _step(self, dt: float) -> None:
        v = self.speed_mps
        if self.motorized:
            if not self.powered:
                goal, rate_up, rate_down = 0.0, 0.0, self.friction_mps2 * 2
            elif self.runaway_mps2 > 0:
                goal, rate_up, rate_down = math.inf, self.runaway_mps2, 0.0
            else:
                goal, rate_up, rate_down = self.command_mps, self.accel_mps2, self.decel_mps2
            if goal > v:
                v = min(goal, v + rate_up * dt)
            else:
                v = max(goal, v - rate_down * dt)
        else:
            goal = self.pushing_speed(self.t)
            if goal > 0:
                # The walker's feet pull the belt toward their pace, with a surge each step.
                surge = 1 + self.gait_share * math.sin(2 * math.pi * self.gait_hz * self.t)
                goal *= surge
                v += (goal - v) * min(1.0, dt / 0.4)
            else:
                v = max(0.0, v - self.friction_mps2 * dt)
        self.distance_m += (self.speed_mps + v) / 2 * dt
        self.speed_mps = max(0.0, v)
