"""The controller's runtime: one task group per treadmill, and what keeps it safe when a part fails.

Three supervised loops (architecture.md):

- **samples**: every sample and device event from the driver goes to the guard (the supervisor's
  rules about samples: S7's runaway, S11, S15), then to the running set and out as telemetry; and
  each sample is followed at once by the **safety evaluation** (the supervisor's time rules, the
  volume cap, the push wait, the history's checkpoint and trace, the systemd watchdog);
- **safety-tick**: the deadline timer. It evaluates only when no sample did in time: at most
  TICK_DEADLINE_S after the last evaluation (S17: >= 10 Hz on the monotonic clock), then every
  TICK_ALONE_S while samples stay away (the 20 Hz of the tick it replaces, so S8's stale, S5's
  confirmation and S9 resolve as soon as before), and on the deadline of a stop's repeat (S5).
  With samples on time it never wakes: the daemon wakes once per sample, not twice (issue 16);
- **set-timer**: the session's boundaries, on the timer's own deadlines.

Nothing but the process ending stops the loops: a loop that dies latches an ``internal-error`` stop
(S5) and sets ``failed`` for the composition root to exit on; the others go on, so the stop is still
repeated and confirmed while the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from retrotread.daemon.controller_base import log, round_or_none
from retrotread.daemon.deadline import EARLY_S
from retrotread.daemon.events import EventKind, event_fields
from retrotread.daemon.orchestration import SessionOrchestration
from retrotread.daemon.snapshot import Event, Telemetry, iso
from retrotread.drivers.errors import DriverError
from retrotread.drivers.types import BeltSample, DeviceEvent, DeviceEventKind
from retrotread.safety.rules import Rule
from retrotread.safety.supervisor import STANDSTILL_MPH, STOP_REPEAT_S, EStop, SafetyEvent

TICK_DEADLINE_S = 0.1  # S17: the supervisor is evaluated at least this often, samples or not
TICK_ALONE_S = 0.05  # ... and this often once a sample was late (the old 20 Hz tick)
SHUTDOWN_STOP_S = 1.0  # S15: the stop on SIGTERM is bounded to this
PLAN_STOPS = frozenset({"set-ended", "session-paused", "session-aborted", "volume-cap"})
"""Reasons of the stops a session makes itself; every other stop pauses the session."""


class RuntimeLoops(SessionOrchestration):
    """The task group, the loops in it, the safety evaluation, and the reactions to the supervisor."""

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

    # ------------------------------------------------------------------ samples

    async def _sample_loop(self) -> None:
        try:
            async for update in self._driver.samples():
                if isinstance(update, BeltSample):
                    await self._on_sample(update)
                    await self._evaluate(on_sample=True)
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
                distance_m=round_or_none(sample.distance_m, 2),
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

    # ------------------------------------------------------------------ the safety evaluation

    async def _evaluate(self, *, on_sample: bool) -> None:
        """One pass of the safety loop: the supervisor's time rules, then the session's and the
        history's periodic work, the watchdog, the heartbeat. Then the deadline moves on."""
        self.evaluations += 1
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
        self._evaluated_at = self.clock()
        self._evaluated_on_sample = on_sample
        self._deadline.arm(self._next_evaluation())

    def _next_evaluation(self) -> float:
        """When the deadline timer evaluates if no sample does first (see the module docstring)."""
        last = self._evaluated_at
        due = last + (TICK_DEADLINE_S if self._evaluated_on_sample else TICK_ALONE_S)
        sent = self.guard.last_stop_sent_at
        if sent is not None and last + EARLY_S < sent + STOP_REPEAT_S < due:
            # A stop is repeated every STOP_REPEAT_S until the belt reads 0: on its deadline (S5),
            # not at the next sample. Once the belt is still, this is one evaluation for nothing.
            # (Past EARLY_S only: a due the evaluation just met must not be met again at once.)
            due = sent + STOP_REPEAT_S
        rule_due = self.guard.supervisor.next_due(last)
        if rule_due is not None and last + EARLY_S < rule_due < due:
            # A rule's own time (S7's no-response, S8's stale, S4's ramp and hold, S5's confirm):
            # met on it, not at the next sample, so no rule is slower than with the 20 Hz tick.
            due = rule_due
        return due

    async def _tick_loop(self) -> None:
        """The deadline timer: an evaluation whenever none came with a sample in time (S17)."""
        while True:
            self._deadline.arm(self._next_evaluation())
            await self._deadline.wait()
            await self._evaluate(on_sample=False)

    # ------------------------------------------------------------------ the set timer

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

    # ------------------------------------------------------------------ the supervisor's events

    def _on_safety_events(self, events: tuple[SafetyEvent, ...]) -> None:
        # Called by the guard after the stops went out; an error here must not reach the guard.
        try:
            self._handle_safety_events(events)
        except Exception as exc:
            self._contained("events", exc)

    def _handle_safety_events(self, events: tuple[SafetyEvent, ...]) -> None:
        for ev in events:
            fields = event_fields(ev)
            kind = fields["kind"]
            if kind is EventKind.ESTOP and ev.rule is not None:
                self.stops_by_rule[ev.rule.value] = self.stops_by_rule.get(ev.rule.value, 0) + 1
            self._publish_event(Event(**fields, ts=self._wall_at(ev.t)))
            if kind is EventKind.ESTOP:
                log.warning("EMERGENCY STOP (%s, %s) %s", ev.reason, ev.rule, ev.detail)
                self._cue_stop(ev)
                self._stopped_session = self.session.id if self.session is not None else None
                if self.session is not None:
                    # A latched stop cuts the running set and ends the session.
                    self._end_session("stopped", fields["rule"])
            elif kind is EventKind.STOP and ev.reason not in PLAN_STOPS:
                self._pause_for_stop(ev)
            elif kind is EventKind.START_REFUSED:
                session = self.session
                if session is not None and session.belt_wanted:
                    self._report_refusal(session, ev.rule, ev.detail or ev.reason or "start refused")
            elif kind is EventKind.FAULT:
                log.error("FAULT %s (%s): %s", ev.reason, ev.rule, ev.detail)
        self._publish_state(force=True)
