"""S7's unit check: a machine that takes or reports mph where it claims km/h (or the reverse).

Source: ../shared/docs/hardware.md, "Units that lie" (Horizon 7.0AT / T202 and TM11GY read Set
Target Speed as mph; Bowflex T9 reports mph; qdomyos-zwift PRs #4721, #4904, #4364, #4002).

The bound (docs/safety.md, S7): a start goes out at the envelope's bottom (0.8 mph) and ramps at
0.2 mph/s (S4) to its target; the command is settled UNIT_SETTLE_S (2 s) after its last change;
then every reading for UNIT_CONFIRM_S (1 s) within UNIT_RATIO_TOL (8 %) of 1.609 or 0.621 latches
the stop. So a machine that takes mph carries a command it turns into more than the envelope for at
most ramp + UNIT_SETTLE_S + UNIT_CONFIRM_S + one sample period; overspeed (S7) cuts it sooner when
the belt passes 1.4 mph for 1 s or 1.7 mph once.

The first tests run the real supervisor against the simulators' real belt physics (sims.belt) on an
injected clock; the last ones run the controller against ``sim://motorized?lie=...``.
"""

from __future__ import annotations

import pytest
from helpers import wait_until

from retrotread.daemon.controller import Controller
from retrotread.drivers import BeltSample, Capabilities, Speed, SpeedGrid, SpeedUnit
from retrotread.drivers.errors import ConfigError
from retrotread.drivers.registry import open_driver
from retrotread.safety import CommandKind, Decision, Mode, Rule, SafetyConfig, SetSpeed, Start, Supervisor
from retrotread.safety.envelope import REVERSE_MAX_MPH, REVERSE_MIN_MPH
from retrotread.safety.supervisor import RAMP_MPH_PER_S, UNIT_CONFIRM_S, UNIT_SETTLE_S
from retrotread.sims.belt import Belt, Lie
from retrotread.sims.driver import SimBeltDriver

FTMS_KMH = SpeedGrid(SpeedUnit.KMH_HUNDREDTHS, minimum=Speed.from_kmh(0.5), maximum=Speed.from_kmh(20))
CSAFE_MPH = SpeedGrid(SpeedUnit.MPH_TENTHS, minimum=Speed.from_mph(0.5), maximum=Speed.from_mph(12))


class LyingMachine:
    """The supervisor obeyed by a simulated motor whose unit is ``lie`` (sims.belt physics)."""

    def __init__(self, lie: Lie, grid: SpeedGrid = FTMS_KMH, period_s: float = 1.0, accel_mph_s: float = 1.0):
        self.t = 100.0
        self.period = period_s
        self.lie = lie
        self.belt = Belt(motorized=True, t=self.t, accel_mps2=Speed.from_mph(accel_mph_s).mps)
        self.sup = Supervisor(SafetyConfig(mode=Mode.REVERSE))
        self.sup.boot(self.t)
        self.sup.arm(Capabilities(can_drive=True, speed_grid=grid, nominal_period_s=period_s), self.t)
        self.wire: list[tuple[float, CommandKind, float | None]] = []
        """Every command the supervisor put on the wire: (t, kind, mph as commanded)."""
        self.true_mph: list[tuple[float, float]] = []
        self.estops: list[str] = []
        """The detail of every emergency stop the supervisor published."""

    def obey(self, d: Decision) -> None:
        self.estops += [e.detail for e in d.events if e.kind == "estop"]
        for c in d.commands:
            kind, speed = c.kind, c.speed
            self.wire.append((self.t, kind, None if speed is None else speed.mph))
            if kind in (CommandKind.START, CommandKind.SET_SPEED):
                assert speed is not None
                self.belt.command_mps = speed.mps * self.lie.takes
            elif kind.is_stop:
                self.belt.stop_motor()

    def run(self, seconds: float, *, tick_s: float = 0.05) -> None:
        """Ticks at 20 Hz (S17) and samples every ``period``, like the controller."""
        end, next_sample = self.t + seconds, self.t + self.period
        while self.t < end - 1e-9:
            self.t = round(self.t + tick_s, 6)
            self.belt.advance_to(self.t)
            self.true_mph.append((self.t, Speed(self.belt.speed_mps).mph))
            if self.t >= next_sample - 1e-9:
                next_sample += self.period
                seen = Speed(self.belt.speed_mps * self.lie.reports)
                self.obey(self.sup.observe(BeltSample(self.t, seen), self.t))
            self.obey(self.sup.tick(self.t))

    def start(self, mph: float) -> None:
        d = self.sup.request(Start(Speed.from_mph(mph)), self.t)
        assert d.accepted, d.refusal
        self.obey(d)

    def standing(self) -> LyingMachine:
        self.run(1.5)
        return self

    def over_envelope_by_command_s(self) -> float:
        """How long the wire held a motion command this machine turns into more than the envelope."""
        total, since = 0.0, None
        for t, kind, mph in self.wire:
            over = kind in (CommandKind.START, CommandKind.SET_SPEED) and mph is not None
            over = over and mph * self.lie.takes > REVERSE_MAX_MPH + 1e-9  # type: ignore[operator]
            if over and since is None:
                since = t
            elif not over and since is not None and kind is not CommandKind.SET_INCLINE:
                total, since = total + t - since, None
        assert since is None, "the wire still holds an over-envelope command: nothing stopped it"
        return total


