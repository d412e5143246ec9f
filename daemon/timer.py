"""The set timer: a pure state machine over a plan, with the clock passed in.

countdown → work 1 → rest 1 → work 2 → … → work N → done. Every boundary is computed from the
start time and the plan (plus time spent paused and phases skipped), never by summing sleeps, so
a late wake-up never moves a later boundary. ``advance(now)`` reports each boundary crossed with
its scheduled time; ``next_wake(now)`` says when something next needs doing (a boundary, or the
next whole second of the running phase for the 1 Hz timer display, or the next cue).

Cues (docs/cues.md, words and collision rules in ``daemon/cues.py``) come from the same
schedule: each phase's moments are computed from its current start and end, so a pause shifts
them and an extension moves them with the end. ``take_cues()`` hands over what is due, in order,
each once. A skip drops the moments the skipped part of the phase would have had (the boundary's
own cue, ``set_done`` or ``go``, is still said: the set did end, the next did start); an abort
drops everything after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from retrotread.daemon.cues import (
    COUNTDOWN_FROM,
    HALFWAY_MIN_S,
    REST_ENDING_S,
    CueSettings,
    TimerCue,
    go_text,
    remaining_text,
    session_done_text,
    set_done_text,
)
from retrotread.daemon.events import CueKind, Phase
from retrotread.daemon.plans import MAX_PHASE_S, Plan
from retrotread.drivers.errors import StateError

__all__ = ["Boundary", "Phase", "Segment", "SetTimer", "TimerCue", "TimerError", "TimerView"]


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


class TimerError(StateError):
    """An action the timer cannot take in its current phase (HTTP 409)."""


class _Moment(NamedTuple):
    t: float
    order: int
    kind: CueKind
    lead: float
    text: str
    set_no: int
    remaining_s: float


_CueKey = tuple[int, CueKind, float]
"""A cue's identity: (segment index, kind, lead); what was said once is never said again."""


