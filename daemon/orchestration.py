"""Sessions: what a person asks of one (start, pause, resume, skip, extend, abort) and its own course.

``SessionOrchestration`` carries a running session through its timer's boundaries: a work set asks
for the belt (reverse mode) or waits for the first push (``start=push``, deadmill), a set's end
records its result, the volume cap (S14) ends the session, and the cues the timer says go out in
order. It also holds the session's part of a stop: a latched stop ends the session, any other stop
that is not the plan's own pauses it, and nothing starts the belt again until a person asks
(S9, S10, issue 10).

Everything here runs on the loop's thread, called by the faces (through ``Controller``) or by the
runtime loops (``daemon/loops.py``); nothing here waits on a slow device (``wait=False``).
"""

from __future__ import annotations

import asyncio

from retrotread.daemon.controller_base import SessionError
from retrotread.daemon.cues import CueSettings, go_text, session_done_text, stop_cue
from retrotread.daemon.events import CueKind, EventKind, rule_name
from retrotread.daemon.plans import PUSH_WAIT_S, Plan
from retrotread.daemon.session import RunningSession, SetStats, fade
from retrotread.daemon.snapshot import Cue, Event, SessionView, SetOutcome, SetResult, iso
from retrotread.daemon.timer import Boundary, Phase, SetTimer, TimerCue, TimerError
from retrotread.daemon.views import StateViews
from retrotread.drivers.units import Speed
from retrotread.safety.rules import Rule
from retrotread.safety.supervisor import STANDSTILL_MPH, Mode, SafetyEvent, Start, Stop


class SessionOrchestration(StateViews):
    """The session actions the faces call, and the session's boundaries, sets, cues and end."""

    # ------------------------------------------------------------------ for the faces

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

    # ------------------------------------------------------------------ the session's course

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
                rule=rule_name(rule),
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
                    rule=rule_name(Rule.S14),
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

    # ------------------------------------------------------------------ cues and stops

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
        what = f"{ev.reason} ({rule_name(ev.rule)})" if ev.rule else f"{ev.reason}"
        self._publish_event(
            Event(
                kind=EventKind.SESSION_PAUSED,
                rule=rule_name(ev.rule),
                reason=ev.reason,
                detail=f"the belt was stopped: {what}; resume to go on",
                ts=self._wall_at(ev.t),
                session=session.id,
            )
        )
        self._poke.set()
        self._publish_timer()
