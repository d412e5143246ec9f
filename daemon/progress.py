"""Progress, from stored records only (history.md "Progress, as a picture"; program.md "Sessions a week").

Pure functions: records in, a ``Progress`` out (the ``GET /api/v1/progress`` body). Three answers:

- deadmill strength: the distance of each 1-minute deadmill set over the weeks, and each session's
  fade (its last completed set against its first, in percent; negative is weaker at the end);
- adherence: sessions per ISO week per plan against the program's recommendation;
- where the person is in the program (week and phase counted from the first session) and the plan
  the program suggests next. A suggestion, never a rule: nothing here is enforced.

Nothing is invented: a set without a measured distance (timer-only) is not a strength point, and
a session from a simulator is marked ``simulated`` so the picture can set it apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

from pydantic import BaseModel, ConfigDict

from retrotread.daemon.snapshot import SessionRecord

# program.md, "Sessions a week": (fewest, most) a week. Phase 3 intervals 2-3, flat-ground daily.
RECOMMENDED: dict[str, tuple[int, int]] = {
    "deadmill": (2, 3),
    "flat-retro": (7, 7),
    "phase1": (3, 4),
    "phase2-treadmill-first": (3, 4),
    "phase2-treadmill": (3, 4),
    "phase3-intervals": (2, 3),
}
# Phase 2's two plans count as one for the recommendation (the first session is one of the 3-4).
_GROUP = {"phase2-treadmill-first": "phase2-treadmill"}
MINUTE_SET_S = (50.0, 70.0)  # a "1-minute set": the deadmill preset's 60 s, give or take a pause's rounding
SIM_SCHEMES = ("sim://", "ftms+sim://")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class StrengthPoint(_Frozen):
    session: int
    started_at: str
    week: str  # ISO week, 2026-W07
    set_distances_m: tuple[float, ...]  # the session's completed 1-minute sets, in order
    fade_pct: float | None  # (last - first) / first * 100; None with fewer than two sets or a first of 0
    simulated: bool


class WeekAdherence(_Frozen):
    week: str
    plan: str
    sessions: int
    recommended_min: int | None  # None: a custom plan, which the program says nothing about
    recommended_max: int | None
    verdict: str  # "below", "within", "above" or "no recommendation"


class ProgramPosition(_Frozen):
    started_at: str | None  # the first session of the program; None before any
    week: int | None  # 1 in the first seven days
    phase: int | None  # 1 (weeks 1-2), 2 (weeks 3-5), 3 (week 6+)
    suggested_plan: str
    why: str


class Progress(_Frozen):
    strength: tuple[StrengthPoint, ...]
    adherence: tuple[WeekAdherence, ...]
    position: ProgramPosition


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def iso_week(iso: str) -> str:
    year, week, _ = _when(iso).isocalendar()
    return f"{year}-W{week:02d}"


def _simulated(r: SessionRecord) -> bool:
    return r.simulated


def strength(records: Iterable[SessionRecord]) -> list[StrengthPoint]:
    """Deadmill sessions with at least one measured, completed 1-minute set, oldest first."""
    points = []
    for r in sorted(records, key=lambda r: (r.started_at, r.id)):
        if r.mode != "deadmill":
            continue
        sets = sorted(r.sets, key=lambda s: s.set)
        if not any((s.distance_m or 0.0) > 0 or (s.max_mph or 0.0) > 0 for s in sets):
            continue  # timer-only (or a belt that never moved): no distance to show, none invented
        lo, hi = MINUTE_SET_S
        dist = tuple(
            s.distance_m for s in sets if s.outcome == "completed" and s.distance_m is not None and lo <= s.work_s <= hi
        )
        if not dist:
            continue
        fade = (dist[-1] - dist[0]) / dist[0] * 100 if len(dist) >= 2 and dist[0] > 0 else None
        points.append(
            StrengthPoint(
                session=r.id,
                started_at=r.started_at,
                week=iso_week(r.started_at),
                set_distances_m=dist,
                fade_pct=None if fade is None else round(fade, 1),
                simulated=_simulated(r),
            )
        )
    return points


def adherence(records: Iterable[SessionRecord]) -> list[WeekAdherence]:
    """Sessions per ISO week per plan (Phase 2's two plans as one), oldest week first."""
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        if not any(s.work_s > 0 for s in r.sets):
            continue  # a session that never ran a second of work is not a session done
        key = (iso_week(r.started_at), _GROUP.get(r.plan, r.plan))
        counts[key] = counts.get(key, 0) + 1
    out = []
    for (week, plan), n in sorted(counts.items()):
        rec = RECOMMENDED.get(plan)
        if rec is None:
            verdict = "no recommendation"
        else:
            verdict = "below" if n < rec[0] else "above" if n > rec[1] else "within"
        out.append(
            WeekAdherence(
                week=week,
                plan=plan,
                sessions=n,
                recommended_min=rec[0] if rec else None,
                recommended_max=rec[1] if rec else None,
                verdict=verdict,
            )
        )
    return out


def phase_of(week: int) -> int:
    return 1 if week <= 2 else 2 if week <= 5 else 3


def position(records: Iterable[SessionRecord], today: date) -> ProgramPosition:
    """Week and phase from the first session; the plan the program suggests next (program.md presets)."""
    recs = sorted(records, key=lambda r: (r.started_at, r.id))
    if not recs:
        return ProgramPosition(
            started_at=None,
            week=None,
            phase=None,
            suggested_plan="phase1",
            why="no session yet: the program begins with Phase 1 (2 sets of 2-3 minutes)",
        )
    first = recs[0].started_at
    week = max(0, (today - _when(first).astimezone(UTC).date()).days) // 7 + 1
    phase = phase_of(week)
    if phase == 1:
        plan, why = "phase1", f"week {week}: Phase 1 (weeks 1-2), 3-4 sessions a week"
    elif phase == 2:
        done_first = any(r.plan == "phase2-treadmill-first" and r.outcome == "completed" for r in recs)
        if done_first:
            plan, why = "phase2-treadmill", f"week {week}: Phase 2 (weeks 3-5), 5-8 minutes on the treadmill"
        else:
            plan, why = "phase2-treadmill-first", f"week {week}: Phase 2 begins with one session of at most 5 minutes"
    else:
        plan, why = "phase3-intervals", f"week {week}: Phase 3 (week 6 on), reverse intervals, 2-3 a week"
    return ProgramPosition(started_at=first, week=week, phase=phase, suggested_plan=plan, why=why)


def progress(records: Iterable[SessionRecord], today: date) -> Progress:
    recs = list(records)
    return Progress(strength=tuple(strength(recs)), adherence=tuple(adherence(recs)), position=position(recs, today))
