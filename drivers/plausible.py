"""What no belt can do: the one plausibility rule every driver applies before it emits a sample.

One bogus pulse-board line (its counters jumped by 1e9) once put 250,000 km and an average of 102
million mph into a stored set (issue 10). A device, a cable or a codec can always produce such a
value; a belt cannot. So every driver passes each ``BeltSample`` through a ``SampleGate`` and emits
only what it admits; what it refuses is counted (``bad_samples``), logged at most once a minute,
and never reaches the daemon.

The bounds:

* ``MAX_SPEED`` (20 mph, 32 km/h, 8.9 m/s): commercial treadmill decks top out at 15 mph / 25 km/h
  and this product walks at about 1 mph (safety.md's envelope); nothing a belt really did is above
  20 mph, and everything above it is a decoding error or noise. Negative or NaN speeds: refused.
* Distance: finite and not negative; it never goes back (a device that restarted has its counter
  re-based, below) and it never runs ahead of ``MAX_SPEED`` × the time since the last sample,
  with a burst allowance (``burst_m``): a device counts in steps (one pulse, one metre, one CSAFE
  count) and its lines may arrive bunched after a USB hiccup (``LATE_S``). The allowance is a
  bucket that refills at ``MAX_SPEED``, so over *any* stretch of samples the distance admitted is
  at most ``burst_m + MAX_SPEED × time``, not that much per sample.
* Re-basing: a counter that jumped and *stays* (a restarted device, a counter that went back to 0)
  would otherwise refuse every sample from then on. If two refused samples in a row agree with
  each other, the gate takes the new counter as a new base: the emitted distance carries on from
  the last admitted value, with no distance credited for the jump.

This module must not do I/O or import anything of ours beyond ``drivers.types`` and ``drivers.units``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Final

from retrotread.drivers.types import BeltSample
from retrotread.drivers.units import Speed

__all__ = ["LATE_S", "MAX_SPEED", "SampleGate", "max_distance_m"]

MAX_SPEED: Final = Speed.from_mph(20.0)
"""No treadmill reaches this (see the module docstring)."""

REPORT_EVERY_S: Final = 60.0  # a noisy line is logged once a minute, with how many were refused

LATE_S: Final = 1.0
"""How bunched samples may arrive: a serial line or BLE notifications held up for up to a second."""


def max_distance_m(dt_s: float, burst_m: float = 0.0) -> float:
    """The most a belt can move in ``dt_s`` seconds, plus an allowance for counting in steps."""
    return MAX_SPEED.mps * max(0.0, dt_s) + burst_m


class SampleGate:
    """Admits the samples a belt can produce, refuses the rest (see the module docstring).

    ``resolution_m`` is the device's distance step (a pulse, a metre); the burst allowance is that
    plus what ``MAX_SPEED`` covers in ``LATE_S``. ``rebase()`` forgets the last distance (a new link,
    a device that said it restarted).
    """

    def __init__(self, resolution_m: float = 1.0, *, name: str = "", logger: logging.Logger | None = None) -> None:
        if not (math.isfinite(resolution_m) and resolution_m >= 0):
            raise ValueError(f"resolution_m must be a finite number >= 0, got {resolution_m!r}")
        self.burst_m = resolution_m + max_distance_m(LATE_S)
        self.bad_samples = 0
        self.last_refusal = ""
        self._name = name
        self._log = logger or logging.getLogger(__name__)
        self._reported_at: float | None = None
        self._unreported = 0
        self._raw: float | None = None  # the device's distance at the last admitted sample
        self._t = 0.0  # ... and its time
        self._credit = 0.0  # the distance the bucket allows right now
        self._offset = 0.0  # emitted distance = device distance - offset
        self._emitted: float | None = None  # the last distance emitted
        self._suspect: float | None = None  # the distance of the last sample refused

    def rebase(self) -> None:
        """The next distance starts a new base; the emitted distance carries on from the last."""
        self._raw = None
        self._suspect = None

    def admit(self, sample: BeltSample) -> BeltSample | None:
        """The sample to emit (its distance possibly re-based), or None: refused and counted."""
        why = self._speed_refusal(sample.speed)
        if why is None and sample.distance_m is not None:
            why = self._distance(sample.distance_m, sample.t)
            if why is None:
                emitted = sample.distance_m - self._offset
                if self._emitted is not None:
                    # A re-based distance is a difference of floats: raw - (raw_then - emitted)
                    # can come out an ulp below what was emitted, and distance never goes back.
                    emitted = max(emitted, self._emitted)
                self._emitted = emitted
                return replace(sample, distance_m=emitted)
        if why is None:
            return sample
        self.bad_samples += 1
        self.last_refusal = why
        self._report(why, sample.t)
        return None

    def _report(self, why: str, t: float) -> None:
        if self._reported_at is not None and t - self._reported_at < REPORT_EVERY_S:
            self._unreported += 1
            return
        more = f" (and {self._unreported} more since the last report)" if self._unreported else ""
        self._log.warning("%s: refused a sample no belt can produce: %s%s", self._name, why, more)
        self._reported_at = t
        self._unreported = 0

    @staticmethod
    def _speed_refusal(speed: Speed) -> str | None:
        mps = speed.mps
        if not math.isfinite(mps) or mps < 0:
            return f"speed {mps!r} m/s is no speed"
        if mps > MAX_SPEED.mps:
            return f"speed {speed.mph:.1f} mph is above any treadmill's ({MAX_SPEED.mph:g} mph)"
        return None

    def _distance(self, raw: float, t: float) -> str | None:
        if not math.isfinite(raw) or raw < 0:
            return f"distance {raw!r} m is no distance"
        if self._raw is None:
            if self._emitted is not None:
                self._offset = raw - self._emitted
            self._take(raw, t, credit=self.burst_m)
            return None
        step = raw - self._raw
        credit = min(self.burst_m, self._credit + max_distance_m(t - self._t))
        if 0 <= step <= credit:
            self._take(raw, t, credit=credit - step)
            return None
        s_raw = self._suspect
        if s_raw is not None and self._emitted is not None:
            s_step = raw - s_raw
            if 0 <= s_step <= credit:
                # Two in a row agree: the counter really moved to a new base. Carry on from the
                # last distance emitted, crediting nothing for the jump itself.
                self._offset = s_raw - self._emitted
                self._take(raw, t, credit=credit - s_step)
                return None
        self._suspect = raw
        if step < 0:
            return f"distance went back {-step:.1f} m"
        return f"distance jumped {step:.1f} m in {max(0.0, t - self._t):.3f} s"

    def _take(self, raw: float, t: float, *, credit: float) -> None:
        self._raw = raw
        self._t = t
        self._credit = credit
        self._suspect = None
