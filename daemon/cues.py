"""Cues: the moments of a session a person hears, and the words for them (docs/cues.md).

A person walking backward must not look down, so every moment that matters is also spoken. The
set timer (``daemon/timer.py``) schedules the cues from its own boundaries, on the clock passed
in, so every face says the same thing at the same moment; this module holds what is the same for
all of them: the settings, the cue record and the texts.

Where cues meet (a short plan like ``2x5s/2s``):

- a countdown number falls only inside the countdown or rest before its set: a 2 s rest counts
  "2", "1" (never into the work set before it, where "set done" is being said);
- ``rest_ending`` ("Next set in 5.") needs a rest longer than its 5 s lead, and ``remaining`` a
  work set longer than its lead: at the phase's first instant they would talk over ``set_done``
  or ``go``, which already say the length;
- moments at one instant come in a fixed order: the boundary's own cue (``set_done``, then
  ``go``) first, then the new phase's cues, ``halfway`` before ``remaining``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from retrotread.daemon.events import CueKind

__all__ = [
    "COUNTDOWN_FROM",
    "HALFWAY_MIN_S",
    "REST_ENDING_S",
    "CueSettings",
    "TimerCue",
    "go_text",
    "remaining_text",
    "session_done_text",
    "set_done_text",
    "stop_cue",
]

COUNTDOWN_FROM = 3
"""The countdown before a work set says 3, 2, 1."""
HALFWAY_MIN_S = 60.0
"""``halfway`` is said in work sets of at least this length (a shorter one is over before it matters)."""
REST_ENDING_S = 5.0
"""``rest_ending`` comes this long before a rest ends."""
DEFAULT_REMAINING_S = (10.0,)


@dataclass(frozen=True, slots=True)
class CueSettings:
    """Which cues are said and the ``remaining`` lead times (``[cues]`` in the config)."""

    enabled: frozenset[CueKind] = field(default_factory=lambda: frozenset(CueKind))
    remaining_s: tuple[float, ...] = DEFAULT_REMAINING_S
    reverse: bool = False
    """Reverse mode: the motor starts the belt ("Belt starting."); on a deadmill the person pushes."""

    def __post_init__(self) -> None:
        for lead in self.remaining_s:
            if not (math.isfinite(lead) and lead > 0):
                raise ValueError(f"a remaining lead time must be a positive number of seconds, got {lead!r}")
        # One spelling of the leads, longest first (30 s before 10 s): the order they are said in.
        object.__setattr__(self, "remaining_s", tuple(sorted(set(self.remaining_s), reverse=True)))

    def on(self, kind: CueKind) -> bool:
        return kind in self.enabled

    @classmethod
    def of(cls, enabled: Iterable[CueKind | str], remaining_s: Iterable[float], reverse: bool = False) -> CueSettings:
        return cls(frozenset(CueKind(k) for k in enabled), tuple(float(s) for s in remaining_s), reverse)


@dataclass(frozen=True, slots=True)
class TimerCue:
    """One cue as the timer emits it: ``t`` is its scheduled monotonic time (a late wake-up
    does not move it); ``remaining_s`` is what is left of the phase running from that moment."""

    t: float
    kind: CueKind
    text: str
    set_no: int | None
    remaining_s: float | None


def _seconds(value: float) -> str:
    return f"{value:g} second" + ("" if value == 1 else "s")


def go_text(set_no: int, sets: int, reverse: bool) -> str:
    return f"Set {set_no} of {sets}. " + ("Belt starting." if reverse else "Push.")


def remaining_text(lead: float) -> str:
    if lead >= 60 and lead % 60 == 0:
        minutes = int(lead // 60)
        return f"{minutes} minute" + ("." if minutes == 1 else "s.")
    return _seconds(lead) + "."


def set_done_text(set_no: int, rest_s: float | None) -> str:
    text = f"Set {set_no} done."
    return text if not rest_s else f"{text} Rest {_seconds(rest_s)}."


def session_done_text(sets: int, distance_m: float | None) -> str:
    """``distance_m`` is what the session measured, or None when it measured nothing (a timer
    with no treadmill): then no distance is said, never an invented one."""
    done = f"{sets} set" + ("" if sets == 1 else "s")
    if distance_m is None:
        return f"Session complete. {done}."
    return f"Session complete. {done}, {round(distance_m)} metres."


def stop_cue(t: float, set_no: int | None = None) -> TimerCue:
    """A latched stop, said whatever else is going on; the published cue carries the reason
    for the screen (a voice says only what matters now)."""
    return TimerCue(t, CueKind.STOP, "Emergency stop.", set_no, None)
