"""The safety evaluation on the sample schedule, and its deadline timer (issue 16, S17).

The real Controller (real supervisor and guard) over an in-test driver that only records commands,
on the test's clock (``FakeTime``): the test decides when samples come and when time moves, so
"no samples for 250 ms" is exact, and each assertion is about what happened at which instant.

- with no samples, the deadline timer still evaluates (and feeds the systemd watchdog) at least
  every 100 ms (S17, S15);
- S8's stale trip comes at its time, as it did with the 20 Hz tick: within one 50 ms step of it;
- a stop is repeated on its own 250 ms deadline (S5), not at the next sample;
- samples on time carry every evaluation: the timer never fires between them (the wake-ups the
  issue is about).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from helpers import FakeTime, QueueDriver, run_settled, settle

from retrotread.daemon.controller import Controller
from retrotread.daemon.deadline import Deadline
from retrotread.drivers.types import BeltSample, Capabilities
from retrotread.drivers.units import Speed, SpeedGrid, SpeedUnit
from retrotread.safety import Mode, SafetyConfig
from retrotread.safety.supervisor import STOP_REPEAT_S

PERIOD_S = 0.1  # the driver's nominal sample period: S8's stale time is max(3 x this, 1.5 s) = 1.5 s
STEP_S = 0.01  # the test's time moves in steps this small, so the deadline is seen to the step


class Recorder(QueueDriver):
    """A motorized belt that does nothing but write down each command with the test's time."""

    url = "test://recorder"

    def __init__(self, time: FakeTime) -> None:
        super().__init__()
        self.time = time
        self.commands: list[tuple[str, float]] = []

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            can_drive=True,
            speed_grid=SpeedGrid(SpeedUnit.MPH_TENTHS, 1, Speed.from_mph(0.5), Speed.from_mph(12)),
            nominal_period_s=PERIOD_S,
        )

    def _cmd(self, kind: str) -> None:
        self.commands.append((kind, self.time.now))

    async def start(self, speed: Speed) -> None:
        self._cmd("start")

    async def set_speed(self, speed: Speed) -> None:
        self._cmd("speed")

    async def set_incline(self, incline_pct: float) -> None:
        self._cmd("incline")

    async def stop(self) -> None:
        self._cmd("stop")

    async def emergency_stop(self) -> None:
        self._cmd("estop")

    def sample(self, mph: float) -> None:
        self.put(BeltSample(self.time.now, Speed.from_mph(mph), 0.0, 0.0))

    def times(self, kind: str) -> list[float]:
        return [t for k, t in self.commands if k == kind]


class Rig:
    """A controller on the test's time; ``advance`` moves the clock in exact steps from ``t0``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.time = FakeTime(slack=1e-9)
        self.driver = Recorder(self.time)
        self.fed: list[float] = []  # when the systemd watchdog was fed: once per evaluation
        self.c = Controller(
            self.driver,
            safety=SafetyConfig(mode=Mode.REVERSE),
            clock=self.time.clock,
            wall=lambda: 1.7e9 + self.time.now,
            sleep=self.time.sleep,
            watchdog=lambda: self.fed.append(self.time.now),
        )
        self.run(self.c.__aenter__())
        self.t0 = self.time.now
        self.steps = 0

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return run_settled(self.loop, coro)

    def step(self, sample_mph: float | None = None) -> None:
        """One STEP_S of the test's time (computed from t0, never summed), with a sample or not."""
        self.steps += 1
        self.time.now = self.t0 + self.steps * STEP_S
        if sample_mph is not None:
            self.driver.sample(sample_mph)
        self.time.wake_due()
        self.loop.run_until_complete(settle())

    def close(self) -> None:
        self.run(self.c.aclose())
        self.loop.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_no_samples_for_250_ms_still_gives_evaluations_every_100_ms(rig: Rig) -> None:
    """S17: the safety loop does not depend on the device talking; S15: nor does the watchdog."""
    before = len(rig.fed)
    for _ in range(25):  # 250 ms, not one sample
        rig.step()
    fed = [t for t in rig.fed[before:] if t > rig.t0]
    assert len(fed) >= 2, f"evaluations in 250 ms without samples: {fed}"
    gaps = [b - a for a, b in zip([rig.t0, *fed], fed, strict=False)]
    assert max(gaps) <= 0.1 + 1e-9, gaps


def _moving_then_silent(rig: Rig) -> float:
    """Standstill for S4's second, a start, one sample more, then the device falls silent; returns
    the time of the last sample (the last valid one S8 counts from)."""
    for k in range(1, 121):  # 1.2 s of samples at 0 mph, one every PERIOD_S
        rig.step(0.0 if k % 10 == 0 else None)
    decision = rig.run(rig.c.start_belt(Speed.from_mph(1.0)))
    assert decision.accepted, decision
    for _ in range(9):
        rig.step()
    rig.step(0.0)
    return rig.time.now


