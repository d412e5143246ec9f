"""The controller on the simulated belt, in process: sessions in reverse mode, caps, the guard."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import wait_until

from retrotread.daemon.controller import Controller, SessionError
from retrotread.daemon.hub import Subscription
from retrotread.daemon.plans import parse_plan
from retrotread.drivers import Speed, open_driver
from retrotread.safety import Mode, Rule, SafetyConfig, SetSpeed
from retrotread.sims.driver import SimBeltDriver


@contextlib.asynccontextmanager
async def controller(
    url: str = "sim://motorized?rate_hz=50", mode: Mode = Mode.REVERSE, driver: SimBeltDriver | None = None
) -> AsyncIterator[tuple[Controller, Subscription]]:
    """A running controller and a subscription to wait on (``wait_until`` consumes its updates)."""
    drv = driver or open_driver(url)
    async with Controller(drv, treadmill_id="t", safety=SafetyConfig(mode=mode)) as c:
        yield c, c.hub.subscribe(maxsize=100_000)


class Events:
    """Every event the controller publishes, on a subscription of its own."""

    def __init__(self, c: Controller) -> None:
        self.sub = c.hub.subscribe(("event",), maxsize=100_000)

    async def all(self) -> list[Any]:
        out = []
        while self.sub.pending:
            u = await self.sub.next()
            if u is not None:
                out.append(u.payload)
        return out


def sim(c: Controller) -> SimBeltDriver:
    drv = c._driver  # the test looks at what the simulated device was told
    assert isinstance(drv, SimBeltDriver)
    return drv


async def test_reverse_session_starts_the_belt_for_each_set_and_stops_it_between() -> None:
    async with controller() as (c, sub):
        ev = Events(c)
        await c.start_session(parse_plan("2x1s/1s,countdown=1.2s"), Speed.from_mph(1.0))
        await wait_until(lambda: c.session is None, sub, within=20)
        kinds = [e.kind for e in (await ev.all())]
        assert kinds.count("set_started") == 2 and "session_completed" in kinds
        assert "set_refused" not in kinds
        cmds = [k for _, k, _ in sim(c).commands]
        # set 1: start, (ramp), stop at the rest; set 2 waits for standstill (S4), then start, stop at the end.
        assert cmds.count("start") == 2
        first_start = cmds.index("start")
        assert "stop" in cmds[first_start:]
        record = c.history.recent(1)[0]
        assert record.outcome == "completed"
        assert all(s.max_mph <= 1.2 for s in record.sets)


async def test_s14_volume_cap_ends_the_session_with_a_controlled_stop() -> None:
    async with controller() as (c, sub):
        ev = Events(c)
        await c.start_session(parse_plan("1x30s,cap=2s,countdown=1.2s"), Speed.from_mph(1.0))
        await wait_until(lambda: c.session is None, sub, within=20)
        cap = [e for e in (await ev.all()) if e.kind == "volume_cap"]
        assert cap and cap[0].rule == Rule.S14.value
        assert c.history.recent(1)[0].outcome == "capped"
        await wait_until(lambda: any(k == "stop" for _, k, _ in sim(c).commands), sub)
        assert c.supervisor.latch is None  # a controlled stop, not an emergency


async def test_a_trip_mid_set_ends_the_session_as_a_safety_stop() -> None:
    async with controller() as (c, sub):
        await c.start_session(parse_plan("1x30s,countdown=1.2s"))
        await wait_until(lambda: c.supervisor.commanded_to_move, sub)
        await c.estop("test", "pytest")
        record = c.history.recent(1)[0]
        # issue 12: a set cut by a stop is "stopped", with the stop's rule stored beside it
        assert record.outcome == "stopped"
        assert record.sets[0].outcome == "stopped" and record.sets[0].rule == "S5"
        with pytest.raises(SessionError) as err:
            await c.start_session(parse_plan("deadmill"))
        assert err.value.rule is Rule.S6


class SlowStart(SimBeltDriver):
    """A device whose start takes until the test says so: a motion command in flight."""

    def __init__(self) -> None:
        super().__init__(motorized=True, rate_hz=50)
        self.release = asyncio.Event()
        self.in_flight = asyncio.Event()

    async def set_speed(self, speed: Speed) -> None:
        self.in_flight.set()
        await self.release.wait()
        await super().set_speed(speed)


async def test_s5_the_stop_skips_motion_in_flight_drops_what_was_queued_and_has_the_last_word() -> None:
    drv = SlowStart()
    async with controller(driver=drv) as (c, sub):
        await wait_until(lambda: c.supervisor.last_motion_age(c.clock()) is None and c.samples_seen > 60, sub)
        assert (await c.start_belt(Speed.from_mph(1.2))).accepted
        await wait_until(lambda: drv.in_flight.is_set(), sub)  # the ramp's first speed step is stuck
        # A decrease is sent at once (S4), so this one queues behind the stuck step.
        queued = asyncio.create_task(c.guard.request(SetSpeed(Speed.from_mph(0.8))))
        await wait_until(lambda: c.supervisor.target == c.supervisor.grid.snap(Speed.from_mph(0.8)), sub)  # type: ignore[union-attr]
        await c.estop("test", "pytest")
        assert sim(c).commands[-1][1] == "estop"  # written while the speed step was still in flight
        drv.release.set()
        await queued
        kinds = [k for _, k, _ in sim(c).commands]
        after = kinds[kinds.index("estop") :]
        assert after[-1] == "estop"  # the late step was followed by another stop
        assert after.count("speed") <= 1  # only the step already in flight, never the queued one
        speeds = [v for _, k, v in sim(c).commands if k == "speed"]
        assert all(v is not None and v > 0.85 for v in speeds)  # the queued 0.8 mph never reached the device


async def test_s4_a_slow_link_gets_the_newest_ramp_step_not_a_backlog() -> None:
    drv = SlowStart()
    async with controller(driver=drv) as (c, sub):
        await wait_until(lambda: c.supervisor.last_motion_age(c.clock()) is None and c.samples_seen > 60, sub)
        assert (await c.start_belt(Speed.from_mph(1.2))).accepted
        await wait_until(lambda: drv.in_flight.is_set(), sub)  # the first ramp step is stuck on the link
        decided = len(c.guard.commands_sent)
        # Meanwhile the ramp goes on deciding steps, each waiting behind the stuck one.
        await wait_until(lambda: c.supervisor.setpoint.mph > 1.1, sub)
        drv.release.set()
        sup = c.supervisor  # the top of the envelope on this 0.1 km/h grid is 1.18 mph
        await wait_until(lambda: sup.setpoint == sup.target and not c.guard._pending, sub)
        speeds = [v for _, k, v in sim(c).commands if k == "speed"]
        assert len(speeds) <= 3  # the stuck step, the newest waiting one, and at most one more
        assert speeds[-1] == pytest.approx(c.supervisor.setpoint.mph, abs=0.01)
        assert len(c.guard.commands_sent) - decided == len(speeds)
