"""The safety supervisor: one pure state machine that holds every rule of safety.md.

It takes samples (``observe``), requests (``request``), device events (``device_event``) and clock
ticks (``tick``), each with the monotonic time passed in, and returns a ``Decision``: the commands
to send to the driver, in order, and the events to publish. It does no I/O, owns no clock and never
sleeps (S17); the controller feeds it and carries out what it decides.

Where a rule is ours rather than a standard's, the number is a named constant below.

Invariants (checked by the property tests in tests/test_supervisor_rules.py):
- in reverse mode no command above the envelope's top, after the device's rounding (S1, S2);
- while latched, only stops are emitted (S6);
- every trigger yields a stop command in the same step (S5);
- a reset never emits a start (S6);
- a start goes out only after the belt read 0 for STANDSTILL_S, and one that arrives inside that
  window while the belt reads 0 is held, never refused for the window alone (S4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum

from retrotread.drivers.types import (  # RESPONSE_S: S7
    RESPONSE_S,
    BeltSample,
    Capabilities,
    DeviceEvent,
    DeviceEventKind,
)
from retrotread.drivers.units import KMH_PER_MPH, Rounding, Speed
from retrotread.safety.envelope import Envelope, Grid
from retrotread.safety.rules import Rule

# --- our numbers (safety.md marks them "(ours)") ---------------------------------------------
STANDSTILL_MPH = 0.05  # a belt slower than this is standing still
STANDSTILL_S = 1.0  # S4: start only after this long at standstill
START_HOLD_S = 3.0  # S4: a start inside the standstill window is held at most this long
RAMP_MPH_PER_S = 0.2  # S4: increases ramp at most this fast
STOP_REPEAT_S = 0.25  # S5: repeat the stop this often until the belt reports 0
STOP_CONFIRM_S = 5.0  # S5: then raise stop-unconfirmed
RESET_QUIET_S = 2.0  # S6: no reset within this long of the last motion
OVERSPEED_SUSTAINED_MPH = 0.2  # S7: above max + this for OVERSPEED_SUSTAINED_S
OVERSPEED_SUSTAINED_S = 1.0
OVERSPEED_INSTANT_MPH = 0.5  # S7: any sample above max + this
RESPONSE_MPH = 0.1  # S7: the belt must come within this of its command
RAMP_POLL_S = 0.05  # S4: while a ramp runs, the next step is looked for this often (the old 20 Hz)
DUE_MARGIN_S = 1e-4  # next_due: this far past a limit, so the evaluation at the due sees it passed
# S7 unit check: a machine that takes or reports mph where it claims km/h (or the reverse) reads
# 1.609 or 0.621 times its command once the belt has settled (../shared/docs/hardware.md).
UNIT_SETTLE_S = 2.0  # the command unchanged this long: a 1 mph/s drive has reached it
UNIT_CONFIRM_S = 1.0  # then every reading for this long inside the window (two FTMS samples at 1 Hz)
UNIT_RATIO_TOL = 0.08  # the window: within 8 % of 1.609 or of 0.621
STALE_MIN_S = 1.5  # S8: max(3 x the driver's period, this), capped at STALE_MAX_S
STALE_MAX_S = 3.0
UNCOMMANDED_MPH = 0.1  # S11: motion this far above where a stopped belt was
DEADMILL_ALERT_MPH = 4.0  # S13: overspeed-alert threshold on a deadmill
ALERT_HYSTERESIS_MPH = 0.2


class Mode(Enum):
    REVERSE = "reverse"
    DEADMILL = "deadmill"


# --- requests (what a face asks for) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    speed: Speed


@dataclass(frozen=True, slots=True)
class SetSpeed:
    speed: Speed


@dataclass(frozen=True, slots=True)
class SetIncline:
    incline_pct: float


@dataclass(frozen=True, slots=True)
class Stop:
    """A controlled stop. Never refused, never needs a token."""

    reason: str = "stop"
    rule: Rule | None = None


@dataclass(frozen=True, slots=True)
class EStop:
    """An emergency stop: latches (S5, S6)."""

    reason: str = "estop"
    rule: Rule = Rule.S5
    source: str = ""


@dataclass(frozen=True, slots=True)
class Reset:
    """Clear the latch. Never starts the belt."""


Request = Start | SetSpeed | SetIncline | Stop | EStop | Reset


# --- what the supervisor decides ----------------------------------------------------------------


class CommandKind(Enum):
    START = "start"
    SET_SPEED = "set_speed"
    SET_INCLINE = "set_incline"
    STOP = "stop"
    ESTOP = "estop"

    @property
    def is_stop(self) -> bool:
        return self in (CommandKind.STOP, CommandKind.ESTOP)


@dataclass(frozen=True, slots=True)
class DriveCommand:
    kind: CommandKind
    speed: Speed | None = None
    incline_pct: float | None = None


@dataclass(frozen=True, slots=True)
class SafetyEvent:
    """Something to publish: ``kind`` is estop, stop, reset, fault, overspeed-alert, armed ..."""

    kind: str
    t: float
    rule: Rule | None = None
    reason: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    rule: Rule | None
    error: str
    unavailable: bool = False
    """True when the refusal is because the device is unreachable (HTTP 503), not a rule (409)."""


@dataclass(frozen=True, slots=True)
class Decision:
    commands: tuple[DriveCommand, ...] = ()
    events: tuple[SafetyEvent, ...] = ()
    refusal: Refusal | None = None
    held: bool = False
    """True when a start was accepted but waits for the standstill window to complete (S4)."""

    @property
    def accepted(self) -> bool:
        return self.refusal is None

    def __add__(self, other: Decision) -> Decision:
        return Decision(
            self.commands + other.commands,
            self.events + other.events,
            self.refusal or other.refusal,
            self.held or other.held,
        )


NOTHING = Decision()


@dataclass(frozen=True, slots=True)
class Latch:
    reason: str
    rule: Rule
    since: float


@dataclass(frozen=True, slots=True)
class SafetyConfig:
    mode: Mode = Mode.REVERSE
    envelope: Envelope = field(default_factory=Envelope.reverse)
    max_incline_pct: float = 0.0
    deadmill_alert_mph: float = DEADMILL_ALERT_MPH


@dataclass(frozen=True, slots=True)
class HeldStart:
    """A start waiting for the standstill window (S4): carried out by ``tick`` when it completes."""

    speed: Speed
    since: float


@dataclass
class _Stopping:
    since: float
    last_sent: float
    emergency: bool
    escalated: bool = False


@dataclass
class Supervisor:
    """The pure state machine. Build one per treadmill; feed it everything; obey its decisions."""

    config: SafetyConfig
    caps: Capabilities | None = None
    grid: Grid | None = None
    arm_refusal: str | None = None
    latch: Latch | None = None
    link_up: bool = False
    target: Speed | None = None  # what was asked for (after S2 rounding)
    setpoint: Speed = field(default_factory=Speed.zero)  # what the device was last told
    _ramp_from: Speed = field(default_factory=Speed.zero)
    _ramp_t0: float = 0.0
    _stopping: _Stopping | None = None
    held_start: HeldStart | None = None
    _last_sample: BeltSample | None = None
    _last_valid_t: float | None = None
    _last_motion_t: float | None = None
    _still_since: float | None = None
    _over_since: float | None = None
    _response_since: float | None = None
    _setpoint_since: float | None = None  # when the device was last told a new speed (S7 unit check)
    _unit_since: float | None = None  # first settled reading inside a unit-mismatch window (S7)
    _stopped_low_mph: float | None = None  # lowest speed seen since the belt was told to stop
    _seen_first_sample: bool = False
    _alerting: bool = False
    _booted: bool = False

    # ------------------------------------------------------------------ lifecycle

    def boot(self, now: float) -> Decision:
        """The first thing on start: a stop before anything else (S15)."""
        self._booted = True
        self.setpoint = Speed.zero()
        self.target = None
        self._stopped_low_mph = None
        return Decision(
            (DriveCommand(CommandKind.STOP),),
            (SafetyEvent("boot", now, Rule.S15, "startup", "stop sent before anything else"),),
        )

    def arm(self, caps: Capabilities, now: float) -> Decision:
        """Take the device's capabilities; reverse mode arms only if the envelope fits (S3, S12)."""
        self.caps = caps
        self.link_up = True
        if self.config.mode is Mode.DEADMILL:
            self.grid, self.arm_refusal = None, None
            return Decision(events=(SafetyEvent("armed", now, Rule.S13, "deadmill", "measure only"),))
        if not caps.can_drive:
            self.grid = None
            self.arm_refusal = "this device has no motor the daemon can drive; use --mode deadmill"
        else:
            self.grid = Grid.inside(self.config.envelope, caps)
            self.arm_refusal = (
                None
                if self.grid
                else (
                    f"no speed step of this device ({caps.speed_grid}) lies inside the envelope "
                    f"{self.config.envelope.low}..{self.config.envelope.high}"
                )
            )
        if self.arm_refusal:
            return Decision(events=(SafetyEvent("arm-refused", now, Rule.S3, "arming", self.arm_refusal),))
        commands: tuple[DriveCommand, ...] = ()
        if caps.incline_max_pct > 0 and self.latch is None:
            commands = (DriveCommand(CommandKind.SET_INCLINE, incline_pct=0.0),)  # S12
        assert self.grid is not None
        return Decision(
            commands,
            (
                SafetyEvent(
                    "armed",
                    now,
                    Rule.S3,
                    "reverse",
                    f"speeds {self.grid.lowest}..{self.grid.highest}",
                ),
            ),
        )

    @property
    def armed(self) -> bool:
        return self.grid is not None

    @property
    def stale_after_s(self) -> float:
        period = self.caps.nominal_period_s if self.caps else 0.1
        return min(STALE_MAX_S, max(3 * period, STALE_MIN_S))

    @property
    def commanded_to_move(self) -> bool:
        return self.setpoint.mph > 0 or (self.target is not None and self.target.mph > 0)

    @property
    def reverse(self) -> bool:
        return self.config.mode is Mode.REVERSE

    # ------------------------------------------------------------------ triggers

    def trip(self, now: float, reason: str, rule: Rule, detail: str = "") -> Decision:
        """An emergency stop: latch, and write the stop at once (S5, S6)."""
        # A trip while latched keeps the first ``since`` but shows the newest reason.
        self.latch = Latch(reason, rule, self.latch.since if self.latch else now)
        self.held_start = None  # a stop outranks any start, held ones too (S5)
        self.target = None
        self.setpoint = Speed.zero()
        self._response_since = None
        self._begin_stopping(now, emergency=True)
        commands: tuple[DriveCommand, ...] = ()
        if self._may_command_motor():
            commands = (DriveCommand(CommandKind.ESTOP),)
        elif not detail:
            detail = "deadmill: the walker moves this belt; the daemon stopped the session, not the belt"
        return Decision(commands, (SafetyEvent("estop", now, rule, reason, detail),))

    def _may_command_motor(self) -> bool:
        # A stop is harmless to any motor; a belt without one (can_drive False) gets nothing,
        # because the daemon must not pretend to stop a belt it does not drive (S13).
        return self.caps is None or self.caps.can_drive

    def _begin_stopping(self, now: float, *, emergency: bool) -> None:
        last = self._last_sample
        self._stopped_low_mph = last.speed.mph if last is not None and _valid(last) else None
        if not self._may_command_motor():
            self._stopping = None
            return
        if self._stopping is None or (emergency and not self._stopping.emergency):
            self._stopping = _Stopping(since=now, last_sent=now, emergency=emergency)
        else:
            self._stopping.last_sent = now

    # ------------------------------------------------------------------ requests

    def request(self, req: Request, now: float) -> Decision:
        match req:
            case EStop(reason=reason, rule=rule, source=source):
                return self.trip(now, reason, rule, f"from {source}" if source else "")
            case Stop(reason=reason, rule=rule):
                return self._controlled_stop(now, reason, rule)
            case Reset():
                return self._reset(now)
            case Start(speed=speed):
                return self._start(speed, now)
            case SetSpeed(speed=speed):
                return self._set_speed(speed, now)
            case SetIncline(incline_pct=pct):
                return self._set_incline(pct, now)
        raise TypeError(f"not a request: {req!r}")

    def _motion_refusal(self, speed: Speed | None) -> Refusal | None:
        if not self.reverse:
            return Refusal(Rule.S13, "deadmill mode: the daemon never drives the belt; push it")
        if self.latch is not None:
            return Refusal(Rule.S6, f"emergency stop latched ({self.latch.reason}, {self.latch.rule}); reset it first")
        if not self.link_up:
            return Refusal(Rule.S9, "the device is not connected", unavailable=True)
        if self.grid is None:
            return Refusal(Rule.S3, f"reverse mode is not armed: {self.arm_refusal or 'no device yet'}")
        if speed is not None:
            return self.envelope_refusal(speed)
        return None

    def envelope_refusal(self, speed: Speed) -> Refusal | None:
        env = self.config.envelope
        mph = speed.mph
        if not math.isfinite(mph):
            return Refusal(Rule.S1, f"speed {mph!r} is not a number; allowed {env.low.mph:g}..{env.high.mph:g} mph")
        if not env.holds(speed):
            return Refusal(
                Rule.S1,
                f"speed {mph:g} mph is outside the reverse envelope {env.low.mph:g}..{env.high.mph:g} mph",
            )
        return None

    def _start(self, speed: Speed, now: float) -> Decision:
        refusal = self._motion_refusal(speed)
        if refusal:
            return Decision(refusal=refusal)
        if self.commanded_to_move:
            return self._set_speed(speed, now)  # idempotent: a running belt just takes the speed
        if self._last_valid_t is None:
            # S4: no reading at all yet (a start in the first instant after connecting): held like a
            # standstill window not yet complete, so it goes out once the belt has read 0 for the
            # window, and is refused (hold-expired) if no reading comes within START_HOLD_S.
            return self._hold(speed, now, "no speed reading yet; starting once the belt has read 0 for 1 s")
        fresh = now - self._last_valid_t <= self.stale_after_s
        if not fresh or self._still_since is None:
            what = "the belt is moving" if fresh else "no recent speed reading"
            return Decision(
                refusal=Refusal(
                    Rule.S4,
                    f"start only from standstill ({what}): the belt must read 0 for {STANDSTILL_S:g} s first",
                )
            )
        if not self._standstill_confirmed():
            # S4: the belt reads 0 but the window is not complete: hold the start until it is.
            wait = max(0.0, STANDSTILL_S - (now - self._still_since))
            return self._hold(
                speed, now, f"the belt has read 0 for {now - self._still_since:.1f} s; starting in {wait:.1f} s"
            )
        self.held_start = None
        assert self.grid is not None
        self.target = self.grid.snap(speed)
        first = self.grid.lowest
        self.setpoint = first
        self._setpoint_changed(now)
        self._ramp_from, self._ramp_t0 = first, now
        self._stopping = None
        self._stopped_low_mph = None
        self._response_since = now
        return Decision(
            (DriveCommand(CommandKind.START, first),),
            (SafetyEvent("start", now, Rule.S4, "start", f"from {first} ramping to {self.target}"),),
        )

    def _hold(self, speed: Speed, now: float, detail: str) -> Decision:
        """Hold a start until standstill is confirmed (S4), bounded by START_HOLD_S in ``_tick_held``.
        A second start while one is held takes its speed and keeps the first one's clock."""
        since = self.held_start.since if self.held_start is not None else now
        self.held_start = HeldStart(speed, since)
        return Decision(events=(SafetyEvent("start-held", now, Rule.S4, "standstill", detail),), held=True)

    def _standstill_confirmed(self) -> bool:
        """The belt was measured at 0 for STANDSTILL_S: by samples, not by the clock alone (S4)."""
        still, last = self._still_since, self._last_valid_t
        return still is not None and last is not None and last - still >= STANDSTILL_S - 1e-9

    def _drop_held(self, now: float, reason: str, detail: str) -> Decision:
        """A held start that cannot be carried out: refused after all, and said so (S4)."""
        self.held_start = None
        return Decision(events=(SafetyEvent("start-refused", now, Rule.S4, reason, detail),))

    def _tick_held(self, now: float) -> Decision:
        held = self.held_start
        assert held is not None
        refusal = self._motion_refusal(held.speed)
        if refusal is not None:
            return self._drop_held(now, "refused", refusal.error)
        fresh = self._last_valid_t is not None and now - self._last_valid_t <= self.stale_after_s
        if self._standstill_confirmed() and fresh:
            return self._start(held.speed, now)
        if now - held.since >= START_HOLD_S:
            return self._drop_held(
                now, "hold-expired", f"the belt did not read 0 for {STANDSTILL_S:g} s within {START_HOLD_S:g} s"
            )
        return NOTHING

    def _set_speed(self, speed: Speed, now: float) -> Decision:
        refusal = self._motion_refusal(speed)
        if refusal:
            return Decision(refusal=refusal)
        if self.held_start is not None:
            # The start is held for the standstill window (S4): it takes the newer speed.
            self.held_start = replace(self.held_start, speed=speed)
            return Decision(held=True)
        if not self.commanded_to_move:
            return Decision(refusal=Refusal(Rule.S4, "the belt is not running: start it first"))
        assert self.grid is not None
        self.target = self.grid.snap(speed)
        if self.target.mps < self.setpoint.mps:
            # Decreases are never rate-limited (S4).
            self.setpoint = self.target
            self._setpoint_changed(now)
            self._response_since = now
            return Decision((DriveCommand(CommandKind.SET_SPEED, self.target),))
        self._ramp_from, self._ramp_t0 = self.setpoint, now
        return self._ramp(now)

    def _set_incline(self, pct: float, now: float) -> Decision:
        refusal = self._motion_refusal(None)
        if refusal:
            return Decision(refusal=refusal)
        limit = self.config.max_incline_pct
        if self.caps is not None:
            limit = min(limit, self.caps.incline_max_pct)
        if not math.isfinite(pct) or pct < 0 or pct > limit + 1e-9:
            return Decision(refusal=Refusal(Rule.S12, f"incline {pct!r} % is outside 0..{limit:g} %"))
        if self.caps is not None and self.caps.incline_max_pct <= 0:
            return Decision()  # a flat device is already at 0 %
        return Decision((DriveCommand(CommandKind.SET_INCLINE, incline_pct=pct),))

    def _controlled_stop(self, now: float, reason: str, rule: Rule | None) -> Decision:
        self.held_start = None  # a stop outranks any start, held ones too (S5)
        self.target = None
        self.setpoint = Speed.zero()
        self._response_since = None
        self._begin_stopping(now, emergency=False)
        commands = (DriveCommand(CommandKind.STOP),) if self._may_command_motor() else ()
        return Decision(commands, (SafetyEvent("stop", now, rule, reason),))

    def _reset(self, now: float) -> Decision:
        if self.latch is None:
            return Decision()  # idempotent
        if not self.link_up:
            return Decision(refusal=Refusal(Rule.S6, "cannot reset while the device is disconnected", unavailable=True))
        fresh = self._last_valid_t is not None and now - self._last_valid_t <= self.stale_after_s
        if not fresh:
            return Decision(refusal=Refusal(Rule.S6, "no recent speed reading: cannot tell the belt stands still"))
        assert self._last_sample is not None
        if self._last_sample.speed.mph > STANDSTILL_MPH:
            return Decision(refusal=Refusal(Rule.S6, "the belt is still moving"))
        if self._last_motion_t is not None and now - self._last_motion_t < RESET_QUIET_S:
            wait = RESET_QUIET_S - (now - self._last_motion_t)
            return Decision(
                refusal=Refusal(
                    Rule.S6,
                    f"the belt moved {now - self._last_motion_t:.1f} s ago; reset allowed in {wait:.1f} s",
                )
            )
        old = self.latch
        self.latch = None
        self._stopping = None
        return Decision(events=(SafetyEvent("reset", now, Rule.S6, old.reason, f"latched by {old.rule}"),))

    # ------------------------------------------------------------------ device

    def device_event(self, ev: DeviceEvent, now: float) -> Decision:
        match ev.kind:
            case DeviceEventKind.DISCONNECTED:
                self.link_up = False
                return self.trip(now, "link-lost", Rule.S9, ev.detail)
            case DeviceEventKind.CONNECTED:
                self.link_up = True
                self.held_start = None  # nothing from before the loss is carried out (S9)
                # The first thing a reconnected device hears is a stop; nothing is replayed (S9).
                self._begin_stopping(now, emergency=True)
                commands = (DriveCommand(CommandKind.ESTOP),) if self._may_command_motor() else ()
                return Decision(commands, (SafetyEvent("reconnected", now, Rule.S9, "link-back", ev.detail),))
            case DeviceEventKind.SAFETY_KEY:
                return self.trip(now, "safety-key", Rule.S10, ev.detail)
            case DeviceEventKind.CONTROL_LOST:
                return self.trip(now, "control-lost", Rule.S10, ev.detail)
            case (
                DeviceEventKind.STOPPED_BY_USER
                | DeviceEventKind.PAUSED_BY_USER
                | DeviceEventKind.IDLE
                | DeviceEventKind.ERROR
                | DeviceEventKind.REJECTED
            ):
                d = self._controlled_stop(now, ev.kind.value, Rule.S10)
                return replace(d, events=(SafetyEvent("stop", now, Rule.S10, ev.kind.value, ev.detail),))
            case DeviceEventKind.STARTED_BY_USER if self.reverse and not self.commanded_to_move:
                return self.trip(now, "uncommanded", Rule.S11, ev.detail or "started at the console")
            case DeviceEventKind.DEVICE_RESET:
                return Decision(events=(SafetyEvent("device-reset", now, None, "device-reset", ev.detail),))
        return NOTHING

    # ------------------------------------------------------------------ samples

    def observe(self, sample: BeltSample, now: float) -> Decision:
        if not _valid(sample):
            return NOTHING  # garbage counts as no sample (S8 will notice)
        first = not self._seen_first_sample
        self._seen_first_sample = True
        self._last_sample = sample
        self._last_valid_t = now
        mph = sample.speed.mph
        d = NOTHING
        if mph > STANDSTILL_MPH:
            self._last_motion_t = now
            self._still_since = None
            if self.held_start is not None:
                d += self._drop_held(now, "belt-moved", f"the belt moved ({mph:.2f} mph) while the start waited")
        elif self._still_since is None:
            self._still_since = now

        if self._stopping is not None and mph <= STANDSTILL_MPH:
            self._stopping = None
            d += Decision(events=(SafetyEvent("stopped", now, None, "belt at 0"),))

        if not self.reverse:
            return d + self._deadmill_alert(mph, now)

        top = self.config.envelope.high.mph
        # S15: a belt that is moving when the daemon starts was not started by us.
        if first and mph > UNCOMMANDED_MPH and self.latch is None:
            return d + self.trip(now, "uncommanded", Rule.S15, f"belt moving at {mph:.2f} mph at start")
        # S7: overspeed, at once or sustained.
        if mph > top + OVERSPEED_INSTANT_MPH:
            return d + self.trip(now, "overspeed", Rule.S7, f"{mph:.2f} mph")
        if mph > top + OVERSPEED_SUSTAINED_MPH:
            if self._over_since is None:
                self._over_since = now
            elif now - self._over_since >= OVERSPEED_SUSTAINED_S:
                return d + self.trip(now, "overspeed", Rule.S7, f"{mph:.2f} mph for {now - self._over_since:.1f} s")
        else:
            self._over_since = None
        # S11: motion the daemon did not command.
        if not self.commanded_to_move:
            low = self._stopped_low_mph
            low = mph if low is None else min(low, mph)
            self._stopped_low_mph = low
            if mph > low + UNCOMMANDED_MPH:
                return d + self.trip(now, "uncommanded", Rule.S11, f"belt rose to {mph:.2f} mph with no command")
        # S7: the unit check, once the command has settled.
        if (mismatch := self._unit_check(mph, now)) is not None:
            return d + self.trip(now, "unit-mismatch", Rule.S7, mismatch)
        # S7: the belt answered its command.
        if self._response_since is not None and abs(mph - self.setpoint.mph) <= RESPONSE_MPH:
            self._response_since = None
        return d

    def _setpoint_changed(self, now: float) -> None:
        self._setpoint_since = now
        self._unit_since = None

    def _unit_check(self, mph: float, now: float) -> str | None:
        """S7: the detail of a unit mismatch, or ``None``. A honest belt reads about 1x its command."""
        since = self._setpoint_since
        commanded = self.setpoint.mph
        if self.latch is not None or since is None or commanded <= STANDSTILL_MPH or now - since < UNIT_SETTLE_S:
            self._unit_since = None
            return None
        ratio = mph / commanded
        if abs(ratio / KMH_PER_MPH - 1) <= UNIT_RATIO_TOL:
            high = True
        elif abs(ratio * KMH_PER_MPH - 1) <= UNIT_RATIO_TOL:
            high = False
        else:
            self._unit_since = None
            return None
        if self._unit_since is None:
            self._unit_since = now
        if now - self._unit_since < UNIT_CONFIRM_S:
            return None
        claims = self.caps.speed_grid.unit.quantity.label if self.caps is not None else "km/h"
        other = "mph" if claims == "km/h" else "km/h"
        # Reading 1.61 x on a km/h machine: it takes mph (the belt runs fast, readings honest).
        # Reading 0.62 x on a km/h machine: it reports mph (the belt runs right, readings low).
        # The other way round on a machine that claims mph (CSAFE).
        takes = high == (claims == "km/h")
        what = "takes speeds" if takes else "reports speeds"
        seems = (
            f"the machine seems to use {other} where it claims {claims} (it {what} in {other}): "
            f"set unit={other.replace('/', '')} in the driver URL, or add the model to the quirk table"
        )
        return (
            f"belt reads {mph:.2f} mph for a command of {commanded:.2f} mph (ratio {ratio:.3f}) "
            f"for {now - self._unit_since:.1f} s after settling: {seems}"
        )

    def _deadmill_alert(self, mph: float, now: float) -> Decision:
        limit = self.config.deadmill_alert_mph
        if not self._alerting and mph > limit:
            self._alerting = True
            return Decision(
                events=(
                    SafetyEvent(
                        "overspeed-alert", now, Rule.S13, "overspeed-alert", f"{mph:.2f} mph above {limit:g} mph"
                    ),
                )
            )
        if self._alerting and mph < limit - ALERT_HYSTERESIS_MPH:
            self._alerting = False
        return NOTHING

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> Decision:
        """Called at 10 Hz or more (S17): ramps, stop repeats, and the rules that are about time."""
        d = NOTHING
        if self._stopping is not None:
            d += self._tick_stopping(now)
        if not self.reverse:
            return d
        if self.held_start is not None:
            d += self._tick_held(now)
        if self.commanded_to_move:
            last = self._last_valid_t
            if last is None or now - last > self.stale_after_s:
                age = "never" if last is None else f"{now - last:.2f} s ago"
                return d + self.trip(now, "stale", Rule.S8, f"last valid sample {age}")
            if self._over_since is not None and now - self._over_since >= OVERSPEED_SUSTAINED_S:
                return d + self.trip(now, "overspeed", Rule.S7, "sustained")
            if self._response_since is not None and now - self._response_since >= RESPONSE_S:
                return d + self.trip(
                    now,
                    "no-response",
                    Rule.S7,
                    f"belt not within {RESPONSE_MPH} mph of {self.setpoint} after {RESPONSE_S:g} s",
                )
            d += self._ramp(now)
        return d

    def _ramp(self, now: float) -> Decision:
        if self.target is None or self.grid is None or self.setpoint.mps >= self.target.mps:
            return NOTHING
        ideal = Speed.from_mph(self._ramp_from.mph + RAMP_MPH_PER_S * (now - self._ramp_t0))
        step = self.grid.snap(min(ideal, self.target), Rounding.DOWN)
        if step.mps <= self.setpoint.mps:
            return NOTHING
        self.setpoint = step
        self._setpoint_changed(now)
        if self._response_since is None:
            self._response_since = now
        return Decision((DriveCommand(CommandKind.SET_SPEED, step),))

    def _tick_stopping(self, now: float) -> Decision:
        st = self._stopping
        assert st is not None
        d = NOTHING
        if now - st.since >= STOP_CONFIRM_S and not st.escalated:
            st.escalated = True
            d += Decision(
                events=(
                    SafetyEvent(
                        "fault",
                        now,
                        Rule.S5,
                        "stop-unconfirmed",
                        f"the belt has not reported 0 within {STOP_CONFIRM_S:g} s of the stop: CHECK THE TREADMILL",
                    ),
                )
            )
            if not st.emergency:
                d += self.trip(now, "stop-unconfirmed", Rule.S5)
                return d
        due = st.last_sent + STOP_REPEAT_S
        if now >= due - 1e-6 and self.link_up:
            # On a deadline, so a 20 Hz tick repeats every 250 ms, not every 300 (S5, S17).
            st.last_sent = due if now - due < STOP_REPEAT_S else now
            kind = CommandKind.ESTOP if st.emergency else CommandKind.STOP
            d += Decision((DriveCommand(kind),))
        return d

    def next_due(self, now: float) -> float | None:
        """The earliest time at which ``tick`` may decide something by time alone, or None.

        The controller evaluates on each sample and on a deadline (S17); this lets the deadline land
        on a rule's own time instead of the next sample, so no rule waits up to a sample period
        longer than the 20 Hz tick did: a stop's repeat and its confirmation limit (S5), a held
        start's expiry (S4), the stale, sustained-overspeed and no-response limits (S8, S7), and
        while a ramp runs, the next look for a step (every RAMP_POLL_S, as the old tick looked).
        A due a hair past each limit, so the evaluation at it sees the limit passed. Pure, like
        the rest: it only reads the state.
        """
        due: list[float] = []
        st = self._stopping
        if st is not None:
            if self.link_up:
                due.append(st.last_sent + STOP_REPEAT_S)
            if not st.escalated:
                due.append(st.since + STOP_CONFIRM_S + DUE_MARGIN_S)
        if self.reverse:
            if self.held_start is not None:
                due.append(self.held_start.since + START_HOLD_S + DUE_MARGIN_S)
            if self.commanded_to_move:
                if self._last_valid_t is not None:
                    due.append(self._last_valid_t + self.stale_after_s + DUE_MARGIN_S)
                if self._over_since is not None:
                    due.append(self._over_since + OVERSPEED_SUSTAINED_S + DUE_MARGIN_S)
                if self._response_since is not None:
                    due.append(self._response_since + RESPONSE_S + DUE_MARGIN_S)
                if self.target is not None and self.setpoint.mps < self.target.mps:
                    due.append(now + RAMP_POLL_S)
        return min(due) if due else None

    # ------------------------------------------------------------------ views

    def last_motion_age(self, now: float) -> float | None:
        return None if self._last_motion_t is None else now - self._last_motion_t


def _valid(sample: BeltSample) -> bool:
    mph = sample.speed.mph
    return math.isfinite(mph) and mph >= 0
