"""The controller: one treadmill's runtime, and the one class every face uses.

``Controller`` is built from one job per module (the layers are drawn in
``daemon/controller_base.py``): the runtime loops (``daemon/loops.py``), sessions
(``daemon/orchestration.py``) and the state the faces read (``daemon/views.py``). This module holds
what a face calls: the lifecycle (open, the S15 stop on close) and the commands. Every sample,
device event and request goes to the guard, which asks the supervisor and carries out its
decision; the controller publishes immutable snapshots on the hub for the faces, and never waits on
a face. Faces call the methods below; they never see the driver nor any private state
(tests/test_floors.py).

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
from retrotread.daemon.controller_base import SessionError, log
from retrotread.daemon.events import EventKind, rule_name
from retrotread.daemon.loops import SHUTDOWN_STOP_S, RuntimeLoops
from retrotread.daemon.snapshot import Event, SessionView, iso
from retrotread.drivers.units import Speed
from retrotread.safety.rules import Rule
from retrotread.safety.supervisor import Decision, EStop, Mode, Reset, SetIncline, SetSpeed, Start, Stop

__all__ = ["Controller", "SessionError"]


class Controller(RuntimeLoops):
    """One treadmill: ``async with Controller(driver, ...)``, then ``execute`` the faces' commands."""

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
                    return Outcome.of(await self.set_speed(command.speed))
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
            rule=rule_name(latch.rule) if latch is not None else None,
            reason=text,
            detail=f"latched {self._wall_at(latch.since)}" if latch is not None else "no latch",
            ts=iso(self.wall()),
            session=sid,
        )
        self._publish_event(event)
