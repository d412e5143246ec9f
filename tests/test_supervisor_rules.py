"""The supervisor under random requests, samples, device events, disconnects and clock jumps.

A Hypothesis RuleBasedStateMachine checks, after every step:
- S1/S2: in reverse mode no command is above the envelope (decoded at the device's own grid, as a
  driver would encode it), and no speed command is below it;
- S6: while latched (before or after the step) only stops are emitted;
- S5: every trigger (an ``estop`` event) yields a stop command in the same step;
- S6: a reset never emits a start;
- S13: deadmill mode never emits a motion command;
- S4: a start goes out only after the belt was measured at 0 for a second, and only if a start or
  speed request came after the last stop; a start while the belt reads 0 (fresh) is never refused
  for the window alone, it is held.

CI runs the "ci" profile (500 examples); ``--hypothesis-profile=thorough`` runs 20,000.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from hypothesis import assume, event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from retrotread.drivers import BeltSample, Capabilities, DeviceEvent, DeviceEventKind, Speed, SpeedGrid, SpeedUnit
from retrotread.drivers.units import Rounding
from retrotread.safety import (
    CommandKind,
    Decision,
    Envelope,
    EStop,
    Mode,
    Reset,
    Rule,
    SafetyConfig,
    SetIncline,
    SetSpeed,
    Start,
    Stop,
    Supervisor,
)
from retrotread.safety.supervisor import STANDSTILL_MPH, STANDSTILL_S, Request

DEVICES = {
    "ftms-0.01kmh": Capabilities(
        can_drive=True,
        speed_grid=SpeedGrid(SpeedUnit.KMH_HUNDREDTHS, minimum=Speed.from_kmh(0.5), maximum=Speed.from_kmh(20)),
        incline_max_pct=15,
        nominal_period_s=1.0,
    ),
    "ftms-0.1kmh": Capabilities(
        can_drive=True,
        speed_grid=SpeedGrid(SpeedUnit.KMH_TENTHS, minimum=Speed.from_kmh(0.8), maximum=Speed.from_kmh(16)),
        nominal_period_s=0.5,
    ),
    "csafe-0.1mph": Capabilities(
        can_drive=True,
        speed_grid=SpeedGrid(SpeedUnit.MPH_TENTHS, minimum=Speed.from_mph(0.5), maximum=Speed.from_mph(12)),
        nominal_period_s=0.1,
    ),
    "csafe-0.01mph": Capabilities(
        can_drive=True,
        speed_grid=SpeedGrid(SpeedUnit.MPH_HUNDREDTHS, minimum=Speed.from_mph(0.5), maximum=Speed.from_mph(12)),
        nominal_period_s=0.1,
    ),
    "coarse-1kmh": Capabilities(
        can_drive=True,
        speed_grid=SpeedGrid(SpeedUnit.KMH, minimum=Speed.from_kmh(1), maximum=Speed.from_kmh(20)),
        nominal_period_s=0.1,
    ),
    "manual": Capabilities(can_drive=False, nominal_period_s=0.2),
}

speeds_mph = st.one_of(
    st.floats(min_value=0.7, max_value=1.3),
    st.floats(min_value=-2, max_value=20),
    st.sampled_from([0.8, 1.2, 0.0, math.nan, math.inf, -math.inf, 1.2000001, 0.7999999]),
)
belt_mph = st.one_of(
    st.floats(min_value=0, max_value=1.3),
    st.floats(min_value=0, max_value=3),
    st.sampled_from([0.0, 0.0, math.nan, 1.0, 1.75]),
)
envelopes = st.tuples(st.floats(0.8, 1.2), st.floats(0.8, 1.2)).map(sorted).map(lambda lh: Envelope.reverse(*lh))


def on_wire_mph(speed: Speed, caps: Capabilities) -> float:
    """What the device would read back for ``speed``: drivers encode to the nearest grid step."""
    grid = caps.speed_grid
    return grid.decode(grid.encode(speed, Rounding.NEAREST)).mph


class SupervisorMachine(RuleBasedStateMachine):
    sup: Supervisor
    caps: Capabilities
    envelope: Envelope
    t: float

    @initialize(
        device=st.sampled_from(sorted(DEVICES)),
        mode=st.sampled_from(Mode),
        envelope=envelopes,
        max_incline=st.sampled_from([0.0, 0.0, 5.0]),
    )
    def boot(self, device: str, mode: Mode, envelope: Envelope, max_incline: float) -> None:
        self.caps = DEVICES[device]
        self.envelope = envelope
        self.mode = mode
        self.t = 1000.0
        self.zero_since: float | None = None  # the first of the samples reading 0 now, as the test saw them
        self.last_valid: tuple[float, float] | None = None  # (t, mph) of the last valid sample
        self.start_asked = False  # a start or speed request came after the last stop
        self.sup = Supervisor(SafetyConfig(mode=mode, envelope=envelope, max_incline_pct=max_incline))
        self.check(self.sup.boot(self.t), latched_before=False)
        self.check(self.sup.arm(self.caps, self.t), latched_before=False)

    # --- the world ---------------------------------------------------------------------------

    @rule(dt=st.floats(0.0, 0.3), mph=belt_mph, samples=st.integers(1, 15))
    def belt_runs(self, dt: float, mph: float, samples: int) -> None:
        for _ in range(samples):
            self._step(dt, mph)

    @rule(seconds=st.floats(1.0, 3.0))
    def belt_stands_still(self, seconds: float) -> None:
        self._follow(seconds, lambda: 0.0)

    @rule(seconds=st.floats(0.1, 8.0), lag=st.floats(0.0, 0.08))
    def belt_follows_its_command(self, seconds: float, lag: float) -> None:
        """A healthy motor: the belt reads close to what the device was last told."""
        self._follow(seconds, lambda: max(0.0, self.sup.setpoint.mph - lag))

    def _follow(self, seconds: float, mph: Callable[[], float]) -> None:
        end = self.t + seconds
        while self.t < end:
            self._step(0.1, mph())

    def _step(self, dt: float, mph: float) -> None:
        """One sample and one tick, ``dt`` later, with the invariants checked after each."""
        self.t += dt
        if math.isfinite(mph) and mph >= 0:
            self.last_valid = (self.t, mph)
            if mph > STANDSTILL_MPH:
                self.zero_since = None
            elif self.zero_since is None:
                self.zero_since = self.t
        latched = self.sup.latch is not None
        self.check(self.sup.observe(BeltSample(self.t, Speed.from_mph(mph)), self.t), latched)
        latched = self.sup.latch is not None
        self.check(self.sup.tick(self.t), latched)

    @rule(mph=st.floats(0.7, 1.3), run_s=st.floats(0.5, 8.0), lag=st.floats(0.0, 0.08))
    def a_person_starts_a_set(self, mph: float, run_s: float, lag: float) -> None:
        """What people do most: wait for the belt to stand, clear the stop, start, walk."""
        if not self.sup.link_up:
            self.device_says(DeviceEventKind.CONNECTED)
        self.belt_stands_still(2.5)
        if self.sup.latch is not None:
            self.reset()
        self.start(mph)
        self.belt_follows_its_command(run_s, lag)

    @rule(wait_s=st.floats(0.1, 0.9), run_s=st.floats(0.0, 3.0), pushed=st.booleans())
    def a_person_starts_right_after_the_belt_stops(self, wait_s: float, run_s: float, pushed: bool) -> None:
        """The S4 hold: a start inside the standstill window waits for it (or a push refuses it)."""
        self._follow(wait_s, lambda: 0.0)
        self.start(1.0)
        if pushed:
            self._step(0.1, 0.3)
        self.belt_follows_its_command(run_s, 0.0)

    @rule(jump=st.floats(0.0, 12.0))
    def clock_jumps(self, jump: float) -> None:
        self.t += jump
        self.check(self.sup.tick(self.t), self.sup.latch is not None)

    @rule(kind=st.sampled_from(DeviceEventKind))
    def device_says(self, kind: DeviceEventKind) -> None:
        latched = self.sup.latch is not None
        d = self.sup.device_event(DeviceEvent(self.t, kind), self.t)
        self.check(d, latched)
        if kind is DeviceEventKind.CONNECTED and self.caps.can_drive:
            assert d.commands and d.commands[0].kind.is_stop  # S9: the first thing after reconnect
        if kind in (DeviceEventKind.SAFETY_KEY, DeviceEventKind.CONTROL_LOST, DeviceEventKind.DISCONNECTED):
            assert self.sup.latch is not None

    # --- requests ------------------------------------------------------------------------------

    @rule(mph=speeds_mph)
    def start(self, mph: float) -> None:
        self.request(Start(Speed.from_mph(mph)), mph)

    @rule(mph=speeds_mph)
    def set_speed(self, mph: float) -> None:
        self.request(SetSpeed(Speed.from_mph(mph)), mph)

    @rule(pct=st.one_of(st.floats(-5, 20), st.sampled_from([math.nan, math.inf])))
    def set_incline(self, pct: float) -> None:
        self.request(SetIncline(pct), None)

    @rule()
    def stop(self) -> None:
        d = self.request(Stop(), None)
        assert d.accepted

    @rule(rule_=st.sampled_from([Rule.S5, Rule.S15]))
    def estop(self, rule_: Rule) -> None:
        self.request(EStop("estop", rule_), None)
        assert self.sup.latch is not None

    @rule()
    def reset(self) -> None:
        d = self.request(Reset(), None)
        assert all(c.kind is not CommandKind.START and c.kind is not CommandKind.SET_SPEED for c in d.commands)
        assert d.commands == ()

    @precondition(lambda self: self.sup.latch is not None)
    @rule()
    def motion_while_latched_is_refused(self) -> None:
        d = self.request(Start(Speed.from_mph(1.0)), 1.0)
        assert not d.accepted

    def request(self, req: Request, mph: float | None) -> Decision:
        latched = self.sup.latch is not None
        if isinstance(req, Start | SetSpeed):
            self.start_asked = True
        d = self.sup.request(req, self.t)
        self.check(d, latched)
        if isinstance(req, Start) and d.refusal is not None and d.refusal.rule is Rule.S4:
            lv = self.last_valid
            fresh_zero = lv is not None and lv[1] <= STANDSTILL_MPH and self.t - lv[0] <= self.sup.stale_after_s
            assert not fresh_zero, f"S4: a start refused for the standstill window alone: {d.refusal.error}"
        if d.held:
            event("start held")
        event(f"{type(req).__name__} {'accepted' if d.accepted else 'refused ' + str(d.refusal and d.refusal.rule)}")
        if mph is not None and d.accepted and isinstance(req, Start | SetSpeed):
            assert self.mode is Mode.REVERSE
            assert math.isfinite(mph) and self.envelope.holds(Speed.from_mph(mph)), "S1: accepted outside"
        return d

    # --- the invariants --------------------------------------------------------------------------

    def check(self, d: Decision, latched_before: bool) -> None:
        latched = latched_before or self.sup.latch is not None
        top = self.envelope.high.mph + 1e-9
        bottom = self.envelope.low.mph - 1e-9
        for cmd in d.commands:
            if latched:
                assert cmd.kind.is_stop, f"S6: {cmd.kind} while latched"
            if self.mode is Mode.DEADMILL:
                assert cmd.kind in (CommandKind.STOP, CommandKind.ESTOP), f"S13: {cmd.kind} in deadmill"
            if cmd.speed is not None:
                wire = on_wire_mph(cmd.speed, self.caps)
                assert wire <= top, f"S1/S2: {wire} mph on the wire"
                assert wire >= bottom, f"S1: {wire} mph below the envelope"
        if any(c.kind is CommandKind.START for c in d.commands):
            assert self.start_asked, "S4/S9: a start with no request after the last stop"
            zs, lv = self.zero_since, self.last_valid
            assert zs is not None and lv is not None and lv[0] - zs >= STANDSTILL_S - 1e-9, "S4: start before 1 s at 0"
            event("start emitted")
        if any(e.kind in ("stop", "estop") for e in d.events):
            self.start_asked = False
        trips = [e for e in d.events if e.kind == "estop"]
        for e in trips:
            event(f"trip {e.reason}")
        if any(c.kind is CommandKind.SET_SPEED for c in d.commands):
            event("speed command emitted")
        if trips and self.caps.can_drive:
            assert any(c.kind is CommandKind.ESTOP for c in d.commands), "S5: a trip without a stop"

    @invariant()
    def latch_names_a_rule(self) -> None:
        if self.sup.latch is not None:
            assert self.sup.latch.rule in Rule
            assert self.sup.target is None
            assert self.sup.setpoint.mps == 0

    @invariant()
    def target_is_inside_the_envelope(self) -> None:
        target = self.sup.target
        if target is not None:
            assume(self.caps.can_drive)
            assert self.envelope.low.mph - 1e-9 <= on_wire_mph(target, self.caps) <= self.envelope.high.mph + 1e-9


TestSupervisorS1S2S5S6S13Machine = SupervisorMachine.TestCase
