"""The FTMS start wait against rule S7's no-response window (issue 14, the start-wait gap).

After Start the driver waits for status 0x04 or a moving belt before the first speed (KingSmith
drops the link on a speed written while the motor spins up; TM11GY counts down 3 s: hardware.md).
The supervisor trips ``no-response`` 5 s after a start whose belt has not answered (S7). A wait
longer than that window could only end in that latch mid-start, with a message that does not say
what happened; so the wait is bounded inside the window, and a machine that confirms nothing in
time is stopped with a message saying so. Each test runs the real controller, guard, supervisor,
``ftms://`` driver and bleak facade over the simulated treadmill with a slow start (``countdown``).
"""

from __future__ import annotations

import asyncio

from retrotread.daemon.controller import Controller
from retrotread.daemon.events import EventKind
from retrotread.daemon.hub import Subscription
from retrotread.drivers import BeltSample, Speed, open_driver
from retrotread.drivers.ftms.codec import ControlOpcode, SetTargetSpeed
from retrotread.drivers.ftms.driver import S7_RESPONSE_S, START_WAIT_S
from retrotread.safety import Mode, Rule, SafetyConfig
from retrotread.safety.supervisor import RESPONSE_S
from retrotread.sims.ftms import SimFtmsDriver

WITHIN = 20.0


def sim(query: str) -> SimFtmsDriver:
    drv = open_driver(f"ftms+sim://?rate_hz=20&{query}")
    assert isinstance(drv, SimFtmsDriver)
    return drv


def ops(drv: SimFtmsDriver) -> list[ControlOpcode]:
    return [ControlOpcode(w.request.op) for w in drv.peripheral.writes if w.request is not None]


async def armed(c: Controller, sub: Subscription) -> None:
    while not (c.snapshot().armed and c._sample is not None):
        await sub.next()


def test_s7_the_start_wait_is_bounded_by_the_no_response_window() -> None:
    # One window (drivers.types.RESPONSE_S) for the driver and the supervisor, and the wait must
    # leave time inside it for the speed and the belt.
    assert S7_RESPONSE_S == RESPONSE_S
    assert START_WAIT_S + 1.0 <= S7_RESPONSE_S  # one 1 Hz sample period left for the belt to show it


async def test_s7_a_machine_that_never_confirms_its_start_in_time_is_stopped_saying_so_not_latched() -> None:
    # A countdown longer than the bound (8 s; inside hardware.md's ~15 s): before the bound, the
    # supervisor latched no-response at 5 s while the driver still waited.
    drv = sim("countdown=8")
    async with Controller(drv, treadmill_id="t", safety=SafetyConfig(mode=Mode.REVERSE)) as c:
        sub = c.hub.subscribe(maxsize=100_000)
        async with asyncio.timeout(WITHIN):
            await armed(c, sub)
            assert (await c.start_belt(Speed.from_mph(0.8))).accepted
            stop = None
            while stop is None:
                update = await sub.next()
                assert update is not None
                if update.kind == "event" and update.payload.kind in (EventKind.STOP, EventKind.ESTOP):
                    stop = update.payload
        assert stop.kind is EventKind.STOP and stop.rule == Rule.S10.value, stop
        assert "did not confirm the start in time" in stop.detail and "S7" in stop.detail, stop.detail
        assert c.supervisor.latch is None  # a stop the user can start again after, not a no-response latch
        # On the wire: Start, then the stop; no speed ever written during the countdown (KingSmith's drop).
        assert ops(drv)[-1] is ControlOpcode.STOP_OR_PAUSE
        assert not [w for w in drv.peripheral.writes if isinstance(w.request, SetTargetSpeed)]
        assert drv.connected and drv.reconnects == 0
        assert not drv.peripheral.running  # the stop cancelled the countdown: the belt never runs


async def test_s7_tm11gy_3_s_countdown_starts_and_answers_within_the_window() -> None:
    # qdomyos-zwift #5100: TM11GY counts down 3 s after Start. The bound lets it start: the belt
    # reaches its command and no rule trips while it does.
    drv = sim("countdown=3")
    async with Controller(drv, treadmill_id="t", safety=SafetyConfig(mode=Mode.REVERSE)) as c:
        sub = c.hub.subscribe(maxsize=100_000)
        async with asyncio.timeout(WITHIN):
            await armed(c, sub)
            t0 = c.clock()
            assert (await c.start_belt(Speed.from_mph(0.8))).accepted
            stops = []
            # Watch the belt until past the no-response window: it must be at its command by then.
            while True:
                update = await sub.next()
                assert update is not None
                if update.kind == "event" and update.payload.kind in (EventKind.STOP, EventKind.ESTOP):
                    stops.append(update.payload)
                sample = c._sample
                if isinstance(sample, BeltSample) and sample.t > t0 + RESPONSE_S + 0.5:
                    break
        assert stops == [] and c.supervisor.latch is None
        assert c.snapshot().belt is not None and abs(c.snapshot().belt.speed_mph - 0.8) <= 0.1
        assert ops(drv).count(ControlOpcode.START_OR_RESUME) == 1 and ControlOpcode.SET_TARGET_SPEED in ops(drv)
        await c.stop_belt()
