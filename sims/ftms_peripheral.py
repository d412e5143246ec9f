"""The simulated FTMS treadmill itself: a GATT server model over belt physics, with faults.

What a real FTMS treadmill does that matters to the driver (docs/ftms.md), and nothing else:

- the Fitness Machine Service (0x1826) with Feature (0x2ACC), the speed and inclination ranges
  (0x2AD4, 0x2AD5), Training Status (0x2AD3), Treadmill Data (0x2ACD, notified every
  ``1 / rate_hz`` s, split into several notifications when ``split`` is on), Fitness Machine Status
  (0x2ADA, notified on every change) and the Control Point (0x2AD9);
- the control point as a server must keep it: a write fails with ATT error 0xFD ("CCCD improperly
  configured") unless indications are on, and with 0xFE ("procedure already in progress") while the
  previous procedure has not been answered; every procedure but Request Control needs control
  (else result 0x05); Start while started fails (0x04); a machine without speed control answers
  Set Target Speed with 0x02; speeds off the machine's grid or range are 0x03. Each procedure is
  answered by the indication ``80 <op> <result>`` a little later (``response_delay_s``), and
  followed by the status it causes (0x04 started, 0x02 stopped, 0x05 target speed …) as real
  machines do;
- control permission and subscriptions belong to one connection and die with it;
- the faults of interfaces.md (``sims.faults``): runaway, stall, unplug (the link drops; the
  machine comes back ``unplug_s`` later), reboot (offline ``reboot_offline_s``, then it resumes the
  belt on its own ``reboot_resume_s`` later), key (status 0x03, the belt coasts to 0), garbage
  (Treadmill Data that cannot decode), ignore (control point writes are never answered),
  console-stop (someone presses Stop on the console: the belt stops, status 0x02 stopped by user);
  plus ``lose_control_at`` (status 0xFF). One ``sims.faults.FaultSchedule`` times them all; the
  link faults are manipulators of the Treadmill Data stream (``sims.link.FaultyLink``).

Every control point write is recorded (``writes``; and one JSON line each in ``trace_path``) with
its monotonic time, its connection number, its bytes, what it decodes to and what was answered.

The clock is real time on asyncio, like ``sims.driver``. This module must not import bleak or the
driver: the bleak backend in ``sims.ftms`` adapts it (``Link`` is all it needs of a connection) and
turns its ``AttError`` into bleak's errors. Nor may it bend a rule of ftms.md to make a test pass:
a driver that works against it must work against a machine that keeps the same rules.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from enum import Enum
from typing import IO, Any, Final, Literal, Protocol

from retrotread.drivers.ftms.codec import (
    CONTROL_POINT_UUID,
    FEATURE_UUID,
    MACHINE_STATUS_UUID,
    SUPPORTED_INCLINATION_RANGE_UUID,
    SUPPORTED_SPEED_RANGE_UUID,
    TRAINING_STATUS_UUID,
    TREADMILL_DATA_UUID,
    ControlRequest,
    ControlResponse,
    FitnessMachineFeature,
    FtmsDecodeError,
    InvalidParameter,
    MachineFeature,
    MachineStatus,
    RequestControl,
    Reset,
    ResultCode,
    SetTargetInclination,
    SetTargetSpeed,
    StartOrResume,
    StatusOpcode,
    StopAction,
    SupportedInclinationRange,
    SupportedSpeedRange,
    TargetSetting,
    TrainingStatus,
    TrainingStatusCode,
    TreadmillData,
    UnknownOpcode,
    decode_control_request,
    encode_control_point,
    encode_feature,
    encode_inclination_range,
    encode_machine_status,
    encode_speed_range,
    encode_training_status,
    encode_treadmill_data,
    split_treadmill_data,
)
from retrotread.drivers.ftms.describe import control_point_json
from retrotread.sims.belt import Belt, Lie
from retrotread.sims.faults import (
    REBOOT_OFFLINE_S,
    REBOOT_RESUME_S,
    UNPLUG_S,
    Fault,
    FaultKind,
    FaultSchedule,
    FaultTimings,
    Recovery,
)
from retrotread.sims.link import FaultyLink, replace

__all__ = [
    "ADDRESS",
    "AttError",
    "CharacteristicSpec",
    "ControlPointWrite",
    "FtmsPeripheral",
    "Link",
    "NotAdvertising",
    "SimMachine",
    "SpeedControl",
]

ADDRESS: Final = "C0:FF:EE:18:26:01"  # a static random address (top bits 11): no real vendor owns it
NAME: Final = "RetroTread SIM"
ATT_MTU: Final = 23  # the default ATT MTU: notifications carry at most 20 bytes (split records)

# ATT error codes (Bluetooth Core Vol 3 Part F 3.4.1.1, and the common profile codes of CSS Part B).
ATT_READ_NOT_PERMITTED: Final = 0x02
ATT_WRITE_NOT_PERMITTED: Final = 0x03
ATT_CCCD_IMPROPERLY_CONFIGURED: Final = 0xFD
ATT_PROCEDURE_ALREADY_IN_PROGRESS: Final = 0xFE


class AttError(Exception):
    """An ATT error response, as the peripheral answers a read or write it refuses."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class NotAdvertising(Exception):
    """The machine cannot be connected to right now (off, unplugged, rebooting)."""


