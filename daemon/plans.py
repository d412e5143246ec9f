"""Session plans: the presets of program.md and custom plans like ``3x60s/60s``.

Custom grammar: ``SETSxWORK/REST`` with durations as ``60s``, ``2m``, ``1m30s`` or plain seconds,
then optional ``,countdown=10s``, ``,cap=8m`` (a cap on belt time, rule S14) and ``,start=push``
(deadmill: each work set begins at the first belt motion, not when the countdown or rest ends, so
the timer measures pushing, not getting into position; it waits at most ``PUSH_WAIT_S``). Examples:
``3x60s/60s``, ``2x3s/2s,countdown=0s``, ``1x10m/0s``, ``deadmill,start=push``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Literal

from retrotread.drivers.errors import InputError

DEFAULT_COUNTDOWN_S = 5.0  # program.md (ours)
MAX_SETS = 50
MAX_PHASE_S = 4 * 3600.0
MIN_WORK_S = 1.0
MAX_COUNTDOWN_S = 600.0  # a request's countdown (HTTP, MQTT); a plan's text may say more
MAX_EXTEND_S = 600.0  # one "extend" request: a few more minutes, never a new session
PUSH_WAIT_S = 10.0  # start=push: a set waits this long for the first push, then starts anyway and says so
StartOn = Literal["timer", "push"]


class PlanError(InputError):
    """A plan that cannot be run; the message says what is allowed."""


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    sets: int
    work_s: float
    rest_s: float
    countdown_s: float = DEFAULT_COUNTDOWN_S
    cap_s: float | None = None
    """Cap on belt time for the whole session (S14), or None."""
    start: StartOn = "timer"
    """``push``: a work set begins at the first belt motion (deadmill only)."""

    def __post_init__(self) -> None:
        if not 1 <= self.sets <= MAX_SETS:
            raise PlanError(f"sets must be 1..{MAX_SETS}, got {self.sets}")
        for what, value, low in (
            ("work", self.work_s, MIN_WORK_S),
            ("rest", self.rest_s, 0.0),
            ("countdown", self.countdown_s, 0.0),
        ):
            if not (math.isfinite(value) and low <= value <= MAX_PHASE_S):
                raise PlanError(f"{what} must be {low:g}..{MAX_PHASE_S:g} s, got {value!r}")
        if self.cap_s is not None and not (math.isfinite(self.cap_s) and self.cap_s > 0):
            raise PlanError(f"cap must be a positive duration, got {self.cap_s!r}")
        if self.start not in ("timer", "push"):
            raise PlanError(f"start must be timer or push, got {self.start!r}")

    @property
    def total_s(self) -> float:
        return self.countdown_s + self.sets * self.work_s + (self.sets - 1) * self.rest_s

    def describe(self) -> str:
        rest = f"/{_fmt(self.rest_s)}" if self.sets > 1 else ""
        return f"{self.sets}x{_fmt(self.work_s)}{rest}"


PRESETS: dict[str, Plan] = {
    # Level 2 "Deadmill": 3 x 1-minute sets, 2-3 times a week; the 60 s rest is ours.
    "deadmill": Plan("deadmill", 3, 60, 60),
    # Level 1 flat-ground warm-up: 10 minutes continuously.
    "flat-retro": Plan("flat-retro", 1, 600, 0),
    # Phase 1, weeks 1-2: 2 x 120-180 s (default 150 s), rest 120 s of forward walking.
    "phase1": Plan("phase1", 2, 150, 120),
    # Phase 2, first treadmill session: no more than 5 minutes of belt time.
    "phase2-treadmill-first": Plan("phase2-treadmill-first", 1, 300, 0, cap_s=300),
    # Phase 2, weeks 3-5: 300-480 s in 1-2 sets (rest ours), hard cap 8 minutes of belt time.
    "phase2-treadmill": Plan("phase2-treadmill", 2, 240, 120, cap_s=480),
    # Phase 3, week 6+: 8-10 x 60 s reverse intervals inside a forward walk (rest ours).
    "phase3-intervals": Plan("phase3-intervals", 8, 60, 60),
}

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")
_CUSTOM = re.compile(r"^(\d+)x([0-9.hms]+)(?:/([0-9.hms]+))?$")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``1m30s``, ``2m``, ``1h`` → seconds."""
    m = _DURATION.match(text.strip())
    if not text.strip() or m is None or not any(m.groups()):
        raise PlanError(f"duration {text!r}: expected e.g. 60s, 2m, 1m30s")
    h, mins, secs = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mins * 60 + secs


def parse_plan(text: str) -> Plan:
    """A preset name or a custom plan (see the module docstring)."""
    spec = text.strip()
    head, *opts = [p.strip() for p in spec.split(",")]
    if head in PRESETS:
        plan = PRESETS[head]
    else:
        m = _CUSTOM.match(head)
        if m is None:
            names = ", ".join(PRESETS)
            raise PlanError(f"plan {text!r}: expected a preset ({names}) or SETSxWORK/REST like 3x60s/60s")
        sets = int(m.group(1))
        plan = Plan(head, sets, parse_duration(m.group(2)), parse_duration(m.group(3) or "0"))
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or key not in ("countdown", "cap", "start"):
            raise PlanError(f"plan option {opt!r}: expected countdown=DURATION, cap=DURATION or start=push")
        if key == "start":
            if value not in ("timer", "push"):
                raise PlanError(f"plan option {opt!r}: start is push (at the first belt motion) or timer")
            plan = replace(plan, start="push" if value == "push" else "timer")
            continue
        seconds = parse_duration(value)
        plan = replace(plan, countdown_s=seconds) if key == "countdown" else replace(plan, cap_s=seconds)
    return plan


def plan_from(
    plan: str | None = None,
    sets: int | None = None,
    work_s: float | None = None,
    rest_s: float | None = None,
    countdown_s: float | None = None,
) -> Plan:
    """The plan a request names: a preset or custom text, or sets and work seconds (HTTP, MQTT)."""
    if plan is not None:
        return parse_plan(plan)
    if sets is not None and work_s is not None:
        return custom_plan(sets, work_s, rest_s or 0.0, countdown_s)
    raise PlanError("give either 'plan' (a preset or e.g. 3x60s/60s) or 'sets' and 'work_s'")


def custom_plan(
    sets: int, work_s: float, rest_s: float, countdown_s: float | None = None, cap_s: float | None = None
) -> Plan:
    name = f"{sets}x{_fmt(work_s)}/{_fmt(rest_s)}"
    return Plan(name, sets, work_s, rest_s, DEFAULT_COUNTDOWN_S if countdown_s is None else countdown_s, cap_s)


def _fmt(seconds: float) -> str:
    return f"{seconds:g}s"
