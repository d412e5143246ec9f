"""The controller: one treadmill's runtime.

One task group per treadmill: the driver's sample loop, the safety tick (20 Hz, on monotonic
deadlines, S17), and the session timer. Every sample, device event and request goes to the guard,
which asks the supervisor and carries out its decision; the controller publishes immutable
snapshots on the hub for the faces, and never waits on a face.

Faces call the methods under "for the faces"; they never see the driver.

Two promises the loops keep (issue 10):
- a stop ends the belt's part of a session: any stop that is not the plan's own pauses the session,
  and nothing starts the belt again until a person asks (S9, S10);
- nothing but the process ending stops the loops: history, hub and face errors are caught and
  reported as problems, and a loop that dies anyway latches an ``internal-error`` stop (S5) and
  sets ``failed`` for the composition root to exit on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from types import TracebackType
from typing import Self

from retrotread.daemon.commands import (
    STOP_REASON_MAX,
    AbortCommand,
    Command,
    EStopCommand,
    ExtendCommand,
    InclineCommand,
    Outcome,
    PauseCommand,
    ResetCommand,
    ResumeCommand,
    SessionCommand,
    SkipCommand,
    SpeedCommand,
    StartCommand,
    StopCommand,
)
from retrotread.daemon.cues import CueSettings, go_text, session_done_text, stop_cue
from retrotread.daemon.events import CueKind, EventKind
from retrotread.daemon.history import History, MemoryHistory, TracePoint
from retrotread.daemon.hub import Hub
from retrotread.daemon.plans import PUSH_WAIT_S, Plan
from retrotread.daemon.session import RunningSession, SetStats, fade
from retrotread.daemon.snapshot import (
    BeltView,
    Cue,
    Event,
    SessionView,
    SetOutcome,
    SetResult,
    StateSnapshot,
    StopView,
    Telemetry,
    iso,
)
from retrotread.daemon.timer import Boundary, Phase, SetTimer, TimerCue, TimerError
from retrotread.drivers.base import Driver
from retrotread.drivers.errors import DriverError, StateError
from retrotread.drivers.types import BeltSample, DeviceEvent, DeviceEventKind, DeviceInfo
from retrotread.drivers.units import Speed
from retrotread.safety.guard import Guard
from retrotread.safety.rules import Rule
from retrotread.safety.supervisor import (
    STANDSTILL_MPH,
    Decision,
    EStop,
    Mode,
    Reset,
    SafetyConfig,
    SafetyEvent,
    SetIncline,
    SetSpeed,
    Start,
    Stop,
    Supervisor,
)

log = logging.getLogger(__name__)

TICK_HZ = 20.0  # the safety loop (S17 asks for at least 10)
STATE_HEARTBEAT_S = 5.0  # state is published on change and at least this often
STATE_MIN_INTERVAL_S = 0.5  # ... and at most this often unless something forces it
CHECKPOINT_S = 2.0  # the running set is written to history this often
TRACE_S = 1.0  # the session's trace gets a point this often (history.md: a 1 Hz trace)
SHUTDOWN_STOP_S = 1.0  # S15: the stop on SIGTERM is bounded to this
PLAN_STOPS = frozenset({"set-ended", "session-paused", "session-aborted", "volume-cap"})
"""Reasons of the stops a session makes itself; every other stop pauses the session."""


class SessionError(StateError):
    """A session action that does not fit the current state (HTTP 409)."""

    def __init__(self, message: str, rule: Rule | None = None) -> None:
        super().__init__(message)
        self.rule = rule


class Controller:
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
        self.hub = Hub()
        self.supervisor = Supervisor(self.safety)
        self.guard = Guard(driver, self.supervisor, clock, self._on_safety_events)
        self.session: RunningSession | None = None
        self.ready = asyncio.Event()
        self._poke = asyncio.Event()
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

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self._driver.open()
        try:
            await self.guard.boot()
        except BaseException:
            await self._driver.close()
            raise
        self._runner = asyncio.create_task(self._run(), name=f"controller {self.id}")
        self.ready.set()
        # Idle is a state: the first timer is "no session", so a retained timer an earlier process
        # left ("done, set 3 of 3") is replaced and no face shows it as current (interfaces.md).
        self.hub.publish("timer", SessionView.idle())
        self._publish_state(force=True)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self, reason: str = "shutdown") -> None:
        """Stop the belt (bounded, S15), end the session, stop the tasks, close the driver."""
        if self._closing:
            return
        self._closing = True
        if self.mode is Mode.REVERSE:
            # In deadmill mode there is no belt of ours to stop, and we must not pretend (S13).
            try:
                async with asyncio.timeout(SHUTDOWN_STOP_S):
                    await self.guard.request(EStop(reason, Rule.S15, "process"))
            except TimeoutError:
                log.error("stop on shutdown not handed to the driver within %.1f s", SHUTDOWN_STOP_S)
        if self.session is not None:
            self._end_session("interrupted" if reason == "shutdown" else "aborted")
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self.hub.close()
        await self.guard.aclose()
        await self._driver.close()
        self.history.close()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._supervised("samples", self._sample_loop), name="samples")
            tg.create_task(self._supervised("safety-tick", self._tick_loop), name="safety-tick")
            tg.create_task(self._supervised("set-timer", self._timer_loop), name="set-timer")

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one safety loop; if it dies, stop the belt and say so (S5). The others go on, so
        the stop is still repeated and confirmed while the process exits."""
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of a safety loop must latch a stop
            await self._fail(name, exc)

    async def _fail(self, name: str, exc: BaseException) -> None:
        detail = f"{name} loop failed: {type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        log.critical("INTERNAL ERROR, stopping the belt: %s", detail, exc_info=exc)
        self._problems["internal-error"] = detail
        try:
            async with asyncio.timeout(SHUTDOWN_STOP_S):
                await self.guard.request(EStop("internal-error", Rule.S5, name))
        except Exception:  # the last resort below must still run
            log.critical("the internal-error stop did not go through the guard; writing it directly", exc_info=True)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SHUTDOWN_STOP_S):
                    await self._driver.emergency_stop()
        self.failure = detail
        self.failed.set()

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

    # ------------------------------------------------------------------ loops

    async def _sample_loop(self) -> None:
        try:
            async for update in self._driver.samples():
                if isinstance(update, BeltSample):
                    await self._on_sample(update)
                else:
                    await self._on_device_event(update)
        except DriverError as exc:
            log.error("driver failed: %s", exc)
            await self.guard.device_event(DeviceEvent(self.clock(), DeviceEventKind.DISCONNECTED, str(exc)))
        if not self._closing:
            # The stream ended without us closing it: the device is gone (S9).
            await self.guard.device_event(
                DeviceEvent(self.clock(), DeviceEventKind.DISCONNECTED, "sample stream ended")
            )
            self._publish_state(force=True)

    async def _on_sample(self, sample: BeltSample) -> None:
        await self.guard.observe(sample)
        self._sample = sample
        self.samples_seen += 1
        session = self.session
        if session is not None and session.stats is not None:
            if self._set_running(session, sample.t):
                session.stats.add(sample)
            else:
                # Paused (or past the set's end, before the timer loop ends it): not the set's, and
                # the next sample must not bridge the gap (issue 12: belt pushed in a pause counted).
                session.stats.gap()
        if session is not None and session.push_wait is not None and sample.speed.mph > STANDSTILL_MPH:
            self._push_started(session, sample.t, "on the first push")
        if session is not None and session.start_at_standstill and sample.speed.mph <= STANDSTILL_MPH:
            # The set's start found the belt still coming down from the last stop; now it reads
            # 0, ask once more: the supervisor holds the start for the standstill window (S4).
            session.start_at_standstill = False
            await self._want_belt(session)
        try:
            self._publish_telemetry(sample)
        except Exception as exc:  # publishing never ends the sample loop
            self._contained("publish", exc)

    def _publish_telemetry(self, sample: BeltSample) -> None:
        self._seq += 1
        mph = sample.speed.mph
        self.hub.publish(
            "telemetry",
            Telemetry(
                speed_mph=round(mph, 3) if mph == mph else float("nan"),
                incline_pct=sample.incline_pct,
                distance_m=_round(sample.distance_m, 2),
                ts=iso(self.wall()),
                seq=self._seq,
            ),
        )
        self._publish_state()

    async def _on_device_event(self, event: DeviceEvent) -> None:
        if event.kind is DeviceEventKind.CONNECTED:
            self.reconnects += 1
        await self.guard.device_event(event)
        self._publish_state(force=True)

    async def _tick_loop(self) -> None:
        period = 1.0 / TICK_HZ
        t0 = self.clock()
        k = 0
        while True:
            k += 1
            now = self.clock()
            if t0 + k * period < now:
                k = int((now - t0) / period) + 1  # fell behind: skip ticks, never burst
            await self._sleep(max(0.0, t0 + k * period - self.clock()))
            await self.guard.tick()
            self._check_volume_cap()
            self._check_push()
            self._checkpoint()
            self._trace()
            if self._watchdog is not None and not self.failed.is_set():
                # The systemd watchdog is fed from the safety loop itself (S15). A history fault
                # does not stop it: the belt is safe, and a restart by the watchdog (SIGABRT, no
                # S15 stop) would leave a belt running with nobody watching it.
                try:
                    self._watchdog()
                except Exception as exc:
                    self._contained("watchdog", exc)
            self._publish_state()

    async def _timer_loop(self) -> None:
        while True:
            session = self.session
            if session is not None:
                self._publish_cues(session)  # said by a pause, resume or skip since the last pass
            wake = session.timer.next_wake(self.clock()) if session else None
            self._poke.clear()
            if wake is None:
                await self._poke.wait()
                continue
            delay = wake - self.clock()
            if delay > 0:
                await self._nap(delay)
            session = self.session
            if session is None:
                continue
            for boundary in session.timer.advance(self.clock()):
                await self._on_boundary(session, boundary)
            # After the boundaries: "session complete" counts the last set's distance.
            self._publish_cues(session)
            if self.session is session:
                self._publish_timer()

    def _publish_cues(self, session: RunningSession) -> None:
        """The cues the session's timer said, in order, on the hub as ``cue`` (docs/cues.md)."""
        try:
            for cue in session.timer.take_cues():
                self._publish_cue(session, cue)
        except Exception as exc:  # publishing never ends a loop
            self._contained("publish", exc)

    def _publish_cue(self, session: RunningSession | None, cue: TimerCue, reason: str | None = None) -> None:
        text = cue.text
        if session is not None and cue.kind is CueKind.GO and cue.set_no is not None:
            # The words follow the mode the belt is in, whatever the timer was told.
            text = go_text(cue.set_no, session.plan.sets, self.mode is Mode.REVERSE)
        elif session is not None and cue.kind is CueKind.SESSION_DONE:
            measured = [r.distance_m for r in session.results if r.distance_m is not None]
            # No distance when the session measured nothing (a timer only): never an invented one.
            text = session_done_text(len(session.results), sum(measured) if measured else None)
        self.hub.publish(
            "cue",
            Cue(
                kind=cue.kind,
                text=text,
                set=cue.set_no,
                remaining_s=None if cue.remaining_s is None else round(cue.remaining_s, 1),
                ts=self._wall_at(cue.t),
                session=session.id if session is not None else None,
                reason=reason,
            ),
        )

    async def _nap(self, delay: float) -> None:
        """Until ``delay`` seconds pass (by the injected sleep) or the timer is poked."""
        poke = asyncio.ensure_future(self._poke.wait())
        nap = asyncio.ensure_future(self._sleep(delay))
        try:
            await asyncio.wait((poke, nap), return_when=asyncio.FIRST_COMPLETED)
        finally:
            poke.cancel()
            nap.cancel()
            await asyncio.gather(poke, nap, return_exceptions=True)

    # ------------------------------------------------------------------ safety events

    def _on_safety_events(self, events: tuple[SafetyEvent, ...]) -> None:
        # Called by the guard after the stops went out; an error here must not reach the guard.
        try:
            self._handle_safety_events(events)
        except Exception as exc:
            self._contained("events", exc)

    def _handle_safety_events(self, events: tuple[SafetyEvent, ...]) -> None:
        for ev in events:
            kind = EventKind.spelled(ev.kind)
            reason, detail = ev.reason, ev.detail
            if kind is None:
                # A kind the supervisor added that we do not know yet: published as a fault that
                # names it, never dropped (tests/test_floors.py checks every kind it spells).
                log.error("unknown supervisor event kind %r", ev.kind)
                kind, reason, detail = EventKind.FAULT, ev.kind, f"{ev.reason or ''} {ev.detail}".strip()
            if kind is EventKind.ESTOP and ev.rule is not None:
                self.stops_by_rule[ev.rule.value] = self.stops_by_rule.get(ev.rule.value, 0) + 1
            self._publish_event(
                Event(
                    kind=kind,
                    rule=ev.rule.value if ev.rule else None,
                    reason=reason,
                    detail=detail,
                    ts=self._wall_at(ev.t),
                )
            )
            if kind is EventKind.ESTOP:
                log.warning("EMERGENCY STOP (%s, %s) %s", ev.reason, ev.rule, ev.detail)
                self._cue_stop(ev)
                self._stopped_session = self.session.id if self.session is not None else None
                if self.session is not None:
                    # A latched stop cuts the running set and ends the session.
                    self._end_session("stopped", ev.rule.value if ev.rule else None)
            elif kind is EventKind.STOP and ev.reason not in PLAN_STOPS:
                self._pause_for_stop(ev)
            elif kind is EventKind.START_REFUSED:
                session = self.session
                if session is not None and session.belt_wanted:
                    self._report_refusal(session, ev.rule, ev.detail or ev.reason or "start refused")
            elif kind is EventKind.FAULT:
                log.error("FAULT %s (%s): %s", ev.reason, ev.rule, ev.detail)
        self._publish_state(force=True)

    def _cue_stop(self, ev: SafetyEvent) -> None:
        """Any latched stop is said, with its reason for the screen; first what the session's
        timer said before it, so the cues stay in order."""
        session = self.session
        settings = session.timer.cue_settings if session is not None else CueSettings()
        try:
            if session is not None:
                self._publish_cues(session)
            if settings.on(CueKind.STOP):
                seg = session.timer.current if session is not None else None
                self._publish_cue(session, stop_cue(ev.t, seg.set_no if seg else None), ev.reason)
        except Exception as exc:  # publishing never ends a loop
            self._contained("publish", exc)

    def _pause_for_stop(self, ev: SafetyEvent) -> None:
        """A stop the plan did not make (S10 from the device, a face's stop, a rule) ends the belt's
        part of the session: paused, and nothing starts the belt until a person asks (S9)."""
        session = self.session
        if session is None or self.mode is not Mode.REVERSE:
            return
        session.start_at_standstill = False
        if session.paused_at is not None:
            return
        now = self.clock()
        try:
            session.timer.pause(now, cue=True)
        except TimerError:
            return
        session.paused_at = now
        self._publish_cues(session)
        what = f"{ev.reason} ({ev.rule.value})" if ev.rule else f"{ev.reason}"
        self._publish_event(
            Event(
                kind=EventKind.SESSION_PAUSED,
                rule=ev.rule.value if ev.rule else None,
                reason=ev.reason,
                detail=f"the belt was stopped: {what}; resume to go on",
                ts=self._wall_at(ev.t),
                session=session.id,
            )
        )
        self._poke.set()
        self._publish_timer()

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

    # ------------------------------------------------------------------ sessions

    async def _on_boundary(self, session: RunningSession, b: Boundary) -> None:
        wall = self._wall_at(b.t)
        if b.ended is not None and b.ended.phase is Phase.WORK:
            session.belt_wanted = False
        if b.ended is not None and b.ended.phase is Phase.WORK and session.push_wait is not None:
            # Skipped while it waited for the first push: a set of no work, recorded as skipped.
            session.push_wait = None
            session.stats = SetStats(b.ended.set_no, b.t, self.wall() - (self.clock() - b.t))
        if b.ended is not None and b.ended.phase is Phase.WORK and session.stats is not None:
            # A set the person skipped is never "completed" (issue 12: skipped at 13.8 s of 60 s).
            outcome: SetOutcome = "skipped" if b.cause == "skip" else "completed"
            result = session.stats.result(b.t, self.wall() - (self.clock() - b.t), outcome)
            self._finish_set(session, result)
            if self.mode is Mode.REVERSE and (b.started is None or b.started.phase is not Phase.WORK):
                await self.guard.request(Stop("set-ended"), wait=False)
        if b.started is None:
            self._end_session("completed")
            return
        if b.started.phase is Phase.WORK and session.plan.start == "push":
            # start=push: the set's clock waits for the first belt motion (at most PUSH_WAIT_S),
            # so it measures pushing, not getting into position.
            session.timer.pause(b.t)
            session.push_wait, session.push_set = b.t, b.started.set_no
        elif b.started.phase is Phase.WORK:
            session.stats = SetStats(b.started.set_no, b.t, self.wall() - (self.clock() - b.t))
            self._publish_event(Event(kind=EventKind.SET_STARTED, set=b.started.set_no, ts=wall, session=session.id))
            if self.mode is Mode.REVERSE:
                session.belt_wanted = True
                await self._want_belt(session)
        else:
            session.belt_wanted = False
            session.start_at_standstill = False
        self._publish_timer()

    async def _want_belt(self, session: RunningSession) -> None:
        """A work set wants the belt running: ask the supervisor once.

        Inside the standstill window the supervisor holds the start and carries it out when the
        window completes (S4). If the belt is still coming down from the last set's stop, the
        session asks once more at the first sample that reads 0. Other refusals are reported.
        """
        sup = self.supervisor
        if not session.belt_wanted or session.paused_at is not None or sup.commanded_to_move:
            return
        d = await self.guard.request(Start(session.speed), wait=False)
        refusal = d.refusal
        if refusal is None or self.session is not session:
            return
        last = self._sample
        if refusal.rule is Rule.S4 and last is not None and last.speed.mph > STANDSTILL_MPH:
            session.start_at_standstill = True
            return
        self._report_refusal(session, refusal.rule, refusal.error)

    def _report_refusal(self, session: RunningSession, rule: Rule | None, error: str) -> None:
        if session.refusal_reported:
            return
        session.refusal_reported = True
        seg = session.timer.current
        self._publish_event(
            Event(
                kind=EventKind.SET_REFUSED,
                set=seg.set_no if seg else None,
                rule=rule.value if rule else None,
                reason=error,
                ts=iso(self.wall()),
                session=session.id,
            )
        )

    def _finish_set(self, session: RunningSession, result: SetResult) -> None:
        self.sets_by_outcome[result.outcome] = self.sets_by_outcome.get(result.outcome, 0) + 1
        session.results.append(result)
        session.stats = None
        sid = session.id
        self._record("record_set", lambda: self.history.record_set(sid, result))
        self._publish_event(
            Event(
                kind=EventKind.SET_COMPLETED if result.outcome == "completed" else EventKind.SET_ENDED,
                set=result.set,
                reason=result.outcome,
                ts=result.ended_at,
                session=session.id,
            )
        )

    def _end_session(self, outcome: SetOutcome, rule: str | None = None) -> None:
        session = self.session
        if session is None:
            return
        now = self.clock()
        if outcome != "completed" and not session.timer.finished:
            session.timer.abort(now)
        if session.push_wait is not None:  # cut while it waited for the first push: no work done
            session.push_wait = None
            session.stats = SetStats(session.push_set, now, self.wall())
        if session.stats is not None:
            # A set cut while paused ends where the pause began: paused time is not work (issue 12).
            result = session.stats.result(now, self.wall(), outcome, paused_since=session.paused_at, rule=rule)
            self._finish_set(session, result)
        self._trace(final=True)
        ended_at = iso(self.wall())
        distances, fade_pct = fade(session.results)
        self._record(
            "end",
            lambda: self.history.end(session.id, outcome, ended_at, set_distances_m=distances, fade_pct=fade_pct),
        )
        self.sessions_by_outcome[outcome] = self.sessions_by_outcome.get(outcome, 0) + 1
        self._publish_timer(session)  # the final phase (done or aborted) before the event that ends it
        kind = EventKind.SESSION_COMPLETED if outcome == "completed" else EventKind.SESSION_ENDED
        self._publish_event(Event(kind=kind, reason=outcome, ts=iso(self.wall()), session=session.id))
        self.session = None
        self._poke.set()
        self._publish_state(force=True)

    def _check_volume_cap(self) -> None:
        # In deadmill mode too (issue 12: cap= was silently ignored): the cap is the protocol's limit
        # on work time, and the timer can end the session at it without a belt of ours (S13, S14).
        session = self.session
        if session is None or session.plan.cap_s is None:
            return
        now = self.clock()
        running = 0.0
        if session.stats is not None and session.paused_at is None and not session.timer.paused:
            running = now - session.stats.start_mono - session.stats.paused_s
        if session.belt_time_s + running >= session.plan.cap_s:
            self._publish_event(
                Event(
                    kind=EventKind.VOLUME_CAP,
                    rule=Rule.S14.value,
                    reason="volume-cap",
                    detail=f"{session.plan.cap_s:g} s of belt time reached",
                    ts=iso(self.wall()),
                    session=session.id,
                )
            )
            if self.mode is Mode.REVERSE:
                stop = self.guard.request(Stop("volume-cap", Rule.S14), wait=False)
                self._background(asyncio.get_running_loop().create_task(stop))
            self._end_session("capped")

    def _set_running(self, session: RunningSession, t: float) -> bool:
        """Whether a sample at ``t`` belongs to the running work set: not paused, not past its end."""
        if session.paused_at is not None or session.timer.paused:
            return False
        v = session.timer.view(t)
        return v.phase is Phase.WORK and v.remaining_s > 0

    def _push_started(self, session: RunningSession, t: float, how: str) -> None:
        """start=push: the waiting set begins at ``t`` (the first motion, or the end of the wait)."""
        if session.push_wait is None or session.paused_at is not None:
            return
        waited = max(0.0, t - session.push_wait)
        session.push_wait = None
        session.timer.resume(t)
        session.stats = SetStats(session.push_set, t, self.wall() - (self.clock() - t))
        self._publish_event(
            Event(
                kind=EventKind.SET_STARTED,
                set=session.push_set,
                reason="push",
                detail=f"{how} after {waited:.1f} s",
                ts=self._wall_at(t),
                session=session.id,
            )
        )
        self._poke.set()
        self._publish_timer()

    def _check_push(self) -> None:
        session = self.session
        if session is None or session.push_wait is None or session.paused_at is not None:
            return
        now = self.clock()
        if not session.timer.paused:
            # A resume after a pause during the wait let the timer go: hold it again, wait anew.
            session.timer.pause(now)
            session.push_wait = now
        elif now - session.push_wait >= PUSH_WAIT_S:
            self._push_started(session, now, f"no push within {PUSH_WAIT_S:g} s; started anyway")

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
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ publishing

    @property
    def device(self) -> DeviceInfo | None:
        """The machine's own description (re-read by the driver at each connect), None if it has none."""
        return self._driver.device

    def sample_age(self) -> float | None:
        """Seconds since the last sample (monotonic), or None before the first."""
        return None if self._sample is None else self.clock() - self._sample.t

    def snapshot(self) -> StateSnapshot:
        sup = self.supervisor
        sample = self._sample
        belt = None
        if sample is not None:
            mph = sample.speed.mph
            belt = BeltView(
                speed_mph=round(mph, 3),
                speed_kmh=round(sample.speed.kmh, 3),
                incline_pct=sample.incline_pct,
                distance_m=_round(sample.distance_m, 1),
                moving=mph > STANDSTILL_MPH,
            )
        latch = sup.latch
        stop = StopView(latched=False)
        if latch is not None:
            stop = StopView(latched=True, reason=latch.reason, rule=latch.rule.value, since=self._wall_at(latch.since))
        target = sup.target.mph if sup.target is not None else None
        return StateSnapshot(
            id=self.id,
            mode=self.mode.value,
            driver=self._driver.url,
            connected=sup.link_up and self._driver.connected,
            armed=sup.armed,
            belt=belt,
            target_mph=_round(target, 3),
            envelope_mph=self.safety.envelope.mph if self.mode is Mode.REVERSE else None,
            stop=stop,
            session=self.session_view(),
            ts=iso(self.wall()),
            seq=self._seq,
            device=self.device.to_json() if self.device is not None else None,
        )

    def session_view(self, session: RunningSession | None = None) -> SessionView | None:
        session = session or self.session
        if session is None:
            return None
        v = session.timer.view(self.clock())
        return SessionView(
            id=session.id,
            plan=session.plan.name,
            phase=v.phase,
            set=v.set_no,
            sets=v.sets,
            remaining_s=round(v.remaining_s, 1),
            elapsed_s=round(v.elapsed_s, 1),
            ends_at=self._wall_at(v.ends_at) if v.ends_at is not None else None,
            paused=v.paused,
        )

    def _state_key(self) -> tuple[object, ...]:
        """What makes the published state different; the belt's continuous numbers are coarsened
        because every sample goes out as telemetry anyway."""
        sup = self.supervisor
        sample = self._sample
        belt: tuple[object, ...] = ()
        if sample is not None:
            mph = sample.speed.mph
            dist = sample.distance_m
            belt = (round(mph, 1), mph > STANDSTILL_MPH, sample.incline_pct, None if dist is None else round(dist))
        session = self.session
        seg = session.timer.current if session is not None else None
        timer = (session.id, seg, session.paused_at is not None) if session is not None else None
        return (sup.link_up and self._driver.connected, sup.armed, belt, sup.target, sup.latch, timer)

    def _publish_state(self, force: bool = False) -> None:
        now = self.clock()
        if not force:
            # At most STATE_MIN_INTERVAL_S apart unless forced (a latch, a reconnect, a session's
            # end force it), and only on change or for the heartbeat: the snapshot is not free.
            since = now - self._last_state_at
            if since < STATE_MIN_INTERVAL_S:
                return
            key = self._state_key()
            if key == self._last_state_key and since < STATE_HEARTBEAT_S:
                return
        else:
            key = self._state_key()
        self._seq += 1
        self._last_state_key = key
        self._last_state_at = now
        try:
            self.hub.publish("state", self.snapshot().model_copy(update={"seq": self._seq}))
        except Exception as exc:  # publishing never ends a loop
            self._contained("publish", exc)

    def _publish_timer(self, session: RunningSession | None = None) -> None:
        try:
            view = self.session_view(session)
            if view is not None:
                self.hub.publish("timer", view)
        except Exception as exc:  # publishing never ends a loop
            self._contained("publish", exc)

    # ------------------------------------------------------------------ for the faces

    async def execute(self, command: Command, source: str = "") -> Outcome:
        """Carry out one command of a face (``source`` names the face: http, mqtt, cli).

        The faces' one entry point: every command is answered with an ``Outcome``, a refusal
        naming its rule; a stop is never refused (S5)."""
        try:
            match command:
                case StopCommand():
                    return Outcome.of(await self.stop_belt(source or "stop"))
                case EStopCommand():
                    return Outcome.of(await self.estop(command.reason or "estop", source))
                case StartCommand():
                    return Outcome.of(await self.start_belt(Speed.from_mph(command.speed_mph)))
                case SpeedCommand():
                    return Outcome.of(await self.set_speed(Speed.from_mph(command.speed_mph)))
                case InclineCommand():
                    return Outcome.of(await self.set_incline(command.incline_pct))
                case ResetCommand():
                    return Outcome.of(await self.reset())
                case SessionCommand():
                    speed = Speed.from_mph(command.speed_mph) if command.speed_mph is not None else None
                    return Outcome(session=await self.start_session(command.to_plan(), speed))
                case PauseCommand():
                    return Outcome(session=await self.pause_session())
                case ResumeCommand():
                    return Outcome(session=await self.resume_session())
                case SkipCommand():
                    return Outcome(session=await self.skip_phase())
                case ExtendCommand():
                    return Outcome(session=await self.extend_phase(command.seconds))
                case AbortCommand():
                    return Outcome(session=await self.abort_session())
        except SessionError as exc:
            return Outcome.refused(str(exc), exc.rule)
        raise TypeError(f"no controller method for {type(command).__name__}")

    def driver_stats(self) -> dict[str, int]:
        """The driver's own counters (``Driver.stats()``, name to count) where it keeps them."""
        stats = getattr(self._driver, "stats", None)  # not on every driver yet (issue 11 point 9)
        try:
            if callable(stats):
                counts = stats()
            else:  # until then: the samples the drivers' plausibility gate refused (issue 10)
                bad = getattr(self._driver, "bad_samples", None)
                counts = {"bad_samples": bad} if isinstance(bad, int) else {}
        except Exception as exc:  # a scrape never takes the daemon down
            self._contained("driver stats", exc)
            return {}
        if not isinstance(counts, dict):
            return {}
        return {str(k): int(v) for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)}

    @property
    def session_paused(self) -> bool | None:
        """Whether the running session is paused (None with no session)."""
        return None if self.session is None else self.session.paused_at is not None

    async def start_belt(self, speed: Speed) -> Decision:
        return await self.guard.request(Start(speed))

    async def set_speed(self, speed: Speed) -> Decision:
        return await self.guard.request(SetSpeed(speed))

    async def set_incline(self, incline_pct: float) -> Decision:
        return await self.guard.request(SetIncline(incline_pct))

    async def stop_belt(self, reason: str = "stop") -> Decision:
        return await self.guard.request(Stop(reason))

    async def estop(self, reason: str = "estop", source: str = "", rule: Rule = Rule.S5) -> Decision:
        return await self.guard.request(EStop(reason or "estop", rule, source))

    async def reset(self) -> Decision:
        return await self.guard.request(Reset())

    async def stop_for_signal(self, name: str) -> Outcome:
        """A signal is ending the process: latch the stop first (S15)."""
        return Outcome.of(await self.estop(name.lower(), "process", Rule.S15))

    def note_stop_reason(self, reason: str | None) -> None:
        """The reason of a stop a face latched before it read the body (S5): attached to the
        latch's record as an ``estop_reason`` event; the latch and the wire are not touched."""
        text = "" if not isinstance(reason, str) else "".join(ch if ch.isprintable() else " " for ch in reason)
        text = text.strip()[:STOP_REASON_MAX] or "unreadable"
        latch = self.supervisor.latch
        sid = self.session.id if self.session is not None else self._stopped_session
        event = Event(
            kind=EventKind.ESTOP_REASON,
            rule=latch.rule.value if latch is not None else None,
            reason=text,
            detail=f"latched {self._wall_at(latch.since)}" if latch is not None else "no latch",
            ts=iso(self.wall()),
            session=sid,
        )
        self._publish_event(event)

    async def start_session(self, plan: Plan, speed: Speed | None = None) -> SessionView:
        if self.session is not None:
            raise SessionError(f"session {self.session.id} is running; abort it first")
        if plan.start == "push" and self.mode is not Mode.DEADMILL:
            # Our belt moves only when we start it (S9, S11): there is no push to wait for.
            raise SessionError("start=push is for deadmill mode, where a person pushes the belt")
        sup = self.supervisor
        if self.mode is Mode.REVERSE:
            if sup.latch is not None:
                raise SessionError(f"emergency stop latched ({sup.latch.reason}); reset it first", Rule.S6)
            if not sup.armed:
                raise SessionError(f"reverse mode is not armed: {sup.arm_refusal}", Rule.S3)
            refusal = sup.envelope_refusal(speed or self.session_speed)
            if refusal is not None:
                raise SessionError(refusal.error, refusal.rule)
        now = self.clock()
        try:
            sid = self.history.begin(plan.name, self.mode.value, self._driver.url, plan.sets, iso(self.wall()))
        except Exception as exc:  # a session nobody can record is not started
            self._history_fault(f"begin: {type(exc).__name__}: {exc}")
            raise SessionError(f"history cannot record a session: {exc}") from None
        session = RunningSession(
            sid, plan, SetTimer(plan, now, self.cues), speed or self.session_speed, last_checkpoint=now, started=now
        )
        self.session = session
        self._publish_event(Event(kind=EventKind.SESSION_STARTED, reason=plan.name, ts=iso(self.wall()), session=sid))
        await self._on_boundary(session, session.timer.first())
        self._poke.set()
        self._publish_state(force=True)
        view = self.session_view(session)
        assert view is not None
        return view

    async def session_action(self, action: str) -> SessionView | None:
        """pause, resume, skip or abort, by name (the faces' one entry point)."""
        match action:
            case "pause":
                return await self.pause_session()
            case "resume":
                return await self.resume_session()
            case "skip":
                return await self.skip_phase()
            case "abort":
                return await self.abort_session()
        raise SessionError(f"unknown session action {action!r}; use pause, resume, skip or abort")

    def _require_session(self) -> RunningSession:
        if self.session is None:
            raise SessionError("no session is running")
        return self.session

    async def pause_session(self) -> SessionView:
        session = self._require_session()
        now = self.clock()
        if session.paused_at is None:
            session.timer.pause(now, cue=True)
            session.paused_at = now
            self._publish_cues(session)
            if self.mode is Mode.REVERSE and session.belt_wanted:
                await self.guard.request(Stop("session-paused"))
            self._publish_event(
                Event(kind=EventKind.SESSION_PAUSED, reason="pause", ts=iso(self.wall()), session=session.id)
            )
        return self._after_session_action(session)

    async def resume_session(self) -> SessionView:
        """A person asks to go on: the one thing besides a start that restarts the belt (S9)."""
        session = self._require_session()
        if session.paused_at is not None:
            self._unpause(session)
            session.refusal_reported = False
            await self._want_belt(session)
        return self._after_session_action(session)

    def _unpause(self, session: RunningSession) -> None:
        assert session.paused_at is not None
        if self.mode is Mode.REVERSE and session.belt_wanted and self.supervisor.latch is not None:
            latch = self.supervisor.latch
            raise SessionError(f"emergency stop latched ({latch.reason}); reset it first", Rule.S6)
        now = self.clock()
        session.timer.resume(now, cue=True)
        self._publish_cues(session)
        if session.stats is not None:
            session.stats.paused_s += now - session.paused_at
        session.paused_at = None
        self._publish_event(Event(kind=EventKind.SESSION_RESUMED, ts=iso(self.wall()), session=session.id))

    async def skip_phase(self) -> SessionView | None:
        session = self._require_session()
        if session.paused_at is not None:
            # The skip is what the person asked for: no start for the phase being skipped.
            self._unpause(session)
        try:
            boundaries = session.timer.skip(self.clock())
        except TimerError as exc:
            raise SessionError(str(exc)) from None
        for b in boundaries:
            await self._on_boundary(session, b)
        self._poke.set()
        return self.session_view(session)

    async def extend_phase(self, seconds: float) -> SessionView:
        session = self._require_session()
        try:
            session.timer.extend(self.clock(), seconds)
        except TimerError as exc:
            raise SessionError(str(exc)) from None
        self._publish_event(
            Event(kind=EventKind.SESSION_EXTENDED, detail=f"+{seconds:g} s", ts=iso(self.wall()), session=session.id)
        )
        return self._after_session_action(session)

    async def abort_session(self) -> SessionView | None:
        session = self._require_session()
        if self.mode is Mode.REVERSE:
            await self.guard.request(Stop("session-aborted"))
        self._end_session("aborted")
        return self.session_view(session)

    def _after_session_action(self, session: RunningSession) -> SessionView:
        self._poke.set()
        self._publish_timer()
        self._publish_state(force=True)
        view = self.session_view(session)
        assert view is not None
        return view


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