class Link(Protocol):
    """What the peripheral needs of a connection (the bleak backend in ``sims.ftms`` is one)."""

    def deliver(self, uuid: str, data: bytes) -> None:
        """A notification or indication on ``uuid``, delivered to the central in order."""

    def dropped(self, why: str) -> None:
        """The peripheral ended the connection."""


class SpeedControl(Enum):
    YES = "yes"
    NO = "no"  # honest: no speed target bit, no 0x2AD4, Set Target Speed answered 0x02
    CLAIMED = "claimed"  # the Feature claims speed control and 0x2AD4 exists, yet 0x02 (ftms.md)


@dataclass(frozen=True, slots=True)
class SimMachine:
    """How the simulated treadmill is built. Speeds in 0.01 km/h, inclines in 0.1 %, as on the wire."""

    rate_hz: float = 1.0
    speed_min_raw: int = 50  # 0.5 km/h
    speed_max_raw: int = 2000  # 20 km/h
    speed_increment_raw: int = 1  # 0.01 km/h
    incline_min_raw: int = 0
    incline_max_raw: int = 150  # 15 %
    incline_increment_raw: int = 5  # 0.5 %
    split: bool = False
    speed_control: SpeedControl = SpeedControl.YES
    faults: tuple[Fault, ...] = ()
    lose_control_at: float | None = None
    response_delay_s: float = 0.02  # a connection interval or so
    unplug_s: float = UNPLUG_S
    reboot_offline_s: float = REBOOT_OFFLINE_S
    reboot_resume_s: float = REBOOT_RESUME_S
    trace_path: str | None = None
    address: str = ADDRESS
    name: str = NAME
    lie: Lie = Lie.NONE
    """A machine whose unit is mph while it claims km/h (sims.belt.Lie; the S7 unit check)."""
    model: str = ""
    """Device Information model number (0x2A24); empty: the machine has no 0x180A service."""
    maker: str = "Retrotread Sim"
    firmware: str = "1.0"
    countdown_s: float = 0.0
    """After Start the motor waits this long, then runs and notifies 0x04 (TM11GY counts 3 s); a Set
    Target Speed before that drops the link, as on KingSmith machines (hardware.md)."""
    write_without_response: bool = False
    """The control point's properties are write-without-response + indicate (Urevo E1L, 0x24)."""
    needs_start: bool = False
    """Set Target Speed counts only right after a Start (Start while running is taken): otherwise
    it is answered success and ignored, like a Technogym MyRun (qdomyos-zwift forceSpeed)."""
    truncate: int = 0
    """Treadmill Data carries every field, cut to this many bytes (Matrix TouchXL sends 20)."""

    @property
    def has_incline(self) -> bool:
        return self.incline_max_raw > self.incline_min_raw


@dataclass(frozen=True, slots=True)
class CharacteristicSpec:
    uuid: str
    handle: int
    properties: tuple[Literal["read", "write", "write-without-response", "notify", "indicate"], ...]


