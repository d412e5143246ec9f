"""The controller under random people, consoles and time: nobody restarts a belt but a person.

A Hypothesis RuleBasedStateMachine over the real Controller, with the real supervisor and guard,
a small in-test driver over the simulated belt physics (``sims.belt``) that records every command,
and an injected clock and sleep, so the safety tick and the set timer run on the test's time.

Invariant (issue 10, S9, S10): no start reaches the wire unless a person asked (belt start, session
start, resume, skip) after the last stop that was not the plan's own (a face's stop, a pause, a
stop pressed on the console, any emergency stop). Also S4: every start follows a second at 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from helpers import FakeTime, QueueDriver, run_settled, settle
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from retrotread.daemon.controller import Controller, SessionError
from retrotread.daemon.plans import parse_plan
from retrotread.drivers.types import BeltSample, Capabilities, DeviceEvent, DeviceEventKind
from retrotread.drivers.units import Speed, SpeedGrid, SpeedUnit
from retrotread.safety import Mode, SafetyConfig
from retrotread.safety.supervisor import STANDSTILL_MPH, STANDSTILL_S
from retrotread.sims.belt import Belt

STEP_S = 0.05  # the test's time moves in steps of one safety tick; a sample comes with each


class RecordingDriver(QueueDriver):
    """A motorized belt (sims.belt physics on the test's clock) that records every command."""

    url = "test://recording"

    def __init__(self, time: FakeTime, log: list[tuple[str, float]]) -> None:
        super().__init__()
        self.time = time
        self.log = log
        self.belt = Belt(motorized=True, t=time.now)
        self.zero_since: float | None = time.now  # when the belt last came to read 0
        self.early_starts: list[float] = []  # starts less than STANDSTILL_S after it did (S4)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            can_drive=True,
            speed_grid=SpeedGrid(SpeedUnit.MPH_TENTHS, 1, Speed.from_mph(0.5), Speed.from_mph(12)),
            nominal_period_s=STEP_S,
        )

    def _cmd(self, kind: str) -> None:
        self.belt.advance_to(self.time.now)
        self.log.append((kind, self.time.now))

    async def start(self, speed: Speed) -> None:
        self._cmd("start")
        zs = self.zero_since
        if zs is None or self.time.now - zs < STANDSTILL_S - 1e-6:
            self.early_starts.append(self.time.now)
        self.belt.command_mps = speed.mps

    async def set_speed(self, speed: Speed) -> None:
        self._cmd("speed")
        self.belt.command_mps = speed.mps

    async def set_incline(self, incline_pct: float) -> None:
        self._cmd("incline")

    async def stop(self) -> None:
        self._cmd("stop")
        self.belt.stop_motor()

    async def emergency_stop(self) -> None:
        self._cmd("estop")
        self.belt.stop_motor()

    def sample(self) -> None:
        self.belt.advance_to(self.time.now)
        if Speed(self.belt.speed_mps).mph > STANDSTILL_MPH:
            self.zero_since = None
        elif self.zero_since is None:
            self.zero_since = self.time.now
        self.put(BeltSample(self.time.now, Speed(self.belt.speed_mps), 0.0, self.belt.distance_m))

    def console_stop(self) -> None:
        self.belt.advance_to(self.time.now)
        self.belt.stop_motor()
        self.put(DeviceEvent(self.time.now, DeviceEventKind.STOPPED_BY_USER, "console Finished"))


PLANS = ["2x2s/1s,countdown=0.5s", "3x1.5s/0.3s,countdown=0s", "1x4s,countdown=1s", "2x3s/0s,countdown=0.2s"]


class ControllerMachine(RuleBasedStateMachine):
    """``log`` holds, in order, every command on the wire and the test's markers: ``ask`` (a
    person asked for motion) and ``stopped`` (a stop that was not the plan's went through)."""

    @initialize()
    def boot(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.time = FakeTime()
        self.log: list[tuple[str, float]] = []
        self.driver = RecordingDriver(self.time, self.log)
        self.c = Controller(
            self.driver,
            safety=SafetyConfig(mode=Mode.REVERSE),
            clock=self.time.clock,
            wall=lambda: 1.7e9 + self.time.now,
            sleep=self.time.sleep,
        )
        self.run(self.c.__aenter__())

    def teardown(self) -> None:
        if hasattr(self, "c"):
            self.run(self.c.aclose())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return run_settled(self.loop, coro)

    def mark(self, what: str) -> None:
        self.log.append((what, self.time.now))

    # --- time and the belt ---------------------------------------------------------------------

    @rule(seconds=st.floats(0.05, 4.0))
    def time_passes(self, seconds: float) -> None:
        end = self.time.now + seconds
        while self.time.now < end:
            self.time.now += STEP_S
            self.driver.sample()
            self.time.wake_due()
            self.loop.run_until_complete(settle())
            self.check()

    @rule()
    def stop_pressed_on_the_console(self) -> None:
        self.driver.console_stop()
        self.loop.run_until_complete(settle())
        self.mark("stopped")

    # --- people ----------------------------------------------------------------------------------

    @rule(plan=st.sampled_from(PLANS))
    def start_session(self, plan: str) -> None:
        self.mark("ask")
        try:
            self.run(self.c.start_session(parse_plan(plan)))
            event("session started")
        except SessionError:
            event("session refused")

    @rule(action=st.sampled_from(["pause", "resume", "skip", "abort"]))
    def session_action(self, action: str) -> None:
        if action in ("resume", "skip"):
            self.mark("ask")
        try:
            self.run(self.c.session_action(action))
        except SessionError:
            return
        if action in ("pause", "abort"):
            self.mark("stopped")

    @rule(mph=st.sampled_from([0.8, 1.0, 1.2]))
    def start_belt(self, mph: float) -> None:
        self.mark("ask")
        d = self.run(self.c.start_belt(Speed.from_mph(mph)))
        event("start " + ("held" if d.held else "accepted" if d.accepted else "refused"))

    @rule(face=st.sampled_from(["http", "mqtt"]))
    def stop_belt(self, face: str) -> None:
        self.run(self.c.stop_belt(face))
        self.mark("stopped")

    @rule()
    def estop(self) -> None:
        self.run(self.c.estop("test", "pytest"))
        self.mark("stopped")

    @rule()
    def reset(self) -> None:
        self.run(self.c.reset())

    # --- the invariants ---------------------------------------------------------------------------

    def check(self) -> None:
        allowed = False
        for what, _t in self.log:
            if what == "ask":
                allowed = True
            elif what in ("stopped", "estop"):
                allowed = False
            elif what == "start":
                assert allowed, f"S9/S10: a start with no request after the last stop: {self.log}"

    @invariant()
    def no_start_without_a_request_after_the_last_stop(self) -> None:
        if hasattr(self, "c"):
            self.check()
            assert not self.c.failed.is_set(), self.c.failure

    @invariant()
    def every_start_follows_a_second_at_standstill(self) -> None:
        if hasattr(self, "driver"):
            assert not self.driver.early_starts, f"S4: started before a second at 0: {self.driver.early_starts}"
            if any(what == "start" for what, _ in self.log):
                event("a start on the wire")


TestControllerNeverRestartsTheBeltS4S9S10 = ControllerMachine.TestCase
