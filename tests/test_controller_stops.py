"""The controller keeps the belt safe (issue 10): a stop ends the belt's part of a session, the
S4 hold, and a safety loop that nothing but the process ending can stop.

In process, on the simulated belt (``sim://motorized``), with the real supervisor and guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

from helpers import wait_until

from retrotread.daemon.controller import Controller
from retrotread.daemon.history import MemoryHistory
from retrotread.daemon.hub import Subscription
from retrotread.daemon.plans import parse_plan
from retrotread.daemon.snapshot import Event, SetResult
from retrotread.drivers import Speed
from retrotread.drivers.types import Update
from retrotread.safety import Mode, Rule, SafetyConfig
from retrotread.sims.driver import SimBeltDriver
from retrotread.sims.faults import parse_faults


@contextlib.asynccontextmanager
async def running(
    driver: SimBeltDriver | None = None, history: Any = None
) -> AsyncIterator[tuple[Controller, Subscription, list[Event]]]:
    """A controller, a subscription to wait on, and every event it publishes (collected as they come)."""
    drv = driver or SimBeltDriver(motorized=True, rate_hz=50)
    async with Controller(drv, treadmill_id="t", safety=SafetyConfig(mode=Mode.REVERSE), history=history) as c:
        events: list[Event] = []
        sub = c.hub.subscribe(maxsize=100_000)
        c.hub.publish = _tap(c.hub.publish, events)  # type: ignore[method-assign]
        yield c, sub, events


def _tap(publish: Callable[[str, Any], None], into: list[Event]) -> Callable[[str, Any], None]:
    def tapped(kind: str, payload: Any) -> None:
        if kind == "event":
            into.append(payload)
        publish(kind, payload)

    return tapped


def sim(c: Controller) -> SimBeltDriver:
    drv = c._driver  # the test reads what the simulated device was told
    assert isinstance(drv, SimBeltDriver)
    return drv


def starts(c: Controller) -> list[float]:
    return [t for t, kind, _ in sim(c).commands if kind == "start"]


async def in_a_running_set(c: Controller, sub: Subscription, plan: str = "2x30s/2s,countdown=1.2s") -> None:
    await c.start_session(parse_plan(plan), Speed.from_mph(1.0))
    await wait_until(lambda: (s := c._sample) is not None and s.speed.mph > 0.75, sub, within=15)


async def test_s9_a_plain_stop_mid_set_pauses_the_session_and_nothing_restarts_the_belt() -> None:
    async with running() as (c, sub, events):
        await in_a_running_set(c, sub)
        assert len(starts(c)) == 1
        assert (await c.stop_belt("http")).accepted
        await wait_until(lambda: c._sample is not None and c._sample.speed.mph == 0 and c.samples_seen > 0, sub)
        # Well past the standstill window (S4) and the hold (3 s): the old session asked again here.
        seen = c.samples_seen
        await wait_until(lambda: c.samples_seen > seen + 4 * 50, sub, within=15)
        assert len(starts(c)) == 1, "the daemon restarted the belt by itself"
        assert c.session is not None and c.session.paused_at is not None
        paused = [e for e in events if e.kind == "session_paused"]
        assert paused and paused[0].reason == "http"
        # A person asks: the belt starts again (held for the window if need be).
        await c.resume_session()
        await wait_until(lambda: len(starts(c)) == 2, sub, within=10)


async def test_s10_a_console_stop_mid_set_pauses_the_session_and_nothing_restarts_the_belt() -> None:
    drv = SimBeltDriver(motorized=True, rate_hz=50, faults=parse_faults("console-stop@4"))
    async with running(drv) as (c, sub, events):
        await in_a_running_set(c, sub)
        await wait_until(lambda: any(e.kind == "session_paused" for e in events), sub, within=10)
        paused = next(e for e in events if e.kind == "session_paused")
        assert paused.rule == Rule.S10.value and paused.reason == "stopped_by_user"
        seen = c.samples_seen
        await wait_until(lambda: c.samples_seen > seen + 4 * 50, sub, within=15)
        assert len(starts(c)) == 1, "the daemon restarted the belt after the console's own stop"
        assert c.supervisor.latch is None  # a controlled stop: the session waits for a person


async def test_s4_a_start_just_after_standstill_is_held_then_carried_out() -> None:
    async with running() as (c, sub, events):
        await wait_until(lambda: c.samples_seen > 0, sub)  # the belt reads 0, the window is not complete
        d = await c.start_belt(Speed.from_mph(1.0))
        assert d.accepted and d.held
        await wait_until(lambda: len(starts(c)) == 1, sub, within=5)
        assert any(e.kind == "start_held" and e.rule == Rule.S4.value for e in events)


async def test_s4_a_set_that_starts_while_the_belt_coasts_starts_once_it_stood_still() -> None:
    async with running() as (c, sub, events):
        # A 0.2 s rest: the belt is still coming down from 1 mph when set 2 begins.
        await c.start_session(parse_plan("2x3s/0.2s,countdown=1.2s"), Speed.from_mph(1.0))
        await wait_until(lambda: c.session is None, sub, within=30)
        assert len(starts(c)) == 2
        assert not any(e.kind == "set_refused" for e in events)
        assert c.history.recent(1)[0].outcome == "completed"


class FailingHistory(MemoryHistory):
    """A store whose writes fail like a full disk under SQLite."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def _fail(self) -> None:
        if self.failing:
            raise sqlite3.OperationalError("database or disk is full")

    def checkpoint(self, session_id: int, result: SetResult) -> None:
        self._fail()
        super().checkpoint(session_id, result)

    def record_set(self, session_id: int, result: SetResult) -> None:
        self._fail()
        super().record_set(session_id, result)

    def record_event(self, session_id: int, event: Event) -> None:
        self._fail()
        super().record_event(session_id, event)


