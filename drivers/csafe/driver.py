"""``csafe://`` — a gym treadmill console that speaks CSAFE over RS-232 (docs/csafe.md).

URL: ``csafe:///dev/ttyUSB0?baud=9600&unit=mph&res=0.1&poll_hz=10``. Options: ``baud`` (9600),
``unit`` (``mph`` or ``kmh``) and ``res`` (``1``, ``0.1`` or ``0.01``): the grid speeds are written
on (default 0.1 mph, CSAFE unit 17); ``min_mph``/``max_mph`` (0.5, 12): the speed range, which
CSAFE cannot report; ``max_grade_pct`` (15; 0 for a console without an incline motor); ``poll_hz``
(10).

The link is master/slave (csafe.md "Link"): one frame out, one answer back, 1 s to answer. One task
per driver (``_run``) owns the line: it polls GetStatus, GetSpeed, GetGrade and GetHorizontal in one
frame at ``poll_hz`` on monotonic deadlines, sends queued commands between polls, counts timeouts,
and after ``TIMEOUTS_BEFORE_REOPEN`` in a row gives the line back to the link machine
(``drivers.link_state``), which closes the port and reopens it with capped backoff.
Answers are matched to the frames in flight in order, by what they answer (a poll's answer carries
GetSpeed; a stop's carries nothing), so a late answer never passes for another frame's.

Rules this driver carries out (it decides none of them):

- S2: speeds are encoded with ``Rounding.NEAREST`` on the chosen grid; the supervisor has already
  snapped them to a step of that grid inside the envelope, so nearest is exact.
- S5: ``emergency_stop()`` writes SetSpeed 0 + GoFinished at once, ahead of anything queued, even
  with a poll in flight; the in-flight frame's late answer is matched and dropped (csafe.md
  "Stopping"). Queued motion commands are dropped, never sent after a stop.
- S9: a port that drops (EOF, EIO) yields ``DISCONNECTED`` from the transport's callback, not after
  a poll timeout; on every (re)connection the first frame written is the stop, and ``CONNECTED`` is
  yielded only once the console answered it. Nothing queued before a loss is replayed.
- S10: state changes to Idle/Finished that we did not ask for yield ``IDLE``, Error yields
  ``ERROR``, a motion command the console refused yields ``REJECTED`` (and raises
  ``CommandRejected`` to the caller); InUse that we did not ask for yields ``STARTED_BY_USER``.

This module must not decide anything about safety, convert units beyond encoding a ``Speed`` on the
device's grid, or re-implement framing: bytes go through ``drivers.csafe.codec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import NoReturn, Self
from urllib.parse import SplitResult

from retrotread.drivers.csafe.codec import (
    EXTENDED_START,
    METRES_PER_DISTANCE_COUNT,
    STANDARD_START,
    STOP,
    Answer,
    BadFrame,
    Command,
    CommandCode,
    Frame,
    FrameDecoder,
    MachineState,
    PreviousFrame,
    Response,
    Unit,
    UnitSystem,
    decode_error_code,
    decode_grade,
    decode_horizontal,
    decode_odometer,
    decode_service_code,
    decode_speed,
    decode_units,
    decode_utilization,
    decode_version,
    encode_frame,
    get_error_code,
    get_grade,
    get_horizontal,
    get_odometer,
    get_service_code,
    get_speed,
    get_status,
    get_units,
    get_utilization,
    get_version,
    go_have_id,
    go_idle,
    go_in_use,
    parse_response,
    set_grade,
    set_speed,
    set_timeout,
    stop_commands,
    unit_for,
)
from retrotread.drivers.errors import (
    CodecError,
    CommandRejected,
    ConfigError,
    DriverError,
    LinkLost,
    NotConnected,
    RemoteProtocolError,
    Unsupported,
)
from retrotread.drivers.link_state import Backoff
from retrotread.drivers.plausible import SampleGate
from retrotread.drivers.registry import float_option
from retrotread.drivers.serial_driver import SerialDriver, port_and_baud
from retrotread.drivers.serial_link import LogLimiter
from retrotread.drivers.types import BeltSample, Capabilities, DeviceEvent, DeviceEventKind, DeviceInfo, Update
from retrotread.drivers.units import Rounding, Speed, SpeedGrid, SpeedUnit

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 1.0  # csafe.md "Link": no answer within 1 s is a timeout
TIMEOUTS_BEFORE_REOPEN = 3  # csafe.md: "after many timeouts in a row, close and reopen the port"
COMMAND_DEADLINE_S = 3 * ANSWER_TIMEOUT_S  # backstop: the slot (<= 1 s) then the answer (1 s, expired by _run)
GRADE_UNIT = Unit.GRADE_TENTHS_PERCENT  # csafe.md lists %, 0.1 % and 0.01 %; 0.1 % is the console grid
POLL = (get_status(), get_speed(), get_grade(), get_horizontal())
IDENTIFY = (get_status(), get_version(), get_units(), get_error_code())  # at connect (hardware.md)
# A gym operator's counters (hardware.md): a frame of their own, so a console that refuses one of
# them still told us who it is.
COUNTERS = (get_utilization(), get_odometer(), get_service_code())
CONSOLE_TIMEOUT_S = 10  # SetTimeout: a console left in a state by a lost host falls back (hardware.md)
CONFIRM_TRIES = 5  # GetStatus frames that may pass before a state the walk asked for must show
# The walk to InUse (hardware.md "CSAFE state machine"): strict consoles take SetSpeed only in
# InUse, reached only through Idle and HaveID; Finished (after our stop) goes back through Idle.
_WALK = {
    MachineState.READY: (go_idle, MachineState.IDLE),
    MachineState.FINISHED: (go_idle, MachineState.IDLE),
    MachineState.PAUSE: (go_idle, MachineState.IDLE),
    MachineState.IDLE: (go_have_id, MachineState.HAVE_ID),
    MachineState.HAVE_ID: (go_in_use, MachineState.IN_USE),
}
BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
_REFUSED = (PreviousFrame.REJECTED, PreviousFrame.BAD, PreviousFrame.NOT_READY)
_UNITS = {
    ("mph", 1.0): SpeedUnit.MPH,
    ("mph", 0.1): SpeedUnit.MPH_TENTHS,
    ("mph", 0.01): SpeedUnit.MPH_HUNDREDTHS,
    ("kmh", 1.0): SpeedUnit.KMH,
    ("kmh", 0.1): SpeedUnit.KMH_TENTHS,
    ("kmh", 0.01): SpeedUnit.KMH_HUNDREDTHS,
}
_OPTIONS = frozenset({"baud", "unit", "res", "min_mph", "max_mph", "max_grade_pct", "poll_hz"})


class _Kind(Enum):
    POLL = "poll"
    COMMAND = "command"
    STOP = "stop"


@dataclass(eq=False)
class _Frame:
    """A frame we write, and what we know of its answer."""

    kind: _Kind
    label: str
    commands: tuple[Command, ...]
    waiter: asyncio.Future[None] | None = None
    wire: bytes = b""
    asks: frozenset[int] = frozenset()
    deadline: float = 0.0
    superseded: bool = False  # an emergency stop went out while this frame was in flight
    response: Response | None = None  # its answer, once matched
    motion: bool = False  # a start/speed/incline: a refusal is a device-reported stop (S10)
    starts: bool = False  # carries GoInUse

    def __post_init__(self) -> None:
        if not self.wire:
            self.wire = encode_frame(self.commands)
        self.asks = frozenset(c.code for c in self.commands)
        self.starts = CommandCode.GoInUse in self.asks

    def settle(self, error: DriverError | None = None) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


@dataclass
class _Counters:
    frames_out: int = 0
    answers: int = 0
    timeouts: int = 0
    bad_frames: int = 0
    unsolicited: int = 0
    dropped_answers: int = 0
    """Late answers to frames an emergency stop overtook, matched and dropped (csafe.md)."""
    rejected: int = 0
    reconnects: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class CsafeDriver(SerialDriver):
    """A CSAFE console on a serial port (see the module docstring)."""

    task_name = "csafe"

    reports_rejections = True  # a refused frame is yielded as a REJECTED event (S10)

    def __init__(
        self,
        path: str,
        *,
        baudrate: int = 9600,
        speed_unit: SpeedUnit = SpeedUnit.MPH_TENTHS,
        min_speed: Speed | None = None,
        max_speed: Speed | None = None,
        max_grade_pct: float = 15.0,
        poll_hz: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = f"csafe://{path}"
        self.poll_hz = poll_hz
        self._unit = int(unit_for(speed_unit))
        self._stop_commands = stop_commands(self._unit)  # csafe.md "Stopping": SetSpeed 0 + GoFinished
        self._stop_wire = encode_frame(self._stop_commands)  # built once: the stop is the hot path (B1)
        self._caps = Capabilities(
            can_drive=True,
            speed_grid=SpeedGrid(
                speed_unit,  # CSAFE sets speed in whole counts of the unit configured (csafe.md)
                minimum=min_speed if min_speed is not None else Speed.from_mph(0.5),
                maximum=max_speed if max_speed is not None else Speed.from_mph(12.0),
            ),
            incline_min_pct=0.0,
            incline_max_pct=max_grade_pct,
            incline_increment_pct=0.1,
            nominal_period_s=1.0 / poll_hz,
        )
        super().__init__(path, baudrate=baudrate, backoff=backoff)
        self._decoder = FrameDecoder()
        self._in_flight: deque[_Frame] = deque()
        self._queue: deque[_Frame] = deque()
        self._wake = asyncio.Event()
        self._timeouts_in_a_row = 0
        self._state: MachineState | None = None
        self._stop_sent = True  # the first frame on every link is a stop (S9)
        self._last_answered: _Frame | None = None
        self._noisy = LogLimiter(log)
        self._stops = 0  # stop frames written: a start's state walk ends when one goes out (S5)
        self._device: DeviceInfo | None = None
        # A mile is the coarsest distance count a console reports (csafe codec's units): one count
        # of it must pass when it ticks over.
        self._gate = SampleGate(max(METRES_PER_DISTANCE_COUNT.values()), name=self.url, logger=log)
        self.counters = _Counters()

    @classmethod
    def from_url(cls, url: SplitResult, options: dict[str, str]) -> Self:
        path, baud = port_and_baud(
            "csafe",
            url,
            options,
            known=_OPTIONS,
            bauds=BAUD_RATES,
            default_baud=9600,
            example="csafe:///dev/ttyUSB0 or csafe:///dev/serial/by-id/usb-FTDI_...",
        )
        unit = options.get("unit", "mph")
        res = float_option(options, "res", 0.1, minimum=0.01, maximum=1.0)
        speed_unit = next((u for (name, step), u in _UNITS.items() if name == unit and abs(step - res) < 1e-9), None)
        if speed_unit is None:
            raise ConfigError(
                f"csafe:// options unit={unit!r} res={options.get('res', '0.1')!r}: "
                "allowed unit mph or kmh with res 1, 0.1 or 0.01"
            )
        min_mph = float_option(options, "min_mph", 0.5, maximum=30.0)
        max_mph = float_option(options, "max_mph", 12.0, maximum=30.0)
        if min_mph > max_mph:
            raise ConfigError(f"csafe:// options min_mph={min_mph:g} is above max_mph={max_mph:g}")
        return cls(
            path,
            baudrate=baud,
            speed_unit=speed_unit,
            min_speed=Speed.from_mph(min_mph),
            max_speed=Speed.from_mph(max_mph),
            max_grade_pct=float_option(options, "max_grade_pct", 15.0, maximum=40.0),
            poll_hz=float_option(options, "poll_hz", 10.0, minimum=1.0, maximum=50.0),
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def device(self) -> DeviceInfo | None:
        return self._device

    @property
    def state(self) -> MachineState | None:
        """The console's state as its last answer said (``None`` before one, or if it never says)."""
        return self._state

    @property
    def dropped_answers(self) -> int:
        return self.counters.dropped_answers

    @property
    def queued(self) -> int:
        """Commands waiting for the line (behind the frame in flight)."""
        return len(self._queue)

    # -- lifecycle -------------------------------------------------------------------------

    def _closing(self) -> None:
        self._forget(NotConnected(f"{self.url} was closed"))

    # -- commands ------------------------------------------------------------------------------

    async def start(self, speed: Speed) -> None:
        """Walk the console to InUse, confirming each state, then set the speed (hardware.md).

        A stop that goes out during the walk ends it: nothing after a stop moves the belt (S5).
        A console that never says its state (csafe.md quirk: Offline in every frame) gets the one
        frame GoInUse + SetSpeed, as before the walk.
        """
        stops = self._stops
        if self._state is None:
            await self._command("start", (go_in_use(), self._set_speed(speed)), motion=True)
            return
        for _ in range(len(_WALK) + 1):
            state = self._state
            if state is MachineState.IN_USE:
                break
            step = _WALK.get(state) if state is not None else None
            if step is None:
                self._walk_failed(f"the console is in {_name(state)}: no start from there")
            go, goal = step
            await self._command(f"start: {go().name}", (go(),), motion=True)
            if self._stops != stops:
                return  # a stop went out while the walk waited (S5)
            await self._confirm(goal, stops)
            if self._stops != stops:
                return
        else:
            self._walk_failed(f"the console did not reach InUse (it says {_name(self._state)})")
        await self._command("start: SetSpeed", (self._set_speed(speed),), motion=True)

    async def _confirm(self, goal: MachineState, stops: int) -> None:
        """GetStatus until the console says ``goal``; a console that does not is a refused start."""
        for _ in range(CONFIRM_TRIES):
            if self._state is goal or self._stops != stops:
                return
            await self._command(f"start: confirm {goal.name}", (get_status(),), motion=False)
        if self._state is not goal and self._stops == stops:
            self._walk_failed(f"the console did not reach {goal.name} (it says {_name(self._state)})")

    def _walk_failed(self, why: str) -> NoReturn:
        # A start that cannot be carried out is a device-reported stop (S10), like a refused frame.
        log.warning("%s: %s", self.path, why)
        self._emit(DeviceEvent(time.monotonic(), DeviceEventKind.REJECTED, why))
        raise CommandRejected(f"{self.url}: {why}")

    async def set_speed(self, speed: Speed) -> None:
        await self._command("set_speed", (self._set_speed(speed),), motion=True)

    async def set_incline(self, incline_pct: float) -> None:
        if not 0 <= incline_pct <= self._caps.incline_max_pct:
            raise Unsupported(f"{self.url}: grade {incline_pct!r} % is outside 0..{self._caps.incline_max_pct:g} %")
        await self._command("set_incline", (set_grade(incline_pct, GRADE_UNIT, Rounding.NEAREST),), motion=True)

    async def stop(self) -> None:
        """The stop frame as the next frame on the line, right after the answer in flight.

        It does not wait for the console's answer: the guard sends stops from the safety tick,
        which must never wait on a console that went quiet, and a refused stop changes nothing
        (the supervisor repeats stops until the belt reads 0, S5).
        """
        self._require_link()
        self._drop_queued("a stop")
        self._queue.appendleft(self._stop_frame("stop"))
        self._wake.set()

    async def emergency_stop(self) -> None:
        """The stop frame, written now: ahead of the poll in flight and of everything queued (S5)."""
        self._require_link()
        self._drop_queued("an emergency stop")
        for frame in self._in_flight:
            frame.superseded = True  # its late answer is matched and dropped (csafe.md "Stopping")
        self._send(self._stop_frame("emergency stop"))

    def _set_speed(self, speed: Speed) -> Command:
        try:
            # S2: the supervisor snapped the speed to this grid inside the envelope: nearest is exact.
            return set_speed(speed, self._unit, Rounding.NEAREST)
        except CodecError as exc:
            raise Unsupported(f"{self.url}: cannot send {speed}: {exc}") from exc

    def _stop_frame(self, label: str, *, waited: bool = False) -> _Frame:
        waiter = asyncio.get_running_loop().create_future() if waited else None
        return _Frame(_Kind.STOP, label, self._stop_commands, waiter, wire=self._stop_wire)

    def _require_link(self) -> None:
        if not self._connected or not self._link.is_open:
            raise NotConnected(f"{self.url}: the console is not connected")

    async def _command(self, label: str, commands: tuple[Command, ...], *, motion: bool) -> None:
        self._require_link()
        frame = _Frame(_Kind.COMMAND, label, commands, asyncio.get_running_loop().create_future(), motion=motion)
        self._queue.append(frame)
        self._wake.set()
        await self._acknowledged(frame)

    async def _acknowledged(self, frame: _Frame) -> None:
        assert frame.waiter is not None
        try:
            async with asyncio.timeout(COMMAND_DEADLINE_S):
                await frame.waiter
        except TimeoutError:
            with contextlib.suppress(ValueError):
                self._queue.remove(frame)
            raise CommandRejected(f"{self.url}: no answer to {frame.label} within {COMMAND_DEADLINE_S:g} s") from None

    def _drop_queued(self, why: str) -> None:
        while self._queue:
            frame = self._queue.popleft()
            # Never replayed after the stop (S5, S9); the guard drops motion the same way.
            log.info("%s: dropped %s: %s went out first", self.path, frame.label, why)
            frame.settle()

    # -- the line ------------------------------------------------------------------------------

    def _reconnected(self) -> None:
        # The link machine logged the recovery; the first frame the console got was a stop (S9).
        self.counters.reconnects += 1
        self._emit(DeviceEvent(time.monotonic(), DeviceEventKind.CONNECTED, f"{self.path} answers again"))

    async def _greet(self) -> None:
        """The first frame on a fresh link is a stop (S9); the console is there once it answers."""
        self._decoder = FrameDecoder()  # bytes of the old link mean nothing on this one
        self._gate.rebase()  # the console may have counted on, or restarted, while we were away
        self._state = None
        self._timeouts_in_a_row = 0
        for _ in range(TIMEOUTS_BEFORE_REOPEN):
            frame = self._stop_frame("stop (first frame on this link)", waited=True)
            assert frame.waiter is not None
            self._send(frame)
            try:
                async with asyncio.timeout(ANSWER_TIMEOUT_S):
                    await frame.waiter
                await self._identify()
                return
            except TimeoutError:
                self.counters.timeouts += 1
                with contextlib.suppress(ValueError):
                    self._in_flight.remove(frame)
        raise NotConnected(
            f"{self.path}: no CSAFE answer to {TIMEOUTS_BEFORE_REOPEN} frames: is the console on, "
            f"the cable right (RJ-45 pin 3 Rx, 4 Tx, 7 ground) and the baud rate {self._link.baudrate}?"
        )

    async def _identify(self) -> None:
        """GetStatus, GetVersion, GetUnits, GetErrorCode, then SetTimeout (hardware.md), one frame
        at a time. A console that answers none of it (csafe.md quirk) is still driven."""
        response = await self._ask("identify", IDENTIFY)
        if response is not None:
            self._device = self._describe(response)
            counters = await self._ask("counters", COUNTERS)
            if counters is not None:
                self._device = _with_counters(self._device, counters)
        await self._ask("set timeout", (set_timeout(CONSOLE_TIMEOUT_S),))

    async def _ask(self, label: str, commands: tuple[Command, ...]) -> Response | None:
        frame = _Frame(_Kind.COMMAND, label, commands, asyncio.get_running_loop().create_future())
        assert frame.waiter is not None
        self._send(frame)
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await frame.waiter
        except (TimeoutError, DriverError) as exc:
            with contextlib.suppress(ValueError):
                self._in_flight.remove(frame)
            log.info("%s: no answer to %s (%s): going on without it", self.path, label, exc or "timeout")
            return None
        return frame.response

    def _describe(self, response: Response) -> DeviceInfo:
        maker = model = firmware = units = warning = None
        error: int | None = None
        with contextlib.suppress(CodecError):
            if (answer := response.answer(CommandCode.GetVersion)) is not None:
                v = decode_version(answer)
                # CSAFE gives numbers only: the manufacturer id, the class (3 treadmill) and model.
                maker = f"CSAFE manufacturer {v.manufacturer}"
                model = f"class {v.class_id} model {v.model}"
                firmware = f"{v.version}.{v.release}"
        with contextlib.suppress(CodecError):
            if (answer := response.answer(CommandCode.GetErrorCode)) is not None:
                error = decode_error_code(answer)
        with contextlib.suppress(CodecError, ValueError):
            if (answer := response.answer(CommandCode.GetUnits)) is not None:
                units = "mph" if decode_units(answer) is UnitSystem.ENGLISH else "km/h"
        ours = self._caps.speed_grid.unit.quantity.label
        if units is not None and units != ours:
            # The console's display units differ from the URL's: SetSpeed carries its unit code, so
            # a strict console may still take it, but the unit check (S7) will be watching.
            warning = f"the console says its units are {units}; the URL says unit={ours.replace('/', '')}"
            log.warning("%s: %s", self.path, warning)
        return DeviceInfo(
            maker=maker, model=model, firmware=firmware, units=units, units_warning=warning, error_code=error
        )

    async def _converse(self) -> str:
        """Poll and send until the link drops or goes silent; returns why."""
        period = 1.0 / self.poll_hz
        next_poll = time.monotonic()
        while True:
            self._wake.clear()
            if not self._link.is_open or not self._connected:
                return f"{self.path} dropped"
            now = time.monotonic()
            self._expire(now)
            if self._timeouts_in_a_row >= TIMEOUTS_BEFORE_REOPEN:
                return f"no answer to {self._timeouts_in_a_row} frames in a row"
            if self._in_flight:
                wake_at = self._in_flight[0].deadline
            elif self._queue:
                self._send(self._queue.popleft())
                continue
            elif now >= next_poll:
                self._send(_Frame(_Kind.POLL, "poll", POLL))
                while next_poll <= now:
                    next_poll += period  # on the deadline grid; a late answer skips polls, never bursts
                continue
            else:
                wake_at = next_poll
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake_at - time.monotonic())):
                    await self._wake.wait()

    def _send(self, frame: _Frame) -> None:
        frame.deadline = time.monotonic() + ANSWER_TIMEOUT_S
        try:
            self._link.write(frame.wire)
        except NotConnected as exc:
            frame.settle(exc)
            raise
        self._in_flight.append(frame)
        self.counters.frames_out += 1
        if frame.kind is _Kind.STOP:
            self._stop_sent = True
            self._stops += 1
        elif frame.starts:
            self._stop_sent = False
        self._wake.set()

    def _expire(self, now: float) -> None:
        while self._in_flight and self._in_flight[0].deadline <= now:
            frame = self._in_flight.popleft()
            self.counters.timeouts += 1
            self._timeouts_in_a_row += 1
            self._noisy(
                "timeout", logging.WARNING, "%s: no answer to %s within %g s", self.path, frame.label, ANSWER_TIMEOUT_S
            )
            frame.settle(CommandRejected(f"{self.url}: no answer to {frame.label} within {ANSWER_TIMEOUT_S:g} s"))

    def _lost(self, why: str) -> None:
        # Nothing in flight or queued survives the link (S9: never replayed).
        self._forget(LinkLost(f"{self.url}: {why}"))
        self._wake.set()

    def _forget(self, error: DriverError) -> None:
        for frame in (*self._in_flight, *self._queue):
            frame.settle(error)
        self._in_flight.clear()
        self._queue.clear()

    def _on_link_lost(self, exc: LinkLost) -> None:
        # Straight from the transport's callback, so the daemon latches within 100 ms (S9).
        self._lose(str(exc))

    def _emit(self, update: Update) -> None:
        self._updates.put_nowait(update)

    # -- answers -------------------------------------------------------------------------------

    def _on_bytes(self, data: bytes, t: float) -> None:
        self._decoder.feed(data)
        for item in self._decoder:
            if isinstance(item, BadFrame):
                whole = len(item.raw) >= 3 and item.raw[0] in (EXTENDED_START, STANDARD_START) and item.raw[-1] == STOP
                self._on_bad_frame(item.reason, whole=whole)
            else:
                self._on_frame(item, t)

    def _on_bad_frame(self, reason: str, *, whole: bool) -> None:
        self.counters.bad_frames += 1
        self._noisy("bad-frame", logging.WARNING, "%s: dropped a bad frame (%s)", self.path, reason)
        if whole and self._in_flight:
            # A whole frame, flag to flag, that does not check: the answer in flight, garbled. Take
            # it as answered (the console is alive) rather than wait a second for a timeout.
            self._timeouts_in_a_row = 0
            frame = self._in_flight.popleft()
            frame.settle()
            self._wake.set()

    def _on_frame(self, frame: Frame, t: float) -> None:
        try:
            response = parse_response(frame.contents)
        except RemoteProtocolError as exc:
            self._on_bad_frame(str(exc), whole=True)
            return
        self._timeouts_in_a_row = 0
        sent = self._match(response)
        self._wake.set()
        if sent is None:
            self.counters.unsolicited += 1
            self._noisy("unsolicited", logging.INFO, "%s: an answer to no frame in flight (late?)", self.path)
            return
        self.counters.answers += 1
        self._observe_state(response, t)
        refused = response.status.previous in _REFUSED
        if sent.kind is _Kind.COMMAND and refused and not sent.superseded:
            self._refused(sent, response, t)
        elif sent.kind is _Kind.STOP and refused:
            # Never a REJECTED event for a stop: it would ask for another stop, forever. The
            # supervisor repeats stops until the belt reads 0 and raises stop-unconfirmed (S5).
            log.warning("%s: the console answered our stop with %s", self.path, response.status.previous.name)
            sent.settle()
        elif sent.kind is _Kind.POLL:
            if refused and self._last_answered is not None and self._last_answered.motion:
                # A console that reports the refusal one frame late ("previous frame" taken literally).
                self._refused(self._last_answered, response, t)
            if sent.superseded:
                self.counters.dropped_answers += 1
            else:
                self._sample(response, t)
        else:
            sent.response = response
            sent.settle()
        self._last_answered = sent

    def _match(self, response: Response) -> _Frame | None:
        """The frame in flight this answers: the oldest one that asked everything it answers."""
        answered = {a.code for a in response.answers}
        for index, frame in enumerate(self._in_flight):
            if answered <= frame.asks:
                for _ in range(index):
                    # Frames before it got no answer at all: the console skipped or lost them.
                    skipped = self._in_flight.popleft()
                    skipped.settle(CommandRejected(f"{self.url}: the console did not answer {skipped.label}"))
                return self._in_flight.popleft()
        return None

    def _refused(self, sent: _Frame, response: Response, t: float) -> None:
        self.counters.rejected += 1
        why = f"the console refused {sent.label} ({response.status.previous.name.lower()})"
        log.warning("%s: %s", self.path, why)
        if sent.motion:
            self._emit(DeviceEvent(t, DeviceEventKind.REJECTED, why))
        sent.settle(CommandRejected(f"{self.url}: {why}"))
        sent.motion = False  # reported once

    def _observe_state(self, response: Response, t: float) -> None:
        state = response.status.state
        if state in (MachineState.UNKNOWN, MachineState.OFFLINE):
            # csafe.md quirk: consoles that say Offline in every frame yet answer data commands.
            return
        before, self._state = self._state, state
        if state is before:
            return
        if state is MachineState.ERROR:
            self._emit(DeviceEvent(t, DeviceEventKind.ERROR, "console state Error"))
        elif before is None:
            return  # the first state on a link is where we start from, not a change
        elif state in (MachineState.IDLE, MachineState.FINISHED) and not self._stop_sent:
            self._emit(DeviceEvent(t, DeviceEventKind.IDLE, f"console went {state.name.title()} by itself"))
        elif state is MachineState.IN_USE and self._stop_sent:
            self._emit(DeviceEvent(t, DeviceEventKind.STARTED_BY_USER, "console went InUse with no start from us"))

    def _sample(self, response: Response, t: float) -> None:
        answer = response.answer(CommandCode.GetSpeed)
        if answer is None:
            self._noisy("no-speed", logging.WARNING, "%s: the console does not answer GetSpeed", self.path)
            return
        try:
            speed = decode_speed(answer)
        except CodecError as exc:
            self._noisy("speed-unit", logging.WARNING, "%s: %s", self.path, exc)
            return
        incline = _optional(decode_grade, response, CommandCode.GetGrade)
        distance = _optional(decode_horizontal, response, CommandCode.GetHorizontal)
        sample = self._gate.admit(BeltSample(t, speed, incline, distance))
        if sample is not None:
            self._emit(sample)

    @property
    def bad_samples(self) -> int:
        """Answers refused because no belt can produce them (plausible.py)."""
        return self._gate.bad_samples


def _with_counters(device: DeviceInfo, response: Response) -> DeviceInfo:
    """Hours of use, odometer and service code, where the console answers them."""
    hours = odometer = service = None
    with contextlib.suppress(CodecError):
        if (answer := response.answer(CommandCode.GetUtilization)) is not None:
            hours = float(decode_utilization(answer))
    with contextlib.suppress(CodecError):
        if (answer := response.answer(CommandCode.GetOdometer)) is not None:
            odometer = decode_odometer(answer)
    with contextlib.suppress(CodecError):
        if (answer := response.answer(CommandCode.GetServiceCode)) is not None:
            service = decode_service_code(answer)
    return replace(device, hours_of_use=hours, odometer_m=odometer, service_code=service)


def _name(state: MachineState | None) -> str:
    return "no known state" if state is None else state.name


def _optional(decode: Callable[[Answer], float], response: Response, code: int) -> float | None:
    """An answer the console may not give (unsupported: status alone, csafe.md quirks)."""
    answer = response.answer(code)
    if answer is None:
        return None
    try:
        return decode(answer)
    except CodecError:
        return None


__all__ = ["CsafeDriver"]