def test_stale_telemetry_trips_at_its_time_with_no_samples(rig: Rig) -> None:
    """S8 counts from the last valid sample; with none coming, only the deadline timer can see it."""
    last = _moving_then_silent(rig)
    stale_after = rig.c.supervisor.stale_after_s
    while not rig.driver.times("estop") and rig.time.now < last + 2 * stale_after:
        rig.step()
    latch = rig.c.supervisor.latch
    assert latch is not None and (latch.reason, latch.rule.value) == ("stale", "S8")
    tripped = rig.driver.times("estop")[0] - last
    # Not before its time, and no later than the 20 Hz tick this replaced would have seen it.
    assert stale_after - 1e-9 <= tripped <= stale_after + 0.05 + STEP_S, tripped


def test_a_stop_is_repeated_on_its_deadline_between_samples(rig: Rig) -> None:
    """S5: every STOP_REPEAT_S until the belt reads 0; samples at 10 Hz would make it 300 ms."""
    rig.run(rig.c.estop("test", "pytest"))
    first = rig.driver.times("estop")
    assert len(first) == 1
    t_stop = first[0]
    for k in range(1, 61):  # 600 ms of a belt still coasting at 1 mph, a sample every 100 ms
        rig.step(1.0 if k % 10 == 0 else None)
    repeats = [round(t - t_stop, 6) for t in rig.driver.times("estop")[1:]]
    assert repeats[:2] == [STOP_REPEAT_S, 2 * STOP_REPEAT_S], repeats


def test_samples_on_time_carry_every_evaluation(rig: Rig) -> None:
    """With a sample at least every 100 ms the deadline timer never fires: one evaluation per
    sample, nothing between them (issue 16: the tick no longer wakes the daemon on its own)."""
    for k in range(1, 28):  # past the start-up evaluations and the boot stop's repeat deadline (S15, S5)
        rig.step(0.0 if k % 9 == 0 else None)
    before, samples = len(rig.fed), 0
    for k in range(1, 181):  # 1.8 s, a sample every 90 ms
        sample = k % 9 == 0
        samples += sample
        rig.step(0.0 if sample else None)
    assert samples == 20
    assert len(rig.fed) - before == samples


def test_a_deadline_moved_later_or_earlier_is_the_one_met() -> None:
    """On the event loop's own timers (real time): ``wait`` follows each move, never returns
    before the armed time, and returns at once when it has passed."""

    async def main() -> tuple[float, float, float, float]:
        d = Deadline(time.monotonic)
        start = time.monotonic()
        d.arm(start + 0.05)
        waiter = asyncio.ensure_future(d.wait())
        await asyncio.sleep(0)
        d.arm(start + 0.12)  # later: the first time must not end the wait
        await waiter
        later = time.monotonic()
        d.arm(later + 10.0)
        waiter = asyncio.ensure_future(d.wait())
        await asyncio.sleep(0)
        d.arm(later + 0.03)  # earlier: the wait must not last the first 10 s
        await asyncio.wait_for(waiter, 5.0)
        earlier = time.monotonic()
        d.arm(earlier - 1.0)
        await d.wait()  # already due
        return start, later, earlier, d.when

    start, later, earlier, when = asyncio.run(main())
    assert later >= start + 0.12
    assert earlier >= later + 0.03
    assert when < earlier


def test_no_response_trips_at_its_time_while_samples_flow(rig: Rig) -> None:
    """S7: a belt that never follows its command trips no-response RESPONSE_S after the command,
    on the rule's own time: samples at 10 Hz must not make it wait for the next one (the 20 Hz
    tick this replaced saw it within 50 ms; the supervisor's ``next_due`` puts the deadline on it)."""
    from retrotread.safety.supervisor import RESPONSE_S

    for k in range(1, 121):  # S4's standstill second, a sample every PERIOD_S
        rig.step(0.0 if k % 10 == 0 else None)
    assert rig.run(rig.c.start_belt(Speed.from_mph(1.0))).accepted
    started = rig.driver.times("start")[0]
    k = 0
    while not rig.driver.times("estop") and rig.time.now < started + 2 * RESPONSE_S:
        k += 1
        rig.step(0.0 if k % 10 == 3 else None)  # the belt keeps reading 0, a sample every 100 ms
    latch = rig.c.supervisor.latch
    assert latch is not None and (latch.reason, latch.rule.value) == ("no-response", "S7"), latch
    late = rig.driver.times("estop")[0] - (started + RESPONSE_S)
    assert -1e-9 <= late <= 2 * STEP_S, late
