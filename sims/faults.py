"""The fault grammar of interfaces.md (``fault=runaway@20,stall@40``) and the one fault engine.

Each fault is a kind and the number of seconds after the simulation starts at which it strikes.
``FaultSchedule`` carries the faults of one device through their lives (pending, struck, cleared)
on an injected clock, applies link faults to a ``LinkFaults`` transport (``sims.link``) and hands
the rest to the device (a ``FaultTarget``). It knows no device: what a fault does to a belt, a
console or a radio is the device's business, not this module's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from retrotread.drivers.errors import ConfigError

# How long the link-level faults last, in seconds, in every simulator: long enough for the daemon
# to see them, short enough for a test.
UNPLUG_S = 2.0
"""``unplug``: the cable is out this long, then back."""
REBOOT_OFFLINE_S = 1.0
"""``reboot``: the device is gone this long while it restarts."""
REBOOT_RESUME_S = 0.3
"""``reboot``: this long after it is back, the device resumes the belt on its own (S11)."""


class FaultKind(Enum):
    RUNAWAY = "runaway"  # the belt accelerates past its command
    STALL = "stall"  # telemetry stops, the belt keeps moving
    UNPLUG = "unplug"  # the link drops (and comes back a little later)
    REBOOT = "reboot"  # the device restarts and resumes the belt on its own
    KEY = "key"  # the safety key is pulled: the motor loses power
    GARBAGE = "garbage"  # corrupt bytes on the link: no valid sample gets through
    IGNORE = "ignore"  # the device stops acknowledging commands
    CONSOLE_STOP = "console-stop"  # someone presses Stop on the console: belt to 0, a device stop (S10)


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    at_s: float


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """Parse ``KIND@SECONDS[,KIND@SECONDS...]``; the error names the bad part and what is allowed."""
    faults: list[Fault] = []
    kinds = ", ".join(k.value for k in FaultKind)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, when = part.partition("@")
        try:
            kind = FaultKind(name)
        except ValueError:
            raise ConfigError(f"fault {part!r}: unknown kind {name!r}; allowed: {kinds}") from None
        try:
            at_s = float(when) if sep else math.nan
        except ValueError:
            at_s = math.nan
        if not (math.isfinite(at_s) and at_s >= 0):
            raise ConfigError(f"fault {part!r}: expected KIND@SECONDS with SECONDS >= 0, e.g. {name}@20")
        faults.append(Fault(kind, at_s))
    return tuple(sorted(faults, key=lambda f: f.at_s))


# -- the engine ------------------------------------------------------------------------------------
#
# One lifecycle for every simulated device: a fault is PENDING until its time comes (or SIGUSR1 brings
# it forward), STRUCK from then, and CLEARED when it ends: ``unplug`` at the replug, ``reboot`` when
# the device has resumed on its own, ``runaway`` or ``key`` when the device says so (a stop, the key
# back in). ``stall``, ``garbage`` and ``ignore`` never clear. The schedule is sans-IO: time is
# passed in (``advance_to(now)``), and ``attach(loop)`` is the only thing that knows asyncio.


class Phase(Enum):
    PENDING = "pending"
    STRUCK = "struck"
    CLEARED = "cleared"


class Recovery(Enum):
    """The steps after a strike that the schedule times, and the device carries out."""

    REPLUG = "replug"  # unplug: the cable is back
    BACK = "back"  # reboot: the device is back, powered and idle
    RESUME = "resume"  # reboot: it resumes the belt on its own (S11); the reboot is over


@dataclass(frozen=True, slots=True)
class FaultTimings:
    unplug_s: float = UNPLUG_S
    reboot_offline_s: float = REBOOT_OFFLINE_S
    reboot_resume_s: float = REBOOT_RESUME_S

    def recoveries(self, kind: FaultKind) -> tuple[tuple[float, Recovery], ...]:
        """(seconds after the strike, step) for ``kind``; the last step clears the fault."""
        if kind is FaultKind.UNPLUG:
            return ((self.unplug_s, Recovery.REPLUG),)
        if kind is FaultKind.REBOOT:
            return (
                (self.reboot_offline_s, Recovery.BACK),
                (self.reboot_offline_s + self.reboot_resume_s, Recovery.RESUME),
            )
        return ()


class FaultTarget(Protocol):
    """What a simulated device does when the schedule strikes (its own physical faults)."""

    def on_fault(self, kind: FaultKind, now: float) -> None:
        """``kind`` strikes now. Link faults have already been applied to the link, if any."""

    def on_recovery(self, step: Recovery, now: float) -> None:
        """A timed step after a strike (the link is already back for ``REPLUG``)."""


class LinkFaults(Protocol):
    """A transport that takes link faults itself (``sims.link.FaultyLink``)."""

    @property
    def kinds(self) -> frozenset[FaultKind]: ...

    def strike(self, kind: FaultKind) -> None: ...

    def replug(self) -> None: ...


@dataclass(slots=True)
class FaultState:
    """One fault of a schedule and where it is in its life."""

    kind: FaultKind
    at_s: float | None
    """Seconds after the start it was scheduled for; ``None`` for a fault struck by hand."""
    phase: Phase = Phase.PENDING
    struck_at: float | None = None
    cleared_at: float | None = None


class FaultSchedule:
    """The faults of one device, parsed once, struck on time, recovered and cleared in one way.

    ``allowed`` are the kinds the device simulates; any other is refused here, with the kinds it has.
    """

    def __init__(
        self,
        faults: Sequence[Fault],
        target: FaultTarget,
        *,
        link: LinkFaults | None = None,
        allowed: frozenset[FaultKind] = frozenset(FaultKind),
        device: str = "device",
        timings: FaultTimings = FaultTimings(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        refused = sorted({f.kind.value for f in faults} - {k.value for k in allowed})
        if refused:
            names = ", ".join(sorted(k.value for k in allowed))
            raise ConfigError(f"the simulated {device} has no fault {refused[0]!r}; allowed: {names}")
        self.faults = tuple(sorted(faults, key=lambda f: f.at_s))
        self.allowed = allowed
        self.device = device
        self.timings = timings
        self.clock = clock
        self._target = target
        self._link = link
        self.states: list[FaultState] = []
        self._steps: list[tuple[float, int, FaultState, Recovery]] = []
        self._seq = 0
        self._t0: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._alarm: asyncio.TimerHandle | None = None

    # -- time ------------------------------------------------------------------------------------

    def start(self, t0: float) -> None:
        """The device is on at ``t0``: every scheduled fault is pending again, nothing is struck."""
        self._t0 = t0
        self.states = [FaultState(f.kind, f.at_s) for f in self.faults]
        self._steps.clear()
        self._rearm()

    def stop(self) -> None:
        """The device is off: nothing more strikes or recovers."""
        self._t0 = None
        self._steps.clear()
        self.detach()

    def next_due(self) -> float | None:
        """The clock time of the next strike or recovery step, if any."""
        due = [s for s in (self._pending_at(st) for st in self.states) if s is not None]
        due += [step[0] for step in self._steps[:1]]
        return min(due, default=None)

    def advance_to(self, now: float) -> None:
        """Strike and recover, in time order, everything due at or before ``now``.

        Each happens at its own due time (what the device is told as ``now``), so a late call still
        replugs before a later fault strikes and times recoveries from the strike, not the call.
        """
        while (due := self.next_due()) is not None and due <= now:
            pending = [st for st in self.states if self._pending_at(st) == due]
            if pending:
                self._strike(pending[0], due)
            else:
                _, _, state, step = self._steps.pop(0)
                self._recover(state, step, due)
        self._rearm()

    # -- by hand ---------------------------------------------------------------------------------

    def strike(self, kind: FaultKind, now: float | None = None) -> None:
        """Make ``kind`` happen now (tests, demos), with the same lifecycle as a scheduled one."""
        if kind not in self.allowed:
            raise ValueError(f"the simulated {self.device} has no fault {kind.value!r}")
        state = FaultState(kind, None)
        self.states.append(state)
        self._strike(state, self.clock() if now is None else now)
        self._rearm()

    def strike_next(self, now: float | None = None) -> FaultKind | None:
        """Bring the next pending fault forward to now (SIGUSR1 of ``retrotread sim-device``)."""
        pending = sorted((st for st in self.states if st.phase is Phase.PENDING), key=lambda st: st.at_s or 0.0)
        if self._t0 is None or not pending:
            return None
        self._strike(pending[0], self.clock() if now is None else now)
        self._rearm()
        return pending[0].kind

    def clear(self, kind: FaultKind, now: float | None = None) -> None:
        """The device ended every struck ``kind`` (a stop ends a runaway; the key goes back in)."""
        for state in self.states:
            if state.kind is kind and state.phase is Phase.STRUCK:
                state.phase, state.cleared_at = Phase.CLEARED, self.clock() if now is None else now

    def active(self, kind: FaultKind) -> bool:
        """Whether a ``kind`` is struck and not cleared."""
        return any(st.kind is kind and st.phase is Phase.STRUCK for st in self.states)

    @property
    def struck(self) -> frozenset[FaultKind]:
        return frozenset(st.kind for st in self.states if st.phase is Phase.STRUCK)

    # -- on an event loop ------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Strike and recover on ``loop`` at the right times, until ``stop()`` or ``detach()``."""
        self._loop = loop
        self._rearm()

    def detach(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm = self._loop = None

    def _rearm(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        due = self.next_due()
        if self._loop is not None and due is not None:
            self._alarm = self._loop.call_later(max(0.0, due - self.clock()), self._ring)

    def _ring(self) -> None:
        self._alarm = None
        self.advance_to(self.clock())

    # -- the lifecycle ---------------------------------------------------------------------------

    def _pending_at(self, state: FaultState) -> float | None:
        if state.phase is not Phase.PENDING or state.at_s is None or self._t0 is None:
            return None
        return self._t0 + state.at_s

    def _strike(self, state: FaultState, now: float) -> None:
        state.phase, state.struck_at = Phase.STRUCK, now
        for delay, step in self.timings.recoveries(state.kind):
            self._seq += 1
            self._steps.append((now + delay, self._seq, state, step))
        self._steps.sort(key=lambda s: (s[0], s[1]))
        if self._link is not None and state.kind in self._link.kinds:
            self._link.strike(state.kind)
        self._target.on_fault(state.kind, now)

    def _recover(self, state: FaultState, step: Recovery, now: float) -> None:
        if step is Recovery.REPLUG and self._link is not None:
            self._link.replug()
        if not any(s[2] is state for s in self._steps):
            state.phase, state.cleared_at = Phase.CLEARED, now
        self._target.on_recovery(step, now)