@dataclass(frozen=True, slots=True)
class ControlPointWrite:
    """One write to the control point, as the machine saw it."""

    t: float
    """Monotonic time of the write."""
    conn: int
    """Which connection (1 for the first, 2 after the first reconnect, …)."""
    data: bytes
    request: ControlRequest | None
    """What it decodes to (``None`` if it does not decode)."""
    result: ResultCode | None
    """What the machine answers, or ``None`` when it refused the write itself or ignores it."""
    refused: str | None = None
    """Why the write failed at the ATT level (``cccd``, ``busy``) or ``ignored`` (fault)."""

    @property
    def hex(self) -> str:
        return self.data.hex()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.t, "conn": self.conn, "hex": self.hex}
        if self.request is not None:
            out.update(control_point_json(self.request))
        out["result"] = self.result.name.lower() if self.result is not None else None
        if self.refused is not None:
            out["refused"] = self.refused
        return out


class FtmsPeripheral:
    """One simulated FTMS treadmill. ``power_on()`` starts it, ``power_off()`` ends it."""

    def __init__(self, machine: SimMachine | None = None) -> None:
        self.machine = machine or SimMachine()
        m = self.machine
        self.address = m.address
        self.name = m.name
        self.gatt = _gatt(m)
        self.belt = Belt(motorized=True, t=time.monotonic())
        self.writes: list[ControlPointWrite] = []
        self.log: list[tuple[float, str, str]] = []
        """(monotonic t, what, detail): connects, subscriptions, reads, writes, faults."""
        self.connections = 0
        self._powered = False
        self._online = False
        self._link: Link | None = None
        self._subscribed: set[str] = set()
        self._control: Link | None = None
        self._busy = False
        self._running = False
        self._target_raw = 0
        self._counting_down = False
        self._start_armed = False  # a Start came since the last Set Target Speed (needs_start)
        self._started_at: float | None = None
        self._resume_raw = 0
        # Treadmill Data is the stream the link faults hit (stall, garbage, unplug: sims.link);
        # status and control point indications still flow while it stalls, as on a hung sensor.
        self.data_link: FaultyLink[bytes] = FaultyLink(
            self._send_data, garbage=replace(_garbage), unplug=self._unplugged, plug=self._replugged
        )
        self.schedule = FaultSchedule(
            m.faults,
            self,
            link=self.data_link,
            device="FTMS treadmill",
            timings=FaultTimings(m.unplug_s, m.reboot_offline_s, m.reboot_resume_s),
        )
        self._t0 = 0.0
        self._ticker: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._answers: set[asyncio.TimerHandle] = set()
        self._trace: IO[str] | None = None

    # -- power ----------------------------------------------------------------------------------

    @property
    def powered(self) -> bool:
        return self._powered

    async def power_on(self) -> None:
        if self._powered:
            return
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        self._t0 = now
        self.belt = Belt(motorized=True, t=now)
        self._powered = self._online = True
        self._running = False
        self._target_raw = self._resume_raw = 0
        self._started_at = None
        self.data_link.clear()
        self.data_link.plugged = True
        m = self.machine
        if m.trace_path:
            # Opened once, line-buffered: a test and debugging aid, not a hot path.
            self._trace = open(m.trace_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115, ASYNC230
        self.schedule.start(now)
        self.schedule.attach(loop)
        if m.lose_control_at is not None:
            self._later(m.lose_control_at, self.revoke_control)
        self._ticker = loop.create_task(self._run(), name=f"ftms peripheral {self.address}")

    async def power_off(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            try:
                await ticker
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        self.schedule.stop()
        for handle in self._timers | self._answers:
            handle.cancel()
        self._timers.clear()
        self._answers.clear()
        link = self._link
        self._forget_link()
        if link is not None:
            link.dropped("powered off")
        self._powered = self._online = False
        if self._trace is not None:
            self._trace.close()
            self._trace = None

    def _later(self, delay: float, callback: Any, *args: Any) -> None:
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            callback(*args)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    # -- GATT server ----------------------------------------------------------------------------

    def connect(self, link: Link) -> None:
        if not self._online:
            raise NotAdvertising(f"{self.name} ({self.address}) is not advertising")
        if self._link is not None and self._link is not link:
            raise NotAdvertising(f"{self.name} is connected to another central")
        self._link = link
        self.connections += 1
        self._note("connect", f"connection {self.connections}")

    def disconnect(self, link: Link) -> None:
        if link is self._link:
            self._note("disconnect", "by the central")
            self._forget_link()

    def _forget_link(self) -> None:
        # Subscriptions, control permission and a procedure in progress all belong to the link.
        self._link = None
        self._subscribed.clear()
        self._control = None
        self._busy = False
        for handle in self._answers:
            handle.cancel()
        self._answers.clear()

    def _drop(self, why: str) -> None:
        link = self._link
        self._note("drop", why)
        self._forget_link()
        if link is not None:
            link.dropped(why)

    def _require(self, link: Link) -> None:
        if link is not self._link:
            raise NotAdvertising("not connected")

    def subscribe(self, link: Link, uuid: str, on: bool) -> None:
        self._require(link)
        if on:
            self._subscribed.add(uuid)
        else:
            self._subscribed.discard(uuid)
        self._note("subscribe" if on else "unsubscribe", uuid[4:8])

    def subscribed(self, uuid: str) -> bool:
        return uuid in self._subscribed

    def read(self, link: Link, uuid: str) -> bytes:
        self._require(link)
        m = self.machine
        self._note("read", uuid[4:8])
        if uuid == FEATURE_UUID:
            return encode_feature(_feature(m))
        if uuid == SUPPORTED_SPEED_RANGE_UUID:
            return encode_speed_range(SupportedSpeedRange(m.speed_min_raw, m.speed_max_raw, m.speed_increment_raw))
        if uuid == SUPPORTED_INCLINATION_RANGE_UUID:
            return encode_inclination_range(
                SupportedInclinationRange(m.incline_min_raw, m.incline_max_raw, m.incline_increment_raw)
            )
        if uuid == TRAINING_STATUS_UUID:
            return encode_training_status(self._training_status())
        if m.model and uuid in DIS_UUIDS:
            return {DIS_UUIDS[0]: m.maker, DIS_UUIDS[1]: m.model, DIS_UUIDS[2]: m.firmware}[uuid].encode()
        raise AttError(ATT_READ_NOT_PERMITTED, f"{uuid[4:8]} is not readable")

    def write(self, link: Link, uuid: str, data: bytes) -> None:
        """A write with response: returns when the machine accepted the write (not the procedure)."""
        self._require(link)
        if uuid != CONTROL_POINT_UUID:
            raise AttError(ATT_WRITE_NOT_PERMITTED, f"{uuid[4:8]} is not writable")
        now = time.monotonic()
        if CONTROL_POINT_UUID not in self._subscribed:
            self._record(ControlPointWrite(now, self.connections, data, _decoded(data), None, "cccd"))
            raise AttError(ATT_CCCD_IMPROPERLY_CONFIGURED, "CCCD improperly configured: indications are off")
        if self._busy:
            self._record(ControlPointWrite(now, self.connections, data, _decoded(data), None, "busy"))
            raise AttError(ATT_PROCEDURE_ALREADY_IN_PROGRESS, "procedure already in progress")
        if self.schedule.active(FaultKind.IGNORE):
            self._record(ControlPointWrite(now, self.connections, data, _decoded(data), None, "ignored"))
            return
        self.belt.advance_to(now)
        op, result, request, statuses = self._procedure(link, data)
        self._record(ControlPointWrite(now, self.connections, data, request, result))
        self._busy = True
        response = encode_control_point(ControlResponse(op, result))
        handle: asyncio.TimerHandle

        def answer() -> None:
            self._answers.discard(handle)
            self._busy = False
            if self._link is link:
                self._send(CONTROL_POINT_UUID, response)
                for status in statuses:
                    self._status(status)

        handle = asyncio.get_running_loop().call_later(self.machine.response_delay_s, answer)
        self._answers.add(handle)

    def _record(self, write: ControlPointWrite) -> None:
        self.writes.append(write)
        self._note("write", write.hex)
        if self._trace is not None:
            self._trace.write(json.dumps(write.to_json()) + "\n")

    def _note(self, what: str, detail: str) -> None:
        self.log.append((time.monotonic(), what, detail))

    def _send(self, uuid: str, data: bytes) -> None:
        link = self._link
        if link is not None and uuid in self._subscribed:
            link.deliver(uuid, data)

    def _status(self, status: MachineStatus) -> None:
        self._send(MACHINE_STATUS_UUID, encode_machine_status(status))

    # -- the machine ----------------------------------------------------------------------------

    def _procedure(self, link: Link, data: bytes) -> tuple[int, ResultCode, ControlRequest | None, list[MachineStatus]]:
        """Carry out one request; its opcode, result, what it decoded to, and the statuses it causes."""
        try:
            request = decode_control_request(data)
        except UnknownOpcode as exc:
            return exc.opcode, ResultCode.OP_CODE_NOT_SUPPORTED, None, []
        except InvalidParameter as exc:
            return exc.opcode, ResultCode.INVALID_PARAMETER, None, []
        except FtmsDecodeError:
            return (data[0] if data else 0), ResultCode.INVALID_PARAMETER, None, []
        op = int(request.op)
        if isinstance(request, RequestControl):
            self._control = link
            return op, ResultCode.SUCCESS, request, []
        if self._control is not link:
            return op, ResultCode.CONTROL_NOT_PERMITTED, request, []
        m = self.machine
        belt = self.belt
        if isinstance(request, Reset):
            self._halt()
            self._target_raw = 0
            self._control = None
            return op, ResultCode.SUCCESS, request, [MachineStatus(StatusOpcode.RESET)]
        if isinstance(request, SetTargetSpeed):
            raw = request.speed_raw
            if m.speed_control is not SpeedControl.YES:
                return op, ResultCode.OP_CODE_NOT_SUPPORTED, request, []
            if not (m.speed_min_raw <= raw <= m.speed_max_raw) or raw % m.speed_increment_raw:
                return op, ResultCode.INVALID_PARAMETER, request, []
            if self._counting_down:
                # KingSmith (hardware.md): a speed write while the motor spins up drops the link.
                self._drop("speed written during the start countdown")
                return op, ResultCode.OPERATION_FAILED, request, []
            if m.needs_start and not self._start_armed:
                self._note("ignored", "Set Target Speed without a Start before it")
                return op, ResultCode.SUCCESS, request, []
            self._start_armed = False
            self._target_raw = raw
            if self._running:
                belt.command_mps = _mps(raw) * m.lie.takes
            return op, ResultCode.SUCCESS, request, [MachineStatus(StatusOpcode.TARGET_SPEED_CHANGED, raw)]
        if isinstance(request, SetTargetInclination):
            raw = request.incline_raw
            if not m.has_incline:
                return op, ResultCode.OP_CODE_NOT_SUPPORTED, request, []
            if not (m.incline_min_raw <= raw <= m.incline_max_raw) or raw % max(1, m.incline_increment_raw):
                return op, ResultCode.INVALID_PARAMETER, request, []
            belt.incline_pct = raw / 10
            return op, ResultCode.SUCCESS, request, [MachineStatus(StatusOpcode.TARGET_INCLINE_CHANGED, raw)]
        if isinstance(request, StartOrResume):
            if m.needs_start and self._running:
                self._start_armed = True
                return op, ResultCode.SUCCESS, request, []
            if self._running or self._counting_down or not belt.powered:
                return op, ResultCode.OPERATION_FAILED, request, []
            self._start_armed = True
            if m.countdown_s > 0:
                self._counting_down = True
                # On the machine's own clock: a dropped link does not stop a countdown (S9's danger).
                self._timers.add(asyncio.get_running_loop().call_later(m.countdown_s, self._countdown_over))
                return op, ResultCode.SUCCESS, request, []
            self._run_belt()
            return op, ResultCode.SUCCESS, request, [MachineStatus(StatusOpcode.STARTED_OR_RESUMED_BY_USER)]
        # Stop or Pause: the one request left.
        was_running = self._running
        self._halt()
        if request.stop:
            self._target_raw = 0
        status = MachineStatus(StatusOpcode.STOPPED_OR_PAUSED_BY_USER, int(request.action))
        return op, ResultCode.SUCCESS, request, [status] if was_running else []

    def _countdown_over(self) -> None:
        if not self._counting_down:
            return
        self._counting_down = False
        self.belt.advance_to(time.monotonic())
        self._run_belt()
        self._status(MachineStatus(StatusOpcode.STARTED_OR_RESUMED_BY_USER))

    def _run_belt(self) -> None:
        # A machine started with no target runs at its minimum speed, as real ones do.
        self._running = True
        self._started_at = time.monotonic()
        self.belt.command_mps = _mps(self._target_raw or self.machine.speed_min_raw) * self.machine.lie.takes

    def _halt(self) -> None:
        self._counting_down = False
        self._running = False
        self._started_at = None
        self.belt.stop_motor()
        self.schedule.clear(FaultKind.RUNAWAY)

    def _training_status(self) -> TrainingStatus:
        return TrainingStatus(TrainingStatusCode.MANUAL_MODE if self._running else TrainingStatusCode.IDLE)

    async def _run(self) -> None:
        period = 1.0 / self.machine.rate_hz
        k = 0
        while True:
            k += 1
            delay = self._t0 + k * period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            self.belt.advance_to(now)
            if self._link is not None:
                self.data_link.write(self._treadmill_data(now))

    def _send_data(self, packet: bytes) -> None:
        self._send(TREADMILL_DATA_UUID, packet)

    def _treadmill_data(self, now: float) -> list[bytes]:
        belt = self.belt
        kmh = belt.speed_mps * 3.6 * self.machine.lie.reports  # what it says, in whatever unit it uses
        elapsed = int(now - self._started_at) if self._started_at is not None else 0
        if self.machine.truncate:
            full = encode_treadmill_data(self._full_record(kmh, elapsed))
            return [full[: self.machine.truncate]]  # Matrix TouchXL: cut at 20
        if not self.machine.split:
            record = TreadmillData(
                speed_kmh=kmh,
                distance_m=int(belt.distance_m),
                incline_pct=belt.incline_pct,
                elapsed_s=elapsed,
            )
            return [encode_treadmill_data(record)]
        # More fields than fit one 20-byte notification: sent as a split record (ftms.md).
        return split_treadmill_data(self._full_record(kmh, elapsed), ATT_MTU - 3)

    def _full_record(self, kmh: float, elapsed: int) -> TreadmillData:
        """Every field the machines we model send when one record does not fit a notification."""
        belt = self.belt
        return TreadmillData(
            speed_kmh=kmh,
            average_speed_kmh=belt.distance_m / elapsed * 3.6 if elapsed else 0.0,
            distance_m=int(belt.distance_m),
            incline_pct=belt.incline_pct,
            elevation_gain_up_m=0.0,
            elevation_gain_down_m=0.0,
            energy_total_kcal=int(belt.distance_m / 20),
            energy_per_hour_kcal=int(kmh * 60),
            energy_per_minute_kcal=int(kmh),
            elapsed_s=elapsed,
        )

    # -- faults and the console (for fault schedules, tests and demos) --------------------------

    def strike(self, kind: FaultKind) -> None:
        """Make ``kind`` happen now."""
        self.schedule.strike(kind, time.monotonic())

    def on_fault(self, kind: FaultKind, now: float) -> None:
        belt = self.belt
        belt.advance_to(now)
        self._note("fault", kind.value)
        match kind:
            case FaultKind.RUNAWAY:
                belt.run_away()
            case FaultKind.KEY:
                self.pull_key()
            case FaultKind.CONSOLE_STOP:
                self.console_stop()
            case FaultKind.REBOOT:
                self._resume_raw = self._target_raw if self._running else 0
                self._online = False
                self._drop("rebooting")
                self._running = False
                self._started_at = None
                belt.powered = False  # the motor loses power and coasts
            # stall, garbage and unplug are the data link's (sims.link); ignore is read by write().

    def on_recovery(self, step: Recovery, now: float) -> None:
        if step is Recovery.BACK:
            self._rebooted()
        elif step is Recovery.RESUME:
            self._resume()

    def _unplugged(self) -> None:
        # The link drops; the machine keeps doing what it was told (the danger of S9).
        self._online = False
        self._drop("unplugged")

    def _replugged(self) -> None:
        self._back("replugged")

    def _back(self, why: str) -> None:
        self._online = True
        self._note("online", why)

    def _rebooted(self) -> None:
        self.belt.advance_to(time.monotonic())
        self.belt.powered = True
        self.belt.command_mps = 0.0
        self._target_raw = 0
        self._back("rebooted")

    def _resume(self) -> None:
        # The machine restores its last program and starts the belt with nobody asking (S11).
        if not self._resume_raw:
            return
        self.belt.advance_to(time.monotonic())
        self._target_raw = self._resume_raw
        self._run_belt()
        self._note("resume", str(self._resume_raw))
        self._status(MachineStatus(StatusOpcode.STARTED_OR_RESUMED_BY_USER))

    def pull_key(self) -> None:
        """The safety key comes out: the motor loses power, the belt coasts, status 0x03."""
        self.belt.advance_to(time.monotonic())
        self._halt()
        self._target_raw = 0
        self.belt.powered = False
        self._status(MachineStatus(StatusOpcode.STOPPED_BY_SAFETY_KEY))

    def insert_key(self) -> None:
        self.belt.powered = True
        self.schedule.clear(FaultKind.KEY)

    def revoke_control(self) -> None:
        """The machine takes control back (another client, or its own console): status 0xFF."""
        self._note("fault", "control-lost")
        self._control = None
        self._status(MachineStatus(StatusOpcode.CONTROL_PERMISSION_LOST))

    def console_stop(self, action: StopAction = StopAction.STOP) -> None:
        """Someone presses stop (or pause) on the console: status 0x02."""
        self.belt.advance_to(time.monotonic())
        self._halt()
        self._status(MachineStatus(StatusOpcode.STOPPED_OR_PAUSED_BY_USER, int(action)))

    def console_start(self) -> None:
        """Someone presses start on the console: the belt runs, status 0x04."""
        self.belt.advance_to(time.monotonic())
        if not self._running and self.belt.powered:
            self._run_belt()
            self._status(MachineStatus(StatusOpcode.STARTED_OR_RESUMED_BY_USER))

    @property
    def running(self) -> bool:
        return self._running

    @property
    def in_control(self) -> bool:
        """Whether the connected central holds control."""
        return self._control is not None and self._control is self._link


DIS_UUIDS: Final = (  # Device Information: manufacturer, model number, firmware revision
    "00002a29-0000-1000-8000-00805f9b34fb",
    "00002a24-0000-1000-8000-00805f9b34fb",
    "00002a26-0000-1000-8000-00805f9b34fb",
)


def _mps(raw: int) -> float:
    return raw / 100 / 3.6


def _garbage(n: int) -> bytes:
    # Flags 0xfffe announce every field (some 40 bytes); five arrive: no decoder can use it.
    return bytes((0xFE, 0xFF, 0x13, 0x37, n & 0xFF))


def _decoded(data: bytes) -> ControlRequest | None:
    try:
        return decode_control_request(data)
    except FtmsDecodeError:
        return None


def _feature(m: SimMachine) -> FitnessMachineFeature:
    features = MachineFeature.TOTAL_DISTANCE | MachineFeature.ELAPSED_TIME
    if m.has_incline:
        features |= MachineFeature.INCLINATION
    if m.split:
        features |= MachineFeature.AVERAGE_SPEED | MachineFeature.ELEVATION_GAIN | MachineFeature.EXPENDED_ENERGY
    targets = TargetSetting(0)
    if m.speed_control is not SpeedControl.NO:
        targets |= TargetSetting.SPEED
    if m.has_incline:
        targets |= TargetSetting.INCLINATION
    return FitnessMachineFeature(features, targets)


def _gatt(m: SimMachine) -> tuple[CharacteristicSpec, ...]:
    """The characteristics in handle order; each notifying one has its CCCD at handle + 1."""
    chars: list[tuple[str, tuple[Literal["read", "write", "write-without-response", "notify", "indicate"], ...]]] = [
        (FEATURE_UUID, ("read",)),
        (TREADMILL_DATA_UUID, ("notify",)),
        (TRAINING_STATUS_UUID, ("read", "notify")),
    ]
    if m.speed_control is not SpeedControl.NO:
        chars.append((SUPPORTED_SPEED_RANGE_UUID, ("read",)))
    if m.has_incline:
        chars.append((SUPPORTED_INCLINATION_RANGE_UUID, ("read",)))
    cp_write: Literal["write", "write-without-response"] = (
        "write-without-response" if m.write_without_response else "write"
    )
    chars += [(CONTROL_POINT_UUID, (cp_write, "indicate")), (MACHINE_STATUS_UUID, ("notify",))]
    specs = []
    handle = 0x0021
    for uuid, props in chars:
        specs.append(CharacteristicSpec(uuid, handle, props))
        handle += 3  # declaration, value, CCCD
    return tuple(specs)
