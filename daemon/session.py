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
    """What one work set measured. Distance comes from the device's own counter when it has one."""

    set_no: int
    start_mono: float
    start_wall: float
    paused_s: float = 0.0
    distance_m: float = 0.0
    max_mph: float = 0.0
    _last: BeltSample | None = None

    def add(self, sample: BeltSample) -> None:
        mph = sample.speed.mph
        if mph == mph:  # not NaN
            self.max_mph = max(self.max_mph, mph)
        last = self._last
        if last is not None:
            if sample.distance_m is not None and last.distance_m is not None:
                self.distance_m += max(0.0, sample.distance_m - last.distance_m)
            else:
                self.distance_m += (last.speed.mps + sample.speed.mps) / 2 * max(0.0, sample.t - last.t)
        self._last = sample

    def result(self, end_mono: float, end_wall: float, outcome: SetOutcome) -> SetResult:
        work_s = max(0.0, end_mono - self.start_mono - self.paused_s)
        avg_mph = Speed(self.distance_m / work_s).mph if work_s > 0 else 0.0
        return SetResult(
            set=self.set_no,
            started_at=iso(self.start_wall),
            ended_at=iso(end_wall),
            started_mono=self.start_mono,
            ended_mono=end_mono,
            work_s=round(work_s, 3),
            distance_m=round(self.distance_m, 2),
            avg_mph=round(avg_mph, 3),
            max_mph=round(self.max_mph, 3),
            outcome=outcome,
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

    @property
    def belt_time_s(self) -> float:
        return sum(r.work_s for r in self.results)
