"""The set timer and plans, on an injected clock: no real waiting anywhere here."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retrotread.daemon.plans import PRESETS, Plan, PlanError, parse_duration, parse_plan
from retrotread.daemon.timer import Phase, SetTimer, TimerError


def test_presets_match_program_md() -> None:
    d = PRESETS["deadmill"]
    assert (d.sets, d.work_s, d.rest_s) == (3, 60, 60)
    assert PRESETS["flat-retro"].work_s == 600
    assert PRESETS["phase2-treadmill-first"].cap_s == 300
    assert PRESETS["phase2-treadmill"].cap_s == 480
    assert PRESETS["phase3-intervals"].sets == 8


@pytest.mark.parametrize(
    ("text", "sets", "work", "rest", "countdown"),
    [
        ("3x60s/60s", 3, 60, 60, 5),
        ("2x3s/2s", 2, 3, 2, 5),
        ("2x3s/2s,countdown=0s", 2, 3, 2, 0),
        ("1x10m", 1, 600, 0, 5),
        ("4x1m30s/45", 4, 90, 45, 5),
    ],
)
def test_custom_plans_parse(text: str, sets: int, work: float, rest: float, countdown: float) -> None:
    plan = parse_plan(text)
    assert (plan.sets, plan.work_s, plan.rest_s, plan.countdown_s) == (sets, work, rest, countdown)


@pytest.mark.parametrize("bad", ["", "fast", "0x60s/60s", "3x0s/1s", "3x60s/60s,wat=1", "51x1s/1s", "3x60q"])
def test_bad_plans_are_refused_with_a_message(bad: str) -> None:
    with pytest.raises(PlanError) as err:
        parse_plan(bad)
    assert str(err.value)


def test_durations() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("1m30s") == 90
    assert parse_duration("2m") == 120
    with pytest.raises(PlanError):
        parse_duration("soon")


def phases(timer: SetTimer, until: float) -> list[tuple[float, str, int]]:
    out = []
    for b in timer.advance(until):
        if b.started is not None:
            out.append((b.t, b.started.phase.value, b.started.set_no))
        else:
            out.append((b.t, "done", 0))
    return out


def test_deadmill_boundaries_come_from_the_start_time() -> None:
    t0 = 1000.0
    timer = SetTimer(parse_plan("3x60s/60s"), t0)
    assert timer.view(t0).phase is Phase.COUNTDOWN
    got = phases(timer, t0 + 10_000)
    assert got == [
        (t0 + 5, "work", 1),
        (t0 + 65, "rest", 1),
        (t0 + 125, "work", 2),
        (t0 + 185, "rest", 2),
        (t0 + 245, "work", 3),
        (t0 + 305, "done", 0),
    ]
    assert timer.finished
    assert timer.view(t0 + 400).phase is Phase.DONE


def test_a_late_wake_up_never_moves_later_boundaries() -> None:
    """Waking 0.7 s late at every boundary: the scheduled times stay on the plan (no drift)."""
    t0 = 0.0
    timer = SetTimer(parse_plan("3x5s/3s,countdown=0s"), t0)
    planned = [5, 8, 13, 16, 21]
    seen = []
    for p in planned:
        for b in timer.advance(p + 0.7):
            seen.append(b.t)
    assert seen == planned


def test_view_counts_down_inside_a_phase() -> None:
    timer = SetTimer(parse_plan("3x60s/60s"), 0.0)
    timer.advance(5 + 18.7)
    v = timer.view(5 + 18.7)
    assert (v.phase, v.set_no, v.sets) == (Phase.WORK, 1, 3)
    assert v.remaining_s == pytest.approx(41.3)
    assert v.elapsed_s == pytest.approx(18.7)
    assert v.ends_at == pytest.approx(65.0)


def test_pause_freezes_the_clock_and_resume_shifts_what_follows() -> None:
    timer = SetTimer(parse_plan("2x10s/5s,countdown=0s"), 0.0)
    timer.pause(4.0)
    assert timer.advance(100.0) == []
    assert timer.view(100.0).remaining_s == pytest.approx(6.0)
    assert timer.next_wake(100.0) is None
    timer.resume(104.0)  # paused for 100 s
    got = phases(timer, 1000.0)
    assert [t for t, *_ in got] == [110.0, 115.0, 125.0]


def test_skip_ends_the_phase_now_and_moves_the_rest_up() -> None:
    timer = SetTimer(parse_plan("2x10s/5s,countdown=0s"), 0.0)
    [b] = timer.skip(3.0)
    assert b.cause == "skip"
    assert b.started is not None and b.started.phase is Phase.REST
    assert [t for t, *_ in phases(timer, 1000.0)] == [8.0, 18.0]


def test_extend_makes_the_phase_longer_and_moves_the_rest_back() -> None:
    timer = SetTimer(parse_plan("2x10s/5s,countdown=0s"), 0.0)
    timer.advance(12.0)  # into the rest
    timer.extend(12.0, 30.0)
    view = timer.view(12.0)
    assert (view.phase, view.remaining_s, view.elapsed_s) == (Phase.REST, 33.0, 2.0)
    assert [t for t, *_ in phases(timer, 1000.0)] == [45.0, 55.0]
    with pytest.raises(TimerError):
        timer.extend(60.0, 1.0)  # the session has ended


def test_extend_keeps_a_phase_within_the_plans_limit() -> None:
    timer = SetTimer(parse_plan("1x4h,countdown=0s"), 0.0)
    with pytest.raises(TimerError, match="at most"):
        timer.extend(1.0, 1.0)


def test_abort_ends_the_session_and_refuses_more() -> None:
    timer = SetTimer(parse_plan("deadmill"), 0.0)
    timer.abort(30.0)
    assert timer.view(31.0).phase is Phase.ABORTED
    with pytest.raises(TimerError):
        timer.pause(32.0)


def test_next_wake_lands_on_whole_seconds_and_boundaries() -> None:
    timer = SetTimer(parse_plan("1x3s,countdown=0s"), 0.0)
    assert timer.next_wake(0.0) == pytest.approx(1.0)
    assert timer.next_wake(1.25) == pytest.approx(2.0)
    assert timer.next_wake(2.5) == pytest.approx(3.0)
    assert timer.next_wake(3.5) == pytest.approx(3.5)  # overdue: now


@given(
    sets=st.integers(1, 6),
    work=st.integers(1, 120),
    rest=st.integers(0, 120),
    countdown=st.integers(0, 10),
    wakes=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=60),
)
def test_boundaries_never_drift_however_the_wakes_fall(
    sets: int, work: int, rest: int, countdown: int, wakes: list[float]
) -> None:
    plan = Plan("p", sets, work, rest, countdown)
    timer = SetTimer(plan, 50.0)
    now = 50.0
    crossed = []
    while not timer.finished:
        for w in wakes:
            now += w + 0.01
            crossed += [b.t for b in timer.advance(now)]
            if timer.finished:
                break
    expected, acc = [], 50.0
    for seg in timer.segments:
        acc += seg.duration_s
        expected.append(acc)
    assert crossed == pytest.approx(expected)
    assert crossed[-1] == pytest.approx(50.0 + plan.total_s)
