"""Numbers that are true (issue 12): what a stored set says is what happened.

A property test drives the real Controller (real supervisor and guard) in deadmill mode over the
simulated belt physics (``sims.belt``, a manual belt a person pushes), on the test's clock: random
pushes, pauses (with the belt pushed during them), resumes, skips and aborts. Every stored set must
hold: average ≤ maximum, work ≤ the set's length, distance = the sum of the belt counter over the
samples of the set's running time, and an outcome that matches what the person did.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from helpers import FakeTime, QueueDriver, old_history, run_settled, settle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrotread.daemon.controller import Controller, SessionError
from retrotread.daemon.export.csv import to_csv
from retrotread.daemon.history import MemoryHistory
from retrotread.daemon.plans import PUSH_WAIT_S, PlanError, parse_plan
from retrotread.daemon.snapshot import SessionRecord
from retrotread.daemon.timer import Phase
from retrotread.drivers.base import Driver
from retrotread.drivers.none import NoDriver
from retrotread.drivers.types import BeltSample, Capabilities
from retrotread.drivers.units import Speed
from retrotread.safety import Mode, SafetyConfig
from retrotread.sims.belt import Belt

STEP_S = 0.05
HALVES_PER_S = 40  # samples fall half a step off the grid that actions and boundaries are on
WORK_S = 3.0
PLAN = "2x3s/1s,countdown=0.5s"


class GridTime(FakeTime):
    """The test's clock, on a grid of half steps counted in integers: boundaries computed from the
    plan land exactly on it (summed floats would drift and wake the timer one step late)."""

    def __init__(self) -> None:
        # A deadline a rounding error past the grid (a boundary shifted by a pause) is due now, and
        # the clock reads it, so the timer finds its boundary crossed rather than napping a step.
        super().__init__(slack=1e-6, catch_up=True)
        self.halves = 0

    def half_step(self) -> None:
        self.halves += 1
        self.now = 1000.0 + self.halves / HALVES_PER_S


class PushedBelt(QueueDriver):
    """A deadmill's manual belt (sims.belt physics on the test's clock), its counter included."""

    url = "test://pushed"

    def __init__(self, time: FakeTime) -> None:
        super().__init__()
        self.time = time
        self.belt = Belt(motorized=False, t=time.now)
        self.sent: list[BeltSample] = []

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(can_drive=False, nominal_period_s=STEP_S)

    async def start(self, speed: Speed) -> None:
        raise AssertionError("deadmill: nothing starts a manual belt")

    async def set_speed(self, speed: Speed) -> None:
        raise AssertionError("deadmill: nothing drives a manual belt")

    async def set_incline(self, incline_pct: float) -> None:
        raise AssertionError("deadmill: no incline")

    async def stop(self) -> None:
        return

    async def emergency_stop(self) -> None:
        return

    def sample(self) -> BeltSample:
        self.belt.advance_to(self.time.now)
        s = BeltSample(self.time.now, Speed(self.belt.speed_mps), 0.0, self.belt.distance_m)
        self.sent.append(s)
        self.put(s)
        return s


class Rig:
    """One controller on the test's clock; ``step`` moves time one tick with a sample in its middle."""

    def __init__(self, driver: Driver | None = None, mode: Mode = Mode.DEADMILL) -> None:
        self.loop = asyncio.new_event_loop()
        self.time = GridTime()
        self.pushed = PushedBelt(self.time)
        self.driver = driver or self.pushed
        self.history = MemoryHistory()
        self.c = Controller(
            self.driver,
            safety=SafetyConfig(mode=mode),
            history=self.history,
            clock=self.time.clock,
            wall=lambda: 1.7e9 + self.time.now,
            sleep=self.time.sleep,
        )
        self.run(self.c.__aenter__())
        # (t, paused?) of every sample, to tell which belong to a set's running time
        self.samples: list[tuple[BeltSample, bool]] = []

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return run_settled(self.loop, coro)

    def step(self) -> None:
        self.time.half_step()
        if self.driver is self.pushed:
            paused = bool(self.c.session_paused)
            self.samples.append((self.pushed.sample(), paused))
            self.loop.run_until_complete(settle())
        self.time.half_step()
        self.time.wake_due()
        self.loop.run_until_complete(settle())

    def wait(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP_S)):
            self.step()

    def close(self) -> None:
        self.run(self.c.aclose())
        self.loop.close()

    def record(self) -> SessionRecord:
        rec = self.history.recent(1)[0]
        return rec


def expected_distance(rig: Rig, start: float, end: float) -> float:
    """The belt counter summed over consecutive samples that both fall in the set's running time."""
    total = 0.0
    for (a, pa), (b, pb) in itertools.pairwise(rig.samples):
        if not pa and not pb and start < a.t and b.t < end:
            assert a.distance_m is not None and b.distance_m is not None
            total += b.distance_m - a.distance_m
    return total