class SetTimer:
    def __init__(self, plan: Plan, start: float, cues: CueSettings | None = None) -> None:
        self.plan = plan
        self.start = start
        self.cue_settings = cues or CueSettings()
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
        self._cues: list[TimerCue] = []
        self._said: set[_CueKey] = set()
        if segs[0].phase is Phase.WORK:  # no countdown: the session opens with the first set's go
            self._cue(start, CueKind.GO, go_text(1, plan.sets, self.cue_settings.reverse), 1, segs[0].duration_s)

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
        wake = min(end, tick)
        moments = self._moments(self._index)  # in time order: the first is the next unsaid one
        if moments and moments[0].t < wake:
            return max(moments[0].t, now)
        return wake

    # -- cues -----------------------------------------------------------------------------------

    def take_cues(self) -> list[TimerCue]:
        """The cues that fell due since the last call, in order (each is handed over once)."""
        taken, self._cues = self._cues, []
        return taken

    def _cue(self, t: float, kind: CueKind, text: str, set_no: int | None, remaining_s: float | None) -> None:
        if self.cue_settings.on(kind):
            self._cues.append(TimerCue(t, kind, text, set_no, remaining_s))

    def _moments(self, i: int) -> list[_Moment]:
        """Segment ``i``'s cues not said yet, in time order (ties: ``order``)."""
        seg = self.segments[i]
        start, end, d = self.segment_start(i), self.segment_end(i), seg.duration_s
        nxt = self.segments[i + 1] if i + 1 < len(self.segments) else None
        out: list[_Moment] = []
        if seg.phase is Phase.WORK:
            if d >= HALFWAY_MIN_S:
                out.append(_Moment(start + d / 2, 0, CueKind.HALFWAY, 0.0, "Halfway.", seg.set_no, d / 2))
            out.extend(
                _Moment(end - lead, 1, CueKind.REMAINING, lead, remaining_text(lead), seg.set_no, lead)
                for lead in self.cue_settings.remaining_s
                if lead < d  # at the set's first instant it would talk over "go"
            )
        elif nxt is not None and nxt.phase is Phase.WORK:  # the countdown or a rest before a set
            if seg.phase is Phase.REST and d > REST_ENDING_S:
                lead = REST_ENDING_S
                out.append(_Moment(end - lead, 0, CueKind.REST_ENDING, lead, "Next set in 5.", nxt.set_no, lead))
            out.extend(
                _Moment(end - k, 1, CueKind.COUNTDOWN, float(k), str(k), nxt.set_no, float(k))
                for k in range(COUNTDOWN_FROM, 0, -1)
                if k <= d  # only inside this phase: never back into the set before it
            )
        out = [m for m in out if self.cue_settings.on(m.kind) and (i, m.kind, m.lead) not in self._said]
        out.sort(key=lambda m: (m.t, m.order))
        return out

    def _collect(self, until: float) -> None:
        """Say the current segment's moments due by ``until``."""
        if self.finished:
            return
        for m in self._moments(self._index):
            if m.t > until:
                break
            self._said.add((self._index, m.kind, m.lead))
            self._cue(m.t, m.kind, m.text, m.set_no, m.remaining_s)

    def _boundary_cues(self, b: Boundary) -> None:
        ended, started = b.ended, b.started
        if ended is not None and ended.phase is Phase.WORK:
            if started is None:
                # The distance is the controller's to add: only it knows what was measured.
                self._cue(b.t, CueKind.SESSION_DONE, session_done_text(self.plan.sets, None), ended.set_no, 0.0)
            else:
                rest = started.duration_s if started.phase is Phase.REST else None
                self._cue(b.t, CueKind.SET_DONE, set_done_text(ended.set_no, rest), ended.set_no, rest or 0.0)
        if started is not None and started.phase is Phase.WORK:
            text = go_text(started.set_no, self.plan.sets, self.cue_settings.reverse)
            self._cue(b.t, CueKind.GO, text, started.set_no, started.duration_s)

    # -- transitions ----------------------------------------------------------------------------

    def advance(self, now: float) -> list[Boundary]:
        """Cross every boundary that is due by ``now``; each is reported with its scheduled time."""
        crossed: list[Boundary] = []
        while not self.finished and not self.paused and self.segment_end(self._index) <= now:
            end = self.segment_end(self._index)
            self._collect(end)
            crossed.append(self._next(end, "time"))
        if not self.paused:
            self._collect(now)
        return crossed

    def _next(self, t: float, cause: str) -> Boundary:
        ended = self.segments[self._index]
        if self._index + 1 >= len(self.segments):
            self._final = Phase.DONE
            b = Boundary(t, ended, None, cause)
        else:
            self._index += 1
            b = Boundary(t, ended, self.segments[self._index], cause)
        self._boundary_cues(b)
        return b

    def first(self) -> Boundary:
        """The boundary that opens the session (nothing ended, the first segment started)."""
        return Boundary(self.start, None, self.segments[0], "start")

    def pause(self, now: float, cue: bool = False) -> None:
        """Hold the clock. ``cue``: a person (or a stop) paused, so "Paused." is said; a hold of the
        controller's own (start=push waiting for the first push) says nothing."""
        if self.finished:
            raise TimerError("the session has ended")
        if self._paused_at is None:
            self._collect(now)  # what was due before the pause is said before "Paused."
            self._paused_at = now
            if cue:
                self._cue(now, CueKind.PAUSED, "Paused.", self.segments[self._index].set_no, self.view(now).remaining_s)

    def resume(self, now: float, cue: bool = False) -> None:
        if self.finished:
            raise TimerError("the session has ended")
        if self._paused_at is not None:
            self._shift += now - self._paused_at
            self._paused_at = None
            if cue:
                self._cue(
                    now, CueKind.RESUMED, "Resumed.", self.segments[self._index].set_no, self.view(now).remaining_s
                )

    def skip(self, now: float) -> list[Boundary]:
        """End the current phase now; what was planned after it moves up."""
        if self.finished:
            raise TimerError("the session has ended")
        self.resume(now)
        self._collect(now)  # what was due before the skip is said; the skipped moments never are
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
        self._collect(now)  # due before the abort: said (in order); nothing after it is
        self._final = Phase.ABORTED
        self._paused_at = None
        return Boundary(now, seg, None, "abort")