@pytest.mark.parametrize("period_s", [1.0, 0.1], ids=["ftms-1hz", "sim-10hz"])
def test_s7_unit_mismatch_latches_a_machine_that_takes_mph_where_it_claims_kmh(period_s: float) -> None:
    # hardware.md: Horizon 7.0AT / T202, TM11GY read Set Target Speed as mph (qdomyos-zwift #4721).
    m = LyingMachine(Lie.MPH_IN, period_s=period_s).standing()
    m.start(REVERSE_MIN_MPH)
    m.run(8.0)
    latch = m.sup.latch
    assert latch is not None and (latch.reason, latch.rule) == ("unit-mismatch", Rule.S7)
    # The bound stated in the module docstring and in docs/safety.md (S7): no ramp at 0.8.
    assert m.over_envelope_by_command_s() <= UNIT_SETTLE_S + UNIT_CONFIRM_S + period_s + 1e-6


@pytest.mark.parametrize("target", [0.9, 1.0, 1.1, 1.2])
def test_s7_a_lying_machine_ramping_anywhere_in_the_envelope_is_stopped_within_the_bound(target: float) -> None:
    m = LyingMachine(Lie.MPH_IN).standing()
    m.start(target)
    m.run(12.0)
    latch = m.sup.latch
    assert latch is not None and latch.rule is Rule.S7 and latch.reason in ("unit-mismatch", "overspeed")
    ramp_s = (target - REVERSE_MIN_MPH) / RAMP_MPH_PER_S
    assert m.over_envelope_by_command_s() <= ramp_s + UNIT_SETTLE_S + UNIT_CONFIRM_S + m.period + 1e-6


def test_s7_unit_mismatch_names_the_unit_and_how_to_set_it() -> None:
    m = LyingMachine(Lie.MPH_IN).standing()
    m.start(0.8)
    m.run(8.0)
    assert len(m.estops) == 1
    detail = m.estops[0]
    assert "seems to use mph where it claims km/h (it takes speeds in mph)" in detail
    assert "set unit=mph in the driver URL" in detail and "ratio 1.6" in detail


def test_s7_a_machine_that_reports_mph_where_it_claims_kmh_reads_0_621_and_latches() -> None:
    # hardware.md: Bowflex T9 reports mph (qdomyos-zwift #4364): the belt is right, the readings low.
    m = LyingMachine(Lie.MPH_OUT).standing()
    m.start(1.0)
    m.run(10.0)
    latch = m.sup.latch
    assert latch is not None and (latch.reason, latch.rule) == ("unit-mismatch", Rule.S7)
    assert "(it reports speeds in mph)" in m.estops[0]
    assert max(mph for _, mph in m.true_mph) <= REVERSE_MAX_MPH + 1e-9  # never dangerous, only wrong


def test_s7_a_csafe_console_that_takes_kmh_where_it_claims_mph_latches_naming_kmh() -> None:
    m = LyingMachine(Lie.KMH_IN, grid=CSAFE_MPH, period_s=0.1).standing()
    m.start(1.0)
    m.run(10.0)
    latch = m.sup.latch
    assert latch is not None and latch.reason == "unit-mismatch"
    assert "seems to use km/h where it claims mph (it takes speeds in km/h)" in m.estops[0]
    assert "set unit=kmh" in m.estops[0]


@pytest.mark.parametrize("accel", [1.0, 0.25], ids=["drive", "slow-drive"])
def test_s7_an_honest_machine_never_reads_as_a_unit_mismatch(accel: float) -> None:
    # A slow drive passes 0.621 x its command while it spins up: the settle time keeps it honest.
    m = LyingMachine(Lie.NONE, period_s=0.1, accel_mph_s=accel).standing()
    m.start(1.2)
    m.run(10.0)
    m.obey(m.sup.request(SetSpeed(Speed.from_mph(0.8)), m.t))
    m.run(10.0)
    assert m.sup.latch is None
    assert m.sup.setpoint.mph == pytest.approx(0.8, abs=0.01)


def test_s7_a_machine_that_takes_and_reports_mph_reads_ratio_1_on_the_wire() -> None:
    # What is measurable: such a machine agrees with its commands on the wire (ratio 1), so the
    # unit check cannot see it; the belt runs 1.609 x. Only what the machine tells about itself (the
    # FTMS quirk table by name and model, CSAFE GetUnits) or an independent sensor can. This test
    # pins that limit so nobody believes the ratio covers it.
    m = LyingMachine(Lie.MPH, period_s=0.1).standing()
    m.start(0.8)
    m.run(6.0)
    assert m.sup.latch is None
    assert max(mph for _, mph in m.true_mph) > REVERSE_MAX_MPH


def test_the_sim_refuses_a_lie_in_its_own_unit() -> None:
    with pytest.raises(ConfigError, match="lie='kmh'"):
        open_driver("sim://motorized?lie=kmh")
    with pytest.raises(ConfigError, match="allowed mph, mph-in, mph-out"):
        open_driver("sim://motorized?lie=feet")
    assert isinstance(open_driver("sim://motorized?unit=mph&lie=kmh-in"), SimBeltDriver)


async def test_s7_the_controller_latches_unit_mismatch_on_a_lying_sim_belt() -> None:
    drv = open_driver("sim://motorized?lie=mph-in&rate_hz=20")
    assert isinstance(drv, SimBeltDriver)
    async with Controller(drv, treadmill_id="t", safety=SafetyConfig(mode=Mode.REVERSE)) as c:
        sub = c.hub.subscribe(maxsize=100_000)
        await wait_until(lambda: c.snapshot().armed and c._sample is not None, sub)
        d = await c.start_belt(Speed.from_mph(0.8))
        assert d.accepted, d.refusal
        await wait_until(lambda: c.snapshot().stop.latched, sub, within=15)
        latch = c.supervisor.latch
        assert latch is not None and (latch.reason, latch.rule) == ("unit-mismatch", Rule.S7)
        # The wire carried 0.8 mph (what the daemon believes); the lie made it 1.29 mph.
        speeds = [v for _, kind, v in drv.commands if kind in ("start", "speed")]
        assert speeds and max(speeds) <= REVERSE_MAX_MPH + 1e-9
