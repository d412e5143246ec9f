"""What every job of the controller shares: its state, its health and its writes to the history.

``Controller`` (``daemon/controller.py``) is one class the faces use, built from one job per module,
each a layer over the one below it:

```
ControllerBase         daemon/controller_base.py   state; problems; events, trace, checkpoints to history
  StateViews           daemon/views.py             the snapshot, the session view, state and timer publishing
    SessionOrchestration daemon/orchestration.py   sessions: start/pause/resume/skip/extend/abort, sets, cues
      RuntimeLoops     daemon/loops.py             the task group: samples, the safety evaluation, the set timer
        Controller     daemon/controller.py        lifecycle and the faces' commands
```

Only ``Controller`` is public; the layers are the controller's own, never a face's (tests/test_floors.py).
Everything here is synchronous and never raises into a loop: a history or publishing error is
contained and shown as a problem (issue 10).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from retrotread.daemon.cues import CueSettings
from retrotread.daemon.deadline import Deadline
from retrotread.daemon.events import EventKind
from retrotread.daemon.history import History, MemoryHistory, TracePoint
from retrotread.daemon.hub import Hub
from retrotread.daemon.session import RunningSession
from retrotread.daemon.snapshot import Event, iso
from retrotread.drivers.base import Driver
from retrotread.drivers.errors import StateError
from retrotread.drivers.types import BeltSample
from retrotread.drivers.units import Speed
from retrotread.safety.guard import Guard
from retrotread.safety.rules import Rule
from retrotread.safety.supervisor import Decision, Mode, SafetyConfig, SafetyEvent, Supervisor

# One logger for the one controller, whichever module of it writes the line.
log = logging.getLogger("retrotread.daemon.controller")

CHECKPOINT_S = 2.0  # the running set is written to history this often
TRACE_S = 1.0  # the session's trace gets a point this often (history.md: a 1 Hz trace)


class SessionError(StateError):
    """A session action that does not fit the current state (HTTP 409)."""

    def __init__(self, message: str, rule: Rule | None = None) -> None:
        super().__init__(message)
        self.rule = rule


class ControllerBase:
    """The controller's state and the helpers every job uses; see the module docstring."""

    def __init__(
        self,
        driver: Driver,
        *,
        treadmill_id: str = "treadmill",
        safety: SafetyConfig | None = None,
        session_speed: Speed | None = None,
        history: History | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        watchdog: Callable[[], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cues: CueSettings | None = None,
    ) -> None:
        self.id = treadmill_id
        self._driver = driver
        self.safety = safety or SafetyConfig()
        self.mode = self.safety.mode
        # Which cues each session's timer says (the [cues] settings); the words follow the mode.
        self.cues = replace(cues or CueSettings(), reverse=self.mode is Mode.REVERSE)
        self.session_speed = session_speed or Speed.from_mph(1.0)
        self.history: History = history or MemoryHistory()
        self.clock = clock
        self.wall = wall
        self._watchdog = watchdog
        self._sleep = sleep  # the loops' naps; tests pass one that follows their clock
        # The safety evaluation's deadline (daemon/loops.py): on the loop's own timers in real
        # time, so moving it costs no wake-up; on the test's sleep when a test drives the time.
        self._deadline = Deadline(clock, None if sleep is asyncio.sleep else sleep)
        self._evaluated_at = -math.inf
        self._evaluated_on_sample = False
        self.evaluations = 0
        """How many times the safety evaluation ran (on a sample or on its deadline)."""
        self.hub = Hub()
        self.supervisor = Supervisor(self.safety)
        self.guard = Guard(driver, self.supervisor, clock, self._on_safety_events)
        self.session: RunningSession | None = None
        self.ready = asyncio.Event()
        self._poke = asyncio.Event()  # wakes the set timer: a session action moved its deadlines
        self._runner: asyncio.Task[None] | None = None
        self._seq = 0
        self._last_state_key: object = None
        self._last_state_at = -1e9
        self._sample: BeltSample | None = None
        self.samples_seen = 0
        self.reconnects = 0
        self.sessions_by_outcome: dict[str, int] = {}
        self.sets_by_outcome: dict[str, int] = {}
        self.stops_by_rule: dict[str, int] = {}
        self.started_mono = clock()
        self._closing = False
        self._tasks: set[asyncio.Task[Decision]] = set()
        self._problems: dict[str, str] = {}
        self._stopped_session: int | None = None  # the session the newest latch ended
        self.failed = asyncio.Event()
        """Set when a safety-loop task ended unexpectedly (after its stop went out): exit non-zero."""
        self.failure: str | None = None
        """One line that says what failed, once ``failed`` is set."""
        self._listen_to(self.history)

    def _on_safety_events(self, events: tuple[SafetyEvent, ...]) -> None:
        """The supervisor's events, handed over by the guard once their stops went out."""
        raise NotImplementedError  # RuntimeLoops reacts to them

    def attach_history(self, history: History) -> None:
        """Use ``history`` from now on (the composition root opens it after the S15 stop went out).
        Refused while a session runs: its sets would be split over two stores."""
        if self.session is not None:
            raise SessionError(f"session {self.session.id} is running; history cannot change under it")
        old, self.history = self.history, history
        self._listen_to(history)
        if old is not history:
            old.close()

    def _listen_to(self, history: History) -> None:
        # The agreed interface: the history reports its own write faults (on the loop's thread).
        set_listener = getattr(history, "set_listener", None)
        if callable(set_listener):
            set_listener(self._history_fault, self._history_ok)

    # ------------------------------------------------------------------ problems

    @property
    def problems(self) -> tuple[str, ...]:
        """What is wrong with the daemon right now (empty when healthy): ``/healthz`` answers 503."""
        return tuple(self._problems.values())

    def _history_fault(self, detail: str) -> None:
        """History writes are failing (the history's listener, or a call of ours that raised)."""
        first = "history" not in self._problems
        self._problems["history"] = f"history: {detail}"[:300]
        if not first:
            return
        # Loud, but the belt is safe: the safety loop goes on and the watchdog is still fed (S15).
        log.error("HISTORY FAULT: %s; sets are not being saved", detail)
        self._publish_event(
            Event(kind=EventKind.FAULT, reason="history", detail=detail[:300], ts=iso(self.wall())), record=False
        )

    def _history_ok(self) -> None:
        if self._problems.pop("history", None) is not None:
            log.warning("history writes work again")
            self._publish_event(
                Event(kind=EventKind.FAULT_CLEARED, reason="history", ts=iso(self.wall())), record=False
            )

    def _record(self, what: str, call: Callable[[], object]) -> None:
        """A history write that must never take a loop down with it."""
        try:
            call()
        except Exception as exc:  # any storage error (sqlite3, OSError, ...) is a fault
            self._history_fault(f"{what}: {type(exc).__name__}: {exc}")

    def _contained(self, what: str, exc: Exception) -> None:
        """An error outside the safety path (publishing): logged, shown as a problem, survived."""
        if what not in self._problems:
            log.error("%s failed, the safety loop goes on: %s", what, exc, exc_info=exc)
        self._problems[what] = f"{what}: {type(exc).__name__}: {exc}"[:300]

    # ------------------------------------------------------------------ events and history

    def _publish_event(self, event: Event, *, record: bool = True) -> None:
        if self.session is not None and event.session is None:
            event = event.model_copy(update={"session": self.session.id})
        try:
            self.hub.publish("event", event)
        except Exception as exc:  # publishing never ends a loop
            self._contained("publish", exc)
        sid = event.session
        if record and sid is not None:
            self._record("record_event", lambda: self.history.record_event(sid, event))

    def _wall_at(self, mono: float) -> str:
        return iso(self.wall() - (self.clock() - mono))

    def _trace(self, *, final: bool = False) -> None:
        """One point of the session's 1 Hz trace: the latest sample, None fields when it is stale or
        there is none (a stale sample is no reading, and nothing is invented). ``final``: the point
        at the session's end, whatever the second, so the trace's distance is the sets' distance."""
        session, now = self.session, self.clock()
        if session is None or (not final and now - session.last_trace < TRACE_S):
            return
        session.last_trace = now
        at = now
        if final and session.results:
            # The last point belongs to the last set: stamped at its end, not at the moment the
            # loop got round to ending the session (a few ms later, outside the set).
            at = min(now, session.results[-1].ended_mono)
        s = self._sample
        fresh = s is not None and now - s.t <= 2 * TRACE_S
        mph = s.speed.mph if fresh and s is not None else None
        if mph is not None and mph != mph:  # NaN: no reading
            mph = None
        done = session.distance_done_m()
        point = TracePoint(
            t_s=round(at - session.started, 3),
            ts=self.wall() - (now - at),
            speed_mph=None if mph is None else round(mph, 3),
            distance_m=round(done, 2) if mph is not None and done is not None else None,
            incline_pct=s.incline_pct if fresh and s is not None else None,
        )
        sid = session.id
        self._record("trace", lambda: self.history.trace(sid, point))

    def _checkpoint(self) -> None:
        """The running set, written every CHECKPOINT_S: a crash loses at most that much of it."""
        session = self.session
        now = self.clock()
        if session is None or session.stats is None or now - session.last_checkpoint < CHECKPOINT_S:
            return
        session.last_checkpoint = now
        paused = session.paused_at is not None
        stats = session.stats
        end = session.paused_at if paused and session.paused_at is not None else now
        result = stats.result(end, self.wall() - (now - end), "interrupted")
        self._record("checkpoint", lambda: self.history.checkpoint(session.id, result))

    def _background(self, task: asyncio.Task[Decision]) -> None:
        """Keep a fire-and-forget task alive until it is done."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def round_or_none(value: float | None, digits: int) -> float | None:
    """A reading rounded for the wire; a missing one stays missing (never a 0)."""
    return None if value is None else round(value, digits)
