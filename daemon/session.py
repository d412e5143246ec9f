"""A running session's state: the set being measured and what the session has done so far.

The controller (``daemon/controller.py``) owns one ``RunningSession`` at a time and drives it from
its loops; these are plain records, so the orchestration and the runtime loops stay apart from
the bookkeeping (issue 11 point 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from retrotread.daemon.plans import Plan
from retrotread.daemon.snapshot import SetOutcome, SetResult, iso
from retrotread.daemon.timer import SetTimer
from retrotread.drivers.types import BeltSample
from retrotread.drivers.units import Speed


@dataclass
class SetStats:
    """What one work set measured. Distance comes from the device's own counter when it has one.

    Only the samples of the set's running time count (issue 12): the controller calls ``gap()`` for
    every sample while the set is paused, so the belt pushed during a pause is not bridged into the
    set by the first sample after it. A set that saw no sample measured nothing: its distance and
    speeds are None, never 0 (a timer-only set)."""

    set_no: int
    start_mono: float
    start_wall: float
    paused_s: float = 0.0
    distance_m: float = 0.0
    max_mph: float = 0.0
    samples: int = 0
    _last: BeltSample | None = None
    _from: float | None = None  # when the running stretch began: the set's start, or the resume

    def __post_init__(self) -> None:
        self._from = self.start_mono

    def add(self, sample: BeltSample) -> None:
        mph = sample.speed.mph
        if mph == mph:  # not NaN
            self.max_mph = max(self.max_mph, mph)
            self.samples += 1
        if self._from is None:  # the first sample after a pause starts the stretch
            self._from = sample.t
        last = self._last
        if last is not None:
            if sample.distance_m is not None and last.distance_m is not None:
                self.distance_m += max(0.0, sample.distance_m - last.distance_m) * self._inside(sample)
            elif mph == mph and last.speed.mph == last.speed.mph:
                self.distance_m += (last.speed.mps + sample.speed.mps) / 2 * max(0.0, sample.t - last.t)
        self._last = sample if mph == mph else None

    def _inside(self, sample: BeltSample) -> float:
        """The part of a sample's measured span that lies inside the running stretch (1 when the
        device gives no span, or the span began inside it). A late reading carries movement from
        before the set began; its share of that span is credited, on the span's even pace, and the
        rest left to before the set (the pulse board's one-second line, for sets under a second)."""
        span = sample.span_s
        if not span or self._from is None or sample.t - span >= self._from:
            return 1.0
        return max(0.0, min(1.0, (sample.t - self._from) / span))

    def gap(self) -> None:
        """The set is not running (paused): the next sample starts a new stretch, nothing is bridged."""
        self._last = None
        self._from = None

    def result(
        self,
        end_mono: float,
        end_wall: float,
        outcome: SetOutcome,
        *,
        paused_since: float | None = None,
        rule: str | None = None,
    ) -> SetResult:
        """The set as it stands at ``end_mono``; ``paused_since``: it ends paused (that time is not work)."""
        paused_s = self.paused_s + (max(0.0, end_mono - paused_since) if paused_since is not None else 0.0)
        work_s = max(0.0, end_mono - self.start_mono - paused_s)
        measured = self.samples > 0
        avg_mph = (Speed(self.distance_m / work_s).mph if work_s > 0 else 0.0) if measured else None
        return SetResult(
            set=self.set_no,
            started_at=iso(self.start_wall),
            ended_at=iso(end_wall),
            started_mono=self.start_mono,
            ended_mono=end_mono,
            work_s=round(work_s, 3),
            distance_m=round(self.distance_m, 2) if measured else None,
            avg_mph=round(avg_mph, 3) if avg_mph is not None else None,
            max_mph=round(self.max_mph, 3) if measured else None,
            outcome=outcome,
            rule=rule,
        )


@dataclass
class RunningSession:
    """A session the controller runs: its plan, timer, the set in progress and the results so far."""

    id: int
    plan: Plan
    timer: SetTimer
    speed: Speed
    stats: SetStats | None = None
    results: list[SetResult] = field(default_factory=list)
    paused_at: float | None = None
    last_checkpoint: float = 0.0
    belt_wanted: bool = False  # reverse mode: a work set is running and wants the belt moving
    refusal_reported: bool = False
    start_at_standstill: bool = False  # the set's start met a belt still coming down: ask once at 0
    push_wait: float | None = None
    """start=push: when the work set began waiting for the first belt motion (its timer held), or None."""
    push_set: int = 0  # the set that waits
    started: float = 0.0  # monotonic, for the trace's t_s
    last_trace: float = -1e9

    @property
    def belt_time_s(self) -> float:
        return sum(r.work_s for r in self.results)

    def distance_done_m(self) -> float | None:
        """Distance of the sets so far, the running one included; None while nothing was measured."""
        parts = [r.distance_m for r in self.results if r.distance_m is not None]
        if self.stats is not None and self.stats.samples:
            parts.append(self.stats.distance_m)
        return sum(parts) if parts else None


def fade(results: list[SetResult]) -> tuple[tuple[float, ...], float | None]:
    """Per-set distance of the measured work sets and the fade from the first to the last, in percent.

    Only sets that ran to their end count (a skipped or cut set is not a weaker set); the fade is
    None with fewer than two of them or a first set of no distance."""
    done = [r.distance_m for r in sorted(results, key=lambda r: r.set) if r.outcome == "completed"]
    dist = tuple(d for d in done if d is not None)
    if len(dist) < 2 or dist[0] <= 0:
        return dist, None
    return dist, round((dist[-1] - dist[0]) / dist[0] * 100, 1)
