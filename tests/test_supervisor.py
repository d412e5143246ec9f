"""The supervisor, rule by rule, on an injected clock (each rule id appears in a test name)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from retrotread.drivers import BeltSample, Capabilities, DeviceEvent, DeviceEventKind, Speed, SpeedGrid, SpeedUnit
from retrotread.safety import (
    CommandKind,
    Decision,
    Envelope,
    EnvelopeError,
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

FTMS_LIKE = Capabilities(
    can_drive=True,
    speed_grid=SpeedGrid(SpeedUnit.KMH_HUNDREDTHS, minimum=Speed.from_kmh(0.5), maximum=Speed.from_kmh(20)),
    incline_max_pct=10,
    nominal_period_s=0.1,
)
CSAFE_TENTHS = Capabilities(
    can_drive=True,
    speed_grid=SpeedGrid(SpeedUnit.MPH_TENTHS, minimum=Speed.from_mph(0.5), maximum=Speed.from_mph(12)),
    nominal_period_s=0.1,
)
MANUAL = Capabilities(can_drive=False, nominal_period_s=0.2)


class Belt:
    """Drives a supervisor through time with samples, like the controller does."""

    def __init__(self, mode: Mode = Mode.REVERSE, caps: Capabilities = FTMS_LIKE, **cfg: object) -> None:
        self.sup = Supervisor(SafetyConfig(mode=mode, **cfg))  # type: ignore[arg-type]
        self.t = 100.0
        self.mph = 0.0
        self.log: list[Decision] = [self.sup.boot(self.t), self.sup.arm(caps, self.t)]

    def run(self, seconds: float, mph: float | None = None, dt: float = 0.1) -> Decision:
        """Samples at ``mph`` (or the current speed) and ticks for ``seconds``; all decisions merged."""
        if mph is not None:
            self.mph = mph
        total = Decision()
        end = self.t + seconds
        while self.t < end - 1e-9:
            self.t += dt
            total += self.sup.observe(BeltSample(self.t, Speed.from_mph(self.mph)), self.t)
            total += self.sup.tick(self.t)
        self.log.append(total)
        return total

    def ask(self, req: object) -> Decision:
        d = self.sup.request(req, self.t)  # type: ignore[arg-type]
        self.log.append(d)
        return d

    def standing(self) -> Belt:
        self.run(1.2, 0.0)
        return self


def kinds(d: Decision) -> list[CommandKind]:
    return [c.kind for c in d.commands]


# --- S1 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mph", [1.5, 0.5, 0.0, -1.0, 1.21, 0.79, math.nan, math.inf, -math.inf])
def test_s1_refuses_speeds_outside_the_envelope_without_clamping(mph: float) -> None:
    b = Belt().standing()
    d = b.ask(Start(Speed.from_mph(mph)))
    assert d.refusal is not None and d.refusal.rule is Rule.S1
    assert d.commands == ()
    assert "S1" in str(d.refusal.rule) and ("envelope" in d.refusal.error or "not a number" in d.refusal.error)


@pytest.mark.parametrize("mph", [0.8, 1.0, 1.2])
def test_s1_accepts_speeds_inside_the_envelope(mph: float) -> None:
    b = Belt().standing()
    assert b.ask(Start(Speed.from_mph(mph))).accepted


def test_s1_config_may_narrow_the_envelope_never_widen_it() -> None:
    Envelope.reverse(0.9, 1.1)
    with pytest.raises(EnvelopeError, match="never widened"):
        Envelope.reverse(0.8, 1.3)
    with pytest.raises(EnvelopeError, match="never widened"):
        Envelope.reverse(0.5, 1.2)
    b = Belt(envelope=Envelope.reverse(0.9, 1.1)).standing()
    assert b.ask(Start(Speed.from_mph(1.15))).refusal is not None


# --- S2 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("caps", [FTMS_LIKE, CSAFE_TENTHS], ids=["kmh-0.01", "mph-0.1"])
def test_s2_commands_round_toward_the_inside(caps: Capabilities) -> None:
    b = Belt(caps=caps).standing()
    d = b.ask(Start(Speed.from_mph(1.2)))
    assert d.commands[0].speed is not None
    assert d.commands[0].speed.mph >= 0.8 - 1e-9  # the start is at the envelope's minimum, rounded up
    b.run(10)
    speeds = [c.speed.mph for dec in b.log for c in dec.commands if c.speed is not None]
    assert max(speeds) <= 1.2 + 1e-9
    assert min(speeds) >= 0.8 - 1e-9


def test_s2_ftms_ends_are_193_and_129() -> None:
    b = Belt(caps=FTMS_LIKE)
    assert b.sup.grid is not None
    assert (b.sup.grid.first, b.sup.grid.last) == (129, 193)


# --- S3 --------------------------------------------------------------------------------------


def test_s3_refuses_to_arm_when_no_device_step_fits_the_envelope() -> None:
    coarse = Capabilities(
        can_drive=True, speed_grid=SpeedGrid(SpeedUnit.KMH, minimum=Speed.from_kmh(1.0), maximum=Speed.from_kmh(20))
    )  # steps at 1 and 2 km/h: 0.62 and 1.24 mph
    b = Belt(caps=coarse).standing()
    assert not b.sup.armed
    d = b.ask(Start(Speed.from_mph(1.0)))
    assert d.refusal is not None and d.refusal.rule is Rule.S3
    assert "envelope" in d.refusal.error


def test_s3_a_belt_without_motor_does_not_arm_reverse_mode() -> None:
    b = Belt(caps=MANUAL).standing()
    d = b.ask(Start(Speed.from_mph(1.0)))
    assert d.refusal is not None and d.refusal.rule is Rule.S3


# --- S4 --------------------------------------------------------------------------------------


def test_s4_start_only_from_standstill_a_moving_belt_is_refused() -> None:
    b = Belt()
    b.run(2, 0.08)  # creeping, below what S11/S15 call motion
    d = b.ask(Start(Speed.from_mph(1.0)))
    assert d.refusal is not None and d.refusal.rule is Rule.S4 and "moving" in d.refusal.error
    assert kinds(d) == [] and b.sup.held_start is None


def test_s4_a_start_inside_the_standstill_window_is_held_then_carried_out() -> None:
    b = Belt()
    b.run(0.5, 0.0)
    d = b.ask(Start(Speed.from_mph(1.0)))
    assert d.accepted and d.held and kinds(d) == []  # never refused for the window alone
    assert [e.kind for e in d.events] == ["start-held"] and d.events[0].rule is Rule.S4
    early = b.run(0.4, 0.0)
    assert kinds(early) == []  # still inside the window
    later = b.run(0.3, 0.0)
    assert kinds(later)[0] is CommandKind.START  # the window completed: carried out on the tick
    assert kinds(later).count(CommandKind.START) == 1
    assert b.sup.held_start is None and b.sup.commanded_to_move
    starts = [e for e in later.events if e.kind == "start"]
    assert starts and starts[0].t - 100.1 >= 1.0 - 1e-9  # not before the belt read 0 for a second


def test_s4_a_start_before_the_first_reading_is_held_not_refused() -> None:
    # A start in the instant after connecting (a press as the daemon comes up): no reading yet, so
    # standstill is unknown. It waits for the window like any held start, and never goes out early.
    b = Belt()
    d = b.ask(Start(Speed.from_mph(1.0)))
    assert d.accepted and d.held and d.refusal is None and kinds(d) == []
    assert [e.kind for e in d.events] == ["start-held"] and d.events[0].rule is Rule.S4
    early = b.run(0.9, 0.0)
    assert kinds(early) == []  # the belt has not read 0 for a second yet
    later = b.run(0.4, 0.0)
    assert kinds(later).count(CommandKind.START) == 1 and b.sup.commanded_to_move


def test_s4_a_start_before_any_reading_expires_if_none_comes() -> None:
    b = Belt()
    assert b.ask(Start(Speed.from_mph(1.0))).held
    d = Decision()
    for _ in range(40):  # ticks only: the device never reports
        b.t += 0.1
        d += b.sup.tick(b.t)
    assert CommandKind.START not in kinds(d)
    assert [e.reason for e in d.events if e.kind == "start-refused"] == ["hold-expired"]


def test_s4_a_held_start_is_refused_if_the_belt_moves_meanwhile() -> None:
    b = Belt()
    b.run(0.3, 0.0)
    assert b.ask(Start(Speed.from_mph(1.0))).held
    d = b.run(0.2, 0.2)  # someone pushes the belt
    d += b.run(2.0, 0.0)
    assert CommandKind.START not in kinds(d)
    refused = [e for e in d.events if e.kind == "start-refused"]
    assert refused and refused[0].rule is Rule.S4 and refused[0].reason == "belt-moved"
    assert b.sup.held_start is None


def test_s4_a_held_start_is_bounded_when_no_reading_comes() -> None:
    b = Belt()
    b.run(0.3, 0.0)
    assert b.ask(Start(Speed.from_mph(1.0))).held
    d = Decision()
    for _ in range(40):  # ticks, no samples: standstill can never be confirmed
        b.t += 0.1
        d += b.sup.tick(b.t)
    assert CommandKind.START not in kinds(d)
    refused = [e for e in d.events if e.kind == "start-refused"]
    assert refused and refused[0].reason == "hold-expired"
    assert b.sup.held_start is None


@pytest.mark.parametrize("stop", [Stop("http"), EStop("estop", Rule.S5, "http")])
def test_s4_s5_a_stop_cancels_a_held_start(stop: object) -> None:
    b = Belt()
    b.run(0.3, 0.0)
    assert b.ask(Start(Speed.from_mph(1.0))).held
    b.ask(stop)
    d = b.run(3.0, 0.0)
    assert CommandKind.START not in kinds(d) and b.sup.held_start is None


def test_s4_s10_a_device_stop_cancels_a_held_start() -> None:
    b = Belt()
    b.run(0.3, 0.0)
    assert b.ask(Start(Speed.from_mph(1.0))).held
    b.sup.device_event(DeviceEvent(b.t, DeviceEventKind.STOPPED_BY_USER), b.t)
    d = b.run(3.0, 0.0)
    assert CommandKind.START not in kinds(d)


def test_s4_a_speed_change_while_held_goes_with_the_start() -> None:
    b = Belt()
    b.run(0.3, 0.0)
    assert b.ask(Start(Speed.from_mph(1.0))).held
    d = b.ask(SetSpeed(Speed.from_mph(1.2)))
    assert d.accepted and d.held and kinds(d) == []
    b.run(1.0, 0.0)
    assert b.sup.target is not None and b.sup.target.mph == pytest.approx(1.2, abs=0.02)


def test_s4_start_at_the_minimum_and_ramp_at_most_0_2_mph_per_second() -> None:
    b = Belt().standing()
    d = b.ask(Start(Speed.from_mph(1.2)))
    assert kinds(d) == [CommandKind.START]
    assert d.commands[0].speed is not None and d.commands[0].speed.mph == pytest.approx(0.8, abs=0.01)
    t_start = b.t
    sent = [(t_start, d.commands[0].speed.mph)]
    for _ in range(40):
        dec = b.run(0.1, b.sup.setpoint.mph)
        sent += [(b.t, c.speed.mph) for c in dec.commands if c.speed is not None]
    assert sent[-1][1] == pytest.approx(1.2, abs=0.01)
    v0 = sent[0][1]
    for t, v in sent:
        assert v - v0 <= 0.2 * (t - t_start) + 1e-9  # never ahead of a 0.2 mph/s ramp


def test_s4_decreases_are_not_rate_limited() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.2)))
    b.run(3, 1.0)
    d = b.ask(SetSpeed(Speed.from_mph(0.8)))
    assert kinds(d) == [CommandKind.SET_SPEED]
    assert d.commands[0].speed is not None and d.commands[0].speed.mph == pytest.approx(0.8, abs=0.01)


# --- S5 / S6 ---------------------------------------------------------------------------------


def test_s5_estop_emits_a_stop_at_once_and_latches() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(2, 1.0)
    d = b.ask(EStop("estop", Rule.S5, "http"))
    assert kinds(d) == [CommandKind.ESTOP]
    assert [e.kind for e in d.events] == ["estop"]
    assert b.sup.latch is not None and b.sup.latch.rule is Rule.S5


def test_s5_stop_repeats_every_250_ms_until_the_belt_reads_zero() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(2, 1.0)
    b.ask(EStop())
    d = b.run(1.1, 0.5, dt=0.05)  # still moving: repeats at 0.25, 0.5, 0.75 and 1.0 s
    assert kinds(d).count(CommandKind.ESTOP) == 4
    b.run(0.2, 0.0)
    d = b.run(1.0, 0.0)
    assert CommandKind.ESTOP not in kinds(d)


def test_s5_stop_unconfirmed_after_5_seconds_is_loud() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(2, 1.0)
    b.ask(EStop())
    d = b.run(5.2, 0.9)
    faults = [e for e in d.events if e.kind == "fault"]
    assert [f.reason for f in faults] == ["stop-unconfirmed"]


def test_s6_latch_refuses_motion_until_reset() -> None:
    b = Belt().standing()
    b.ask(EStop())
    for req in (Start(Speed.from_mph(1.0)), SetSpeed(Speed.from_mph(1.0))):
        d = b.ask(req)
        assert d.refusal is not None and d.refusal.rule is Rule.S6
        assert d.commands == ()
    assert b.ask(Stop()).accepted  # a stop is never refused


def test_s6_reset_refused_while_moving_and_within_2_s_of_motion() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(2, 1.0)
    b.ask(EStop())
    b.run(0.5, 0.6)
    d = b.ask(Reset())
    assert d.refusal is not None and d.refusal.rule is Rule.S6 and "moving" in d.refusal.error
    b.run(1.0, 0.0)
    d = b.ask(Reset())
    assert d.refusal is not None and d.refusal.rule is Rule.S6 and "moved" in d.refusal.error
    b.run(1.2, 0.0)
    d = b.ask(Reset())
    assert d.accepted and d.commands == ()  # a reset never starts the belt
    assert b.sup.latch is None


# --- S7 --------------------------------------------------------------------------------------


def test_s7_any_sample_far_above_the_envelope_trips() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(1, 1.0)
    d = b.run(0.1, 1.75)
    assert kinds(d) == [CommandKind.ESTOP]
    assert b.sup.latch is not None and (b.sup.latch.reason, b.sup.latch.rule) == ("overspeed", Rule.S7)


def test_s7_sustained_overspeed_trips_after_a_second() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.2)))
    b.run(3, 1.2)
    d = b.run(0.8, 1.45)
    assert b.sup.latch is None, d
    b.run(0.4, 1.45)
    assert b.sup.latch is not None and b.sup.latch.reason == "overspeed"


def test_s7_no_response_when_the_belt_ignores_its_command() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(4.5, 0.0)
    assert b.sup.latch is None
    b.run(1.0, 0.0)
    assert b.sup.latch is not None and (b.sup.latch.reason, b.sup.latch.rule) == ("no-response", Rule.S7)


# --- S8 --------------------------------------------------------------------------------------


def test_s8_stale_telemetry_while_moving_trips() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(2, 1.0)
    t = b.t
    d = b.sup.tick(t + 1.4)
    assert kinds(d) == [] or CommandKind.ESTOP not in kinds(d)
    d = b.sup.tick(t + 1.6)
    assert kinds(d) == [CommandKind.ESTOP]
    assert b.sup.latch is not None and (b.sup.latch.reason, b.sup.latch.rule) == ("stale", Rule.S8)


def test_s8_garbage_samples_count_as_no_samples() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(2, 1.0)
    b.run(1.7, math.nan)
    assert b.sup.latch is not None and b.sup.latch.reason == "stale"


def test_s8_threshold_scales_with_the_driver_period_and_is_capped() -> None:
    slow = Capabilities(
        can_drive=True,
        speed_grid=SpeedGrid(SpeedUnit.MPH_TENTHS, minimum=Speed.from_mph(0.5), maximum=Speed.from_mph(12)),
        nominal_period_s=0.8,
    )
    assert Belt(caps=slow).sup.stale_after_s == pytest.approx(2.4)
    very_slow = Capabilities(
        can_drive=True,
        nominal_period_s=2.0,
        speed_grid=SpeedGrid(SpeedUnit.MPH_TENTHS, maximum=Speed.from_mph(12)),
    )
    assert Belt(caps=very_slow).sup.stale_after_s == 3.0
    assert Belt().sup.stale_after_s == 1.5


# --- S9 --------------------------------------------------------------------------------------


def test_s9_link_loss_latches_and_the_first_command_after_reconnect_is_a_stop() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(2, 1.0)
    d = b.sup.device_event(DeviceEvent(b.t, DeviceEventKind.DISCONNECTED, "unplugged"), b.t)
    assert kinds(d) == [CommandKind.ESTOP]
    assert b.sup.latch is not None and b.sup.latch.rule is Rule.S9
    d = b.sup.device_event(DeviceEvent(b.t + 2, DeviceEventKind.CONNECTED), b.t + 2)
    assert kinds(d) == [CommandKind.ESTOP]
    assert b.sup.target is None  # nothing is replayed


# --- S10 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "latches"),
    [
        (DeviceEventKind.SAFETY_KEY, True),
        (DeviceEventKind.CONTROL_LOST, True),
        (DeviceEventKind.STOPPED_BY_USER, False),
        (DeviceEventKind.IDLE, False),
        (DeviceEventKind.ERROR, False),
        (DeviceEventKind.REJECTED, False),
    ],
)
def test_s10_device_reported_stops(kind: DeviceEventKind, latches: bool) -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(2, 1.0)
    d = b.sup.device_event(DeviceEvent(b.t, kind), b.t)
    assert d.commands and d.commands[0].kind.is_stop
    assert b.sup.target is None
    assert (b.sup.latch is not None) is latches
    assert any(e.rule is Rule.S10 for e in d.events)


# --- S11 / S15 -------------------------------------------------------------------------------


def test_s11_motion_nobody_commanded_trips() -> None:
    b = Belt().standing()
    d = b.run(0.3, 0.4)
    assert kinds(d) == [CommandKind.ESTOP]
    assert b.sup.latch is not None and (b.sup.latch.reason, b.sup.latch.rule) == ("uncommanded", Rule.S11)


def test_s11_a_belt_that_resumes_by_itself_after_a_stop_trips() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(2, 1.0)
    b.ask(Stop())
    b.run(0.5, 0.4)
    b.run(0.5, 0.0)
    b.run(0.3, 0.9)  # the console resumed the belt
    assert b.sup.latch is not None and b.sup.latch.reason == "uncommanded"


def test_s11_not_in_deadmill_mode() -> None:
    b = Belt(mode=Mode.DEADMILL, caps=MANUAL)
    b.run(3, 1.5)
    assert b.sup.latch is None


def test_s15_boot_sends_a_stop_first_and_a_moving_belt_latches() -> None:
    sup = Supervisor(SafetyConfig())
    d = sup.boot(0.0)
    assert kinds(d) == [CommandKind.STOP]
    sup.arm(FTMS_LIKE, 0.0)
    d = sup.observe(BeltSample(0.1, Speed.from_mph(1.0)), 0.1)
    assert kinds(d) == [CommandKind.ESTOP]
    assert sup.latch is not None and sup.latch.reason == "uncommanded"


# --- S12 -------------------------------------------------------------------------------------


def test_s12_reverse_arms_at_zero_incline_and_refuses_more() -> None:
    b = Belt().standing()
    assert kinds(b.log[1]) == [CommandKind.SET_INCLINE]
    assert b.log[1].commands[0].incline_pct == 0.0
    d = b.ask(SetIncline(2.0))
    assert d.refusal is not None and d.refusal.rule is Rule.S12
    b2 = Belt(max_incline_pct=3.0).standing()
    assert b2.ask(SetIncline(2.0)).accepted
    assert b2.ask(SetIncline(3.5)).refusal is not None


# --- S13 -------------------------------------------------------------------------------------


def test_s13_deadmill_refuses_start_and_speed_before_any_driver() -> None:
    b = Belt(mode=Mode.DEADMILL, caps=MANUAL).standing()
    for req in (Start(Speed.from_mph(1.0)), SetSpeed(Speed.from_mph(1.0)), SetIncline(0.0)):
        d = b.ask(req)
        assert d.refusal is not None and d.refusal.rule is Rule.S13
        assert d.commands == ()


def test_s13_deadmill_overspeed_alert_once_per_excursion() -> None:
    b = Belt(mode=Mode.DEADMILL, caps=MANUAL)
    d = b.run(1, 4.5)
    assert [e.kind for e in d.events] == ["overspeed-alert"]
    assert d.commands == ()
    d = b.run(1, 3.0) + b.run(1, 4.5)
    assert [e.kind for e in d.events] == ["overspeed-alert"]


def test_s13_a_stop_never_pretends_to_stop_a_belt_without_motor() -> None:
    b = Belt(mode=Mode.DEADMILL, caps=MANUAL)
    b.run(1, 1.5)
    d = b.ask(EStop())
    assert d.commands == ()
    assert "not the belt" in d.events[0].detail


# --- S14 (the cap lives in the session; the supervisor makes the stop) ----------------------


def test_s14_a_volume_cap_stop_is_a_controlled_stop_naming_the_rule() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(2, 1.0)
    d = b.ask(Stop("volume-cap", Rule.S14))
    assert kinds(d) == [CommandKind.STOP]
    assert d.events[0].rule is Rule.S14
    assert b.sup.latch is None


# --- S17 -------------------------------------------------------------------------------------


def test_s17_safety_package_has_no_clock_and_no_io_of_its_own() -> None:
    forbidden = {"time", "asyncio", "socket", "serial", "threading", "os", "datetime", "bleak", "aiomqtt"}
    for name in ("supervisor.py", "envelope.py", "rules.py"):
        tree = ast.parse((Path(__file__).parents[1] / "safety" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                mods = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not (mods & forbidden), f"safety/{name} imports {mods & forbidden}"


def test_s17_the_supervisor_only_knows_the_time_it_is_given() -> None:
    b = Belt().standing()
    b.ask(Start(Speed.from_mph(1.0)))
    b.run(2, 1.0)
    # The same call at the same instant decides the same; only a later instant can make it stale.
    assert b.sup.tick(b.t).commands == ()
    assert kinds(b.sup.tick(b.t + 10)) == [CommandKind.ESTOP]