ACTION = st.one_of(
    st.tuples(st.just("time"), st.floats(0.05, 2.5), st.sampled_from([0.0, 0.6, 1.2, 1.8])),
    st.tuples(st.sampled_from(["pause", "resume", "skip", "abort"]), st.just(0.0), st.just(0.0)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=st.lists(ACTION, max_size=12))
def test_stored_sets_tell_the_truth_whatever_the_person_does(actions: list[tuple[str, float, float]]) -> None:
    rig = Rig()
    try:
        rig.run(rig.c.start_session(parse_plan(PLAN)))
        expected: dict[int, str] = {}  # set number → outcome the person's actions call for
        session_outcome = "completed"
        for kind, seconds, mph in actions:
            if rig.c.session is None:
                break
            view = rig.c.session_view()
            assert view is not None
            if kind == "time":
                rig.pushed.belt.push_now(Speed.from_mph(mph) if mph > 0 else None)
                rig.wait(seconds)
                continue
            in_work = view.phase is Phase.WORK
            try:
                rig.run(rig.c.session_action(kind))
            except SessionError:
                continue
            if kind == "skip" and in_work:
                expected[view.set] = "skipped"
            if kind == "abort":
                session_outcome = "aborted"
                if in_work:
                    expected[view.set] = "aborted"
        if rig.c.session is not None and rig.c.session_paused:
            rig.run(rig.c.session_action("resume"))
        for _ in range(400):  # the rest of the plan runs out (20 s at most)
            if rig.c.session is None:
                break
            rig.step()
        assert rig.c.session is None
        rec = rig.record()
        assert rec.outcome == session_outcome
        for s in rec.sets:
            assert s.outcome == expected.get(s.set, "completed"), (s, expected)
            assert s.work_s <= WORK_S + 1e-6, s
            if s.distance_m is None:  # no sample fell in its running time (skipped at once): nothing measured
                assert s.avg_mph is None and s.max_mph is None
                assert not any(s.started_mono < p.t < s.ended_mono and not paused for p, paused in rig.samples)
                continue
            assert s.avg_mph is not None and s.max_mph is not None
            assert s.avg_mph <= s.max_mph + 2e-3, s  # 3-decimal rounding of both
            want = expected_distance(rig, s.started_mono, s.ended_mono)
            assert s.distance_m == pytest.approx(want, abs=0.006), (s, want)  # stored to 2 decimals
    finally:
        rig.close()


def test_belt_pushed_during_a_pause_is_not_part_of_the_set() -> None:
    """issue 12: 2.06 mph average against a 1.52 maximum, the pause's pushing bridged into the set."""
    rig = Rig()
    try:
        rig.run(rig.c.start_session(parse_plan("1x4s,countdown=0s")))
        rig.pushed.belt.push_now(Speed.from_mph(1.0))
        rig.wait(1.0)
        rig.run(rig.c.session_action("pause"))
        rig.pushed.belt.push_now(Speed.from_mph(3.0))
        rig.wait(5.0)
        rig.pushed.belt.push_now(None)
        rig.wait(3.0)  # coasts to a stop
        rig.run(rig.c.session_action("resume"))
        rig.pushed.belt.push_now(Speed.from_mph(1.0))
        rig.wait(4.0)
        (s,) = rig.record().sets
        assert s.outcome == "completed" and s.work_s == pytest.approx(4.0, abs=1e-6)
        assert s.avg_mph is not None and s.max_mph is not None and s.avg_mph <= s.max_mph
        assert s.distance_m == pytest.approx(expected_distance(rig, s.started_mono, s.ended_mono), abs=0.006)
    finally:
        rig.close()


def test_a_skipped_set_is_skipped_and_an_abort_in_the_countdown_is_recorded() -> None:
    rig = Rig()
    try:
        rig.run(rig.c.start_session(parse_plan("2x60s/5s,countdown=0s")))
        rig.pushed.belt.push_now(Speed.from_mph(1.0))
        rig.wait(13.8)
        rig.run(rig.c.session_action("skip"))
        rig.run(rig.c.session_action("skip"))  # the rest
        rig.wait(2.0)
        rig.run(rig.c.session_action("abort"))
        rec = rig.record()
        assert [(s.set, s.outcome) for s in rec.sets] == [(1, "skipped"), (2, "aborted")]
        assert rec.sets[0].work_s == pytest.approx(13.8, abs=1e-6)
        rig.run(rig.c.start_session(parse_plan("deadmill")))  # 5 s countdown
        rig.wait(2.0)
        rig.run(rig.c.session_action("abort"))
        counted = rig.record()
        assert counted.outcome == "aborted" and counted.sets == ()
        rows = to_csv(rig.history.recent(5)).decode().splitlines()
        assert len(rows) == 1 + 2 + 1  # header, two sets, the session that never got past its countdown
        assert rows[1].split(",")[:5] == [str(counted.id), "deadmill", "deadmill", counted.started_at, "aborted"]
    finally:
        rig.close()


def test_a_cap_in_deadmill_mode_ends_the_session_at_the_cap_s14() -> None:
    rig = Rig()
    try:
        rig.run(rig.c.start_session(parse_plan("3x4s/1s,countdown=0s,cap=6s")))
        rig.pushed.belt.push_now(Speed.from_mph(1.0))
        rig.wait(12.0)
        rec = rig.record()
        assert rec.outcome == "capped"
        assert [s.outcome for s in rec.sets] == ["completed", "capped"]
        assert sum(s.work_s for s in rec.sets) == pytest.approx(6.0, abs=STEP_S + 1e-6)
        cap = [e for e in rec.events if e.kind == "volume_cap"]
        assert len(cap) == 1 and cap[0].rule == "S14"
    finally:
        rig.close()


def test_a_timer_only_session_stores_no_numbers_not_zeros() -> None:
    rig = Rig(driver=NoDriver())
    try:
        rig.run(rig.c.start_session(parse_plan("2x2s/1s,countdown=0s")))
        rig.wait(6.0)
        rec = rig.record()
        assert rec.outcome == "completed" and not rec.simulated
        assert [(s.distance_m, s.avg_mph, s.max_mph) for s in rec.sets] == [(None, None, None)] * 2
        assert [s.work_s for s in rec.sets] == [pytest.approx(2.0), pytest.approx(2.0)]
        assert rec.set_distances_m == () and rec.fade_pct is None
        trace = rig.history.get_trace(rec.id)
        assert trace and all(p.speed_mph is None and p.distance_m is None for p in trace)
    finally:
        rig.close()


def test_start_on_push_begins_the_set_at_the_first_motion_and_says_when_it_waited_too_long() -> None:
    rig = Rig()
    try:
        rig.run(rig.c.start_session(parse_plan("2x3s/3s,countdown=1s,start=push")))
        rig.wait(1.0 + 2.0)  # countdown over; getting into position, the belt still
        view = rig.c.session_view()
        assert view is not None and view.phase is Phase.WORK and view.remaining_s == pytest.approx(3.0)
        rig.pushed.belt.push_now(Speed.from_mph(1.2))
        rig.wait(3.5)
        rig.pushed.belt.push_now(None)
        rig.wait(3.0 + PUSH_WAIT_S + 4.0)  # the belt coasts to a stop in the rest; no push: set 2 starts anyway
        rec = rig.record()
        assert rec.outcome == "completed"
        first, second = rec.sets
        assert first.work_s == pytest.approx(3.0) and second.work_s == pytest.approx(3.0)
        pushes = [p.t for p, _ in rig.samples if p.speed.mph > 0.05]
        assert first.started_mono == pushes[0]  # the set began at the first sample that moved
        assert first.distance_m is not None and first.distance_m > 1.0
        started = [e for e in rec.events if e.kind == "set_started"]
        assert [e.set for e in started] == [1, 2]
        assert started[0].detail.startswith("on the first push")
        assert started[1].detail.startswith(f"no push within {PUSH_WAIT_S:g} s")
        assert rec.set_distances_m == (first.distance_m, second.distance_m)
        assert rec.fade_pct is not None and rec.fade_pct < -50  # the second set was barely pushed
    finally:
        rig.close()


def test_start_on_push_is_refused_outside_deadmill_and_bad_values_are_named() -> None:
    with pytest.raises(PlanError, match="start is push"):
        parse_plan("deadmill,start=soon")
    rig = Rig(mode=Mode.REVERSE)
    try:
        with pytest.raises(SessionError, match="deadmill"):
            rig.run(rig.c.start_session(parse_plan("deadmill,start=push")))
    finally:
        rig.close()


def test_a_version_2_history_is_migrated_keeps_its_rows_and_stores_no_number_as_null(tmp_path: Path) -> None:
    import sqlite3

    from retrotread.daemon.history import SCHEMA_VERSION, SqliteHistory
    from retrotread.daemon.snapshot import SetResult

    path = tmp_path / "h.sqlite3"
    old_history(path, 2)
    store = SqliteHistory.open(path)
    old = store.get(1)
    assert old is not None and old.sets[0].distance_m == 41.5 and old.sets[0].rule is None
    sid = store.begin("2x60s/60s", "deadmill", "none://", 2, "2026-01-07T18:00:00.000Z")
    timer_only = SetResult(
        set=1, started_at="2026-01-07T18:00:05.000Z", ended_at="2026-01-07T18:01:05.000Z", started_mono=5,
        ended_mono=65, work_s=60, distance_m=None, avg_mph=None, max_mph=None, outcome="stopped", rule="S5",
    )  # fmt: skip
    store.record_set(sid, timer_only)
    store.end(sid, "stopped", "2026-01-07T18:01:05.000Z", set_distances_m=(41.5, 38.0), fade_pct=-8.4)
    assert store.flush(10)
    store.close()
    reader = SqliteHistory.open_readonly(path)
    try:
        rec = reader.get(sid)
        assert rec is not None and rec.sets == (timer_only,) and rec.fade_pct == -8.4
        assert rec.set_distances_m == (41.5, 38.0) and not rec.simulated
        assert reader.get(1) == old
    finally:
        reader.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT distance_m, avg_mph, max_mph FROM sets WHERE session_id = ?", (sid,)).fetchone() == (
        None,
        None,
        None,
    )
    db.close()