async def test_a_history_write_error_never_ends_the_safety_loop() -> None:
    history = FailingHistory()
    async with running(history=history) as (c, sub, events):
        await in_a_running_set(c, sub, "1x30s,countdown=1.2s")
        history.failing = True
        await wait_until(lambda: c.problems, sub, within=10)  # the next checkpoint failed
        assert any(e.kind == "fault" and e.reason == "history" for e in events)
        seen = c.samples_seen
        await wait_until(lambda: c.samples_seen > seen + 50, sub)  # samples still flow
        # The safety loop is alive: an overspeed still trips (S7) and the stop is written.
        sim(c).belt.run_away()  # type: ignore[union-attr]
        await wait_until(lambda: c.supervisor.latch is not None, sub, within=10)
        assert c.supervisor.latch is not None and c.supervisor.latch.rule is Rule.S7
        await wait_until(lambda: c._sample is not None and c._sample.speed.mph == 0, sub, within=10)
        assert not c.failed.is_set()
        assert any(kind == "estop" for _, kind, _ in sim(c).commands)


class ListenedHistory(MemoryHistory):
    """The agreed interface of the non-blocking writer: it reports its own faults."""

    def __init__(self) -> None:
        super().__init__()
        self.on_fault: Callable[[str], None] | None = None
        self.on_ok: Callable[[], None] | None = None

    def set_listener(self, on_fault: Callable[[str], None], on_ok: Callable[[], None]) -> None:
        self.on_fault, self.on_ok = on_fault, on_ok


async def test_history_faults_reported_by_the_history_are_problems_until_it_recovers() -> None:
    history = ListenedHistory()
    pings: list[int] = []
    drv = SimBeltDriver(motorized=True, rate_hz=50)
    async with Controller(drv, history=history, watchdog=lambda: pings.append(1)) as c:
        sub = c.hub.subscribe(("event",), maxsize=1000)
        every = c.hub.subscribe(maxsize=100_000)
        assert history.on_fault is not None and history.on_ok is not None and c.problems == ()
        history.on_fault("disk I/O error")
        assert c.problems and "disk I/O error" in c.problems[0]
        update = await sub.next(within=5)
        assert update is not None and update.payload.kind == "fault" and update.payload.reason == "history"
        # S15: the belt is safe, so the watchdog is still fed (a restart would skip the stop).
        fed = len(pings)
        await wait_until(lambda: len(pings) > fed, every, within=5)
        history.on_ok()
        assert c.problems == ()


class BrokenStream(SimBeltDriver):
    """A driver whose sample stream fails with something that is not a DriverError (a bug)."""

    def __init__(self) -> None:
        super().__init__(motorized=True, rate_hz=50)
        self.broken = asyncio.Event()

    async def _broken(self) -> AsyncIterator[Update]:
        async for update in super().samples():
            if self.broken.is_set():
                raise RuntimeError("decoder bug")
            yield update

    def samples(self) -> AsyncIterator[Update]:
        return self._broken()


async def test_s5_a_safety_loop_that_dies_latches_internal_error_writes_the_stop_and_says_failed() -> None:
    drv = BrokenStream()
    async with running(drv) as (c, sub, _events):
        await wait_until(lambda: c.samples_seen > 60, sub)
        assert (await c.start_belt(Speed.from_mph(1.0))).accepted
        await wait_until(lambda: (s := c._sample) is not None and s.speed.mph > 0.75, sub, within=10)
        drv.broken.set()
        async with asyncio.timeout(5):
            await c.failed.wait()
        assert c.failure is not None and "samples" in c.failure and "decoder bug" in c.failure
        assert c.supervisor.latch is not None and c.supervisor.latch.reason == "internal-error"
        assert c.supervisor.latch.rule is Rule.S5
        assert sim(c).commands[-1][1] == "estop"
        assert any("internal-error" in p or "samples" in p for p in c.problems)


async def test_s5_a_stop_reason_read_after_the_latch_is_recorded_without_touching_the_wire() -> None:
    async with running() as (c, sub, events):
        await in_a_running_set(c, sub, "1x30s,countdown=1.2s")
        sid = c.session.id if c.session else None
        await c.estop("", "http")
        sent = len(sim(c).commands)
        latch = c.supervisor.latch
        c.note_stop_reason("tripped \x00over the cable " + "x" * 500)
        c.note_stop_reason(None)
        assert c.supervisor.latch == latch and len(sim(c).commands) == sent
        noted = [e for e in events if e.kind == "estop_reason"]
        assert [e.reason for e in noted][1] == "unreadable"
        assert noted[0].reason is not None and len(noted[0].reason) == 200 and "\x00" not in noted[0].reason
        assert noted[0].rule == Rule.S5.value and noted[0].session == sid
        assert sid is not None
        record = c.history.get(sid)
        assert record is not None and [e.kind for e in record.events].count("estop_reason") == 2
