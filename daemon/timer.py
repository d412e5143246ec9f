"""The set timer: a pure state machine over a plan, with the clock passed in.

countdown → work 1 → rest 1 → work 2 → … → work N → done. Every boundary is computed from the
start time and the plan (plus time spent paused and phases skipped), never by summing sleeps, so
a late wake-up never moves a later boundary. ``advance(now)`` reports each boundary crossed with
its scheduled time; ``next_wake(now)`` says when something next needs doing (a boundary, or the
next whole second of the running phase for the 1 Hz timer display).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from retrotread.daemon.plans import MAX_PHASE_S, Plan


class Phase(StrEnum):
    COUNTDOWN = "countdown"
    WORK = "work"
    REST = "rest"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class Segment:
    phase: Phase
    set_no: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class Boundary:
    """A phase boundary that was crossed: ``ended`` (may be None) gives way to ``started``."""

    t: float
    ended: Segment | None
    started: Segment | None
    cause: str = "time"  # time, skip, abort


@dataclass(frozen=True, slots=True)
class TimerView:
    phase: Phase
    set_no: int
    sets: int
    remaining_s: float
    elapsed_s: float
    ends_at: float | None  # monotonic
    paused: bool


class TimerError(RuntimeError):
    """An action the timer cannot take in its current phase (HTTP 409)."""


class SetTimer:
    def __init__(self, plan: Plan, start: float) -> None:
        self.plan = plan
        self.start = start
        segs: list[Segment] = []
        if plan.countdown_s > 0:
            segs.append(Segment(Phase.COUNTDOWN, 1, plan.countdown_s))
        for n in range(1, plan.sets + 1):
            segs.append(Segment(Phase.WORK, n, plan.work_s))
            if n < plan.sets and plan.rest_s > 0:
                segs.append(Segment(Phase.REST, n, plan.rest_s))
        self.segments = tuple(segs)
        self._ends: list[float] = []
        acc = 0.0
        for seg in segs:
            acc += seg.duration_s
            self._ends.append(acc)
        self._index = 0
        self._shift = 0.0  # time spent paused, minus time skipped
        self._paused_at: float | None = None
        self._final: Phase | None = None

    # -- queries ------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._final is not None

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    @property
    def current(self) -> Segment | None:
        return None if self.finished else self.segments[self._index]

    def segment_start(self, i: int) -> float:
        return self.start + self._shift + (self._ends[i - 1] if i else 0.0)

    def segment_end(self, i: int) -> float:
        return self.start + self._shift + self._ends[i]

    def view(self, now: float) -> TimerView:
        if self._final is not None:
            last = self.segments[min(self._index, len(self.segments) - 1)]
            return TimerView(self._final, last.set_no, self.plan.sets, 0.0, 0.0, None, False)
        seg = self.segments[self._index]
        at = self._paused_at if self._paused_at is not None else now
        end = self.segment_end(self._index)
        remaining = min(seg.duration_s, max(0.0, end - at))
        return TimerView(
            seg.phase,
            seg.set_no,
            self.plan.sets,
            remaining,
            seg.duration_s - remaining,
            None if self.paused else end,
            self.paused,
        )

    def next_wake(self, now: float) -> float | None:
        """When the timer next needs attention: a boundary or the running phase's next whole second."""
        if self.finished or self.paused:
            return None
        end = self.segment_end(self._index)
        remaining = end - now
        if remaining <= 0:
            return now
        # Wake when the displayed remaining time crosses a whole second (…, 41.0, 40.0, …).
        frac = remaining - math.floor(remaining)
        tick = now + (frac if frac > 1e-6 else 1.0)
        return min(end, tick)

    # -- transitions ----------------------------------------------------------------------------

    def advance(self, now: float) -> list[Boundary]:
        """Cross every boundary that is due by ``now``; each is reported with its scheduled time."""
        crossed: list[Boundary] = []
        while not self.finished and not self.paused and self.segment_end(self._index) <= now:
            crossed.append(self._next(self.segment_end(self._index), "time"))
        return crossed

    def _next(self, t: float, cause: str) -> Boundary:
        ended = self.segments[self._index]
        if self._index + 1 >= len(self.segments):
            self._final = Phase.DONE
            return Boundary(t, ended, None, cause)
        self._index += 1
        return Boundary(t, ended, self.segments[self._index], cause)

    def first(self) -> Boundary:
        """The boundary that opens the session (nothing ended, the first segment started)."""
        return Boundary(self.start, None, self.segments[0], "start")

    def pause(self, now: float) -> None:
        if self.finished:
            raise TimerError("the session has ended")
        if self._paused_at is None:
            self._paused_at = now

    def resume(self, now: float) -> None:
        if self.finished:
            raise TimerError("the session has ended")
        if self._paused_at is not None:
            self._shift += now - self._paused_at
            self._paused_at = None

    def skip(self, now: float) -> list[Boundary]:
        """End the current phase now; what was planned after it moves up."""
        if self.finished:
            raise TimerError("the session has ended")
        self.resume(now)
        self._shift -= self.segment_end(self._index) - now
        return [self._next(now, "skip")]

    def extend(self, now: float, seconds: float) -> None:
        """Make the current phase ``seconds`` longer; what was planned after it moves back."""
        if self.finished:
            raise TimerError("the session has ended")
        seg = self.segments[self._index]
        if seg.duration_s + seconds > MAX_PHASE_S:
            raise TimerError(f"a {seg.phase} phase is at most {MAX_PHASE_S:g} s")
        i = self._index
        longer = Segment(seg.phase, seg.set_no, seg.duration_s + seconds)
        self.segments = (*self.segments[:i], longer, *self.segments[i + 1 :])
        for j in range(i, len(self._ends)):
            self._ends[j] += seconds

    def abort(self, now: float) -> Boundary:
        if self.finished:
            raise TimerError("the session has ended")
        seg = self.segments[self._index]
        self._final = Phase.ABORTED
        self._paused_at = None
        return Boundary(now, seg, None, "abort")
