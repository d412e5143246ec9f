"""Progress from hand-made records (daemon/progress.py): strength and fade, adherence, program position."""

from __future__ import annotations

from datetime import date

from retrotread.daemon.progress import position, progress, strength
from retrotread.daemon.snapshot import SessionRecord, SetResult


def rec(sid: int, day: str, plan: str, dists: list[float], *, mode: str = "deadmill", driver: str = "csafe://x",
        work_s: float = 60.0, outcome: str = "completed") -> SessionRecord:  # fmt: skip
    sets = tuple(
        SetResult(
            set=k + 1,
            started_at=f"{day}T18:0{k}:00.000Z",
            ended_at=f"{day}T18:0{k}:59.000Z",
            started_mono=0.0,
            ended_mono=work_s,
            work_s=work_s,
            distance_m=d,
            avg_mph=1.4 if d else 0.0,
            max_mph=1.6 if d else 0.0,
            outcome="completed",
        )
        for k, d in enumerate(dists)
    )
    return SessionRecord(id=sid, plan=plan, mode=mode, driver=driver, started_at=f"{day}T18:00:00.000Z",
                         ended_at=f"{day}T18:10:00.000Z", outcome=outcome, sets_planned=len(dists), sets=sets)  # type: ignore[arg-type]  # fmt: skip


def test_strength_is_distance_per_minute_set_with_the_fade_of_last_against_first() -> None:
    points = strength(
        [
            rec(2, "2026-03-09", "deadmill", [44.0, 40.0, 33.0]),
            rec(1, "2026-03-02", "deadmill", [40.0, 36.0, 30.0]),
            rec(3, "2026-03-10", "deadmill", [0.0, 0.0, 0.0], driver="none"),  # timer-only: no point
            rec(4, "2026-03-11", "deadmill", [45.0], driver="sim://manual"),
            rec(5, "2026-03-12", "phase1", [90.0, 90.0], mode="reverse"),  # not a deadmill session
            rec(6, "2026-03-13", "custom", [80.0, 70.0], work_s=120.0),  # not 1-minute sets
        ]
    )
    assert [p.session for p in points] == [1, 2, 4]
    assert points[0].set_distances_m == (40.0, 36.0, 30.0) and points[0].fade_pct == -25.0
    assert points[1].fade_pct == -25.0 and points[1].week == "2026-W11"
    assert points[2].fade_pct is None and points[2].simulated and not points[0].simulated


def test_adherence_counts_sessions_per_week_per_plan_against_the_program() -> None:
    recs = [rec(i, f"2026-03-0{i + 1}", "deadmill", [40.0, 38.0, 35.0]) for i in range(1, 5)]  # W10: 4
    recs += [rec(10 + i, f"2026-03-1{i}", "phase1", [90.0, 90.0], mode="reverse") for i in range(6, 9)]  # W12: 3
    recs += [rec(20, "2026-03-10", "phase2-treadmill-first", [200.0], mode="reverse")]
    recs += [rec(21, "2026-03-11", "phase2-treadmill", [300.0], mode="reverse")]
    recs += [rec(30, "2026-03-10", "flat-retro", [0.0], driver="none", work_s=600.0)]
    recs += [rec(31, "2026-03-10", "custom-2x90", [50.0, 50.0], work_s=90.0)]
    rows = {(w.week, w.plan): w for w in progress(recs, date(2026, 3, 20)).adherence}
    assert (rows["2026-W10", "deadmill"].sessions, rows["2026-W10", "deadmill"].verdict) == (4, "above")
    assert (rows["2026-W12", "phase1"].recommended_min, rows["2026-W12", "phase1"].verdict) == (3, "within")
    assert rows["2026-W11", "phase2-treadmill"].sessions == 2  # the first Phase 2 session counts with the rest
    assert (rows["2026-W11", "flat-retro"].recommended_min, rows["2026-W11", "flat-retro"].verdict) == (7, "below")
    assert rows["2026-W11", "custom-2x90"].verdict == "no recommendation"


def test_position_counts_weeks_from_the_first_session_and_suggests_the_phase_plan() -> None:
    first = rec(1, "2026-01-05", "phase1", [150.0, 150.0], mode="reverse")
    assert position([], date(2026, 1, 5)).suggested_plan == "phase1"
    p = position([first], date(2026, 1, 18))
    assert (p.week, p.phase, p.suggested_plan) == (2, 1, "phase1")
    p = position([first], date(2026, 1, 19))
    assert (p.week, p.phase, p.suggested_plan) == (3, 2, "phase2-treadmill-first")
    done = rec(2, "2026-01-20", "phase2-treadmill-first", [280.0], mode="reverse")
    assert position([first, done], date(2026, 1, 21)).suggested_plan == "phase2-treadmill"
    p = position([done, first], date(2026, 2, 9))
    assert (p.week, p.phase, p.suggested_plan, p.started_at) == (6, 3, "phase3-intervals", first.started_at)
