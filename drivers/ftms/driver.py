"""``ftms://``: a Bluetooth LE FTMS treadmill, through bleak (docs/ftms.md).

URLs: ``ftms://AA:BB:CC:DD:EE:FF`` (the address; a UUID on macOS) or ``ftms://?name=PREFIX`` (the
first device heard whose name starts with PREFIX and that advertises FTMS, 0x1826). Options:
``timeout`` (connecting, and scanning for a name, in s; default 10), ``response_timeout`` (how long
a control point procedure may take, in s; default 2, ftms.md), ``rate_hz`` (how often this machine
notifies Treadmill Data; default 1, what FTMS machines do, ftms.md; rule S8 scales on it), ``unit``
(``mph`` or ``kmh``: the unit of the speed numbers on the wire, over the quirk table's; FTMS says
km/h, several machines use mph, hardware.md and the S7 unit check), ``record`` (a file: the GATT
conversation, reconnects included, is written there as a capture, ``drivers.ftms.capture``, so a user
with a real machine can contribute one; ``ftms+replay://FILE`` plays it back).

Quirks (``drivers.ftms.quirks``, keyed by advertised name and Device Information model number,
each entry with its source): the speed unit, Start before every speed write, never resend Start,
a gap between subscriptions. For every machine: the Device Information Service (0x180A: maker,
model, firmware, serial) is read at connect into ``device``; after Start the driver waits for
status 0x04 or a moving belt (at most ``START_WAIT_S``, inside rule S7's window) before the first
Set Target Speed, since a speed write while the motor spins up drops the link on KingSmith machines
and TM11GY counts down 3 s (hardware.md); a machine that confirms nothing by then gets a stop, and
the start fails saying so; the control point's write type comes from its properties (Urevo E1L
offers only write-without-response); a Treadmill Data record cut short (Matrix TouchXL sends 20 of 30 bytes)
keeps its speed when the speed's bytes are intact, counted in ``truncated_packets``.

What the driver does, in ftms.md's terms:

- ``open()`` connects, reads Fitness Machine Feature (0x2ACC), Supported Speed Range (0x2AD4) and
  Supported Inclination Range (0x2AD5), subscribes to Treadmill Data (0x2ACD, split records merged
  by ``codec.TreadmillDataAssembler``), Fitness Machine Status (0x2ADA) and Training Status
  (0x2AD3), enables indications on the Control Point (0x2AD9) before any write to it, and takes
  control (Request Control, 0x00). ``can_drive`` is True only if the machine offers speed control
  and granted control; a refusal is a capability, reported once and never retried in a loop.
- A control point procedure is: write with response, then wait for the indication
  ``80 <op> <result>`` (at most ``response_timeout``). One procedure at a time; a result other
  than success raises ``CommandRejected`` naming the result, and no answer in time does too.
- ``start(speed)`` is Start or Resume (0x07) then Set Target Speed (0x02), the order real clients
  use (ftms.md). The speed sent is always a whole multiple of the machine's increment from 0x2AD4
  (the supervisor has already put it on that grid inside the envelope, rule S2). A machine that
  answers Set Target Speed with "op code not supported" is stopped at once and can no longer be
  driven (``Unsupported``): ftms.md says to report that as a capability, not to loop on it.
- ``stop()`` and ``emergency_stop()`` write the same thing: Stop or Pause with 0x01 (stop). Stops
  go ahead of every queued procedure. A procedure already in flight is not interrupted on the wire
  (a machine answers a write during a procedure with "procedure already in progress"), but its
  wait is cut to ``STOP_GRACE_S``: a machine that answers at all answers well within that, and one
  that does not is abandoned so the stop is written next (rule S5). A motion command that a stop
  overtakes writes nothing more. If the machine answers a stop with "control not permitted", the
  driver takes control and writes the stop again.
- Status notifications become device events: 0x01 reset → ``IDLE`` (FTMS Reset sets the targets
  to 0 and the machine idle: the belt is stopping, and control is gone), 0x02 → ``STOPPED_BY_USER``
  or ``PAUSED_BY_USER``, 0x03 → ``SAFETY_KEY``, 0x04 → ``STARTED_BY_USER``, 0xFF →
  ``CONTROL_LOST`` (rule S10, S11). Machines also notify 0x04 and 0x02 when *we* start or stop
  them; such an echo, within ``ECHO_WINDOW_S`` of our own Start or Stop, is not reported as the
  user's. Only those two directions are filtered, so a filtered echo can never hide a start we
  did not ask for.
- A disconnect (bleak's ``disconnected_callback``) yields ``DISCONNECTED`` at once, then the link
  machine (``drivers.link_state``: opening = connect, read, subscribe; greeting = the stop and
  control) reconnects with capped backoff (``RECONNECT_FIRST_S`` doubling to ``RECONNECT_MAX_S``;
  logged once on failure and once on recovery). On each reconnect it reads the ranges again, enables
  indications again, and the FIRST control point write is Stop (0x08 0x01), before Request
  Control, whatever the machine says to it (rule S9); then it yields ``CONNECTED``. Commands while
  the link is down raise ``NotConnected``. Nothing is replayed.

Errors of bleak, D-Bus and the OS are translated here with ``raise ... from exc``.

This module must not decide anything about safety (the supervisor does), convert units beyond
encoding a ``Speed`` on the machine's grid, or retry a refused capability.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Self, TypeVar
from urllib.parse import SplitResult

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import BleakDeviceNotFoundError, BleakError

from retrotread.drivers.base import Driver, cancel_and_wait, drain
from retrotread.drivers.errors import (
    CommandRejected,
    ConfigError,
    DriverError,
    LinkLost,
    NotConnected,
    Unsupported,
)
from retrotread.drivers.ftms.capture import CaptureRecorder
from retrotread.drivers.ftms.codec import (
    CONTROL_POINT_UUID,
    FEATURE_UUID,
    FTMS_SERVICE_UUID,
    MACHINE_STATUS_UUID,
    SUPPORTED_INCLINATION_RANGE_UUID,
    SUPPORTED_SPEED_RANGE_UUID,
    TRAINING_STATUS_UUID,
    TREADMILL_DATA_UUID,
    ControlOpcode,
    ControlRequest,
    ControlResponse,
    FitnessMachineFeature,
    FtmsDecodeError,
    Octets,
    RequestControl,
    ResultCode,
    SetTargetInclination,
    SetTargetSpeed,
    StartOrResume,
    StatusOpcode,
    StopAction,
    StopOrPause,
    SupportedInclinationRange,
    SupportedSpeedRange,
    TargetSetting,
    TreadmillDataAssembler,
    decode_control_response,
    decode_feature,
    decode_inclination_range,
    decode_machine_status,
    decode_speed_range,
    decode_training_status,
    encode_control_point,
    truncated_speed,
)
from retrotread.drivers.ftms.quirks import Quirks, WireUnit, quirks_for, with_unit
from retrotread.drivers.ftms.scan import bluetooth_error, find_ftms
from retrotread.drivers.link_state import Backoff, LinkChange, LinkMachine
from retrotread.drivers.plausible import SampleGate
from retrotread.drivers.registry import float_option
from retrotread.drivers.types import (
    RESPONSE_S,
    BeltSample,
    Capabilities,
    DeviceEvent,
    DeviceEventKind,
    DeviceInfo,
    Update,
)
from retrotread.drivers.units import Rounding, Speed, SpeedGrid, SpeedUnit

__all__ = [
    "CONNECT_TIMEOUT_S",
    "ECHO_WINDOW_S",
    "RECONNECT_FIRST_S",
    "RECONNECT_MAX_S",
    "RESPONSE_TIMEOUT_S",
    "S7_RESPONSE_S",
    "START_WAIT_S",
    "STOP_GRACE_S",
    "FtmsDriver",
]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 10.0
RESPONSE_TIMEOUT_S: Final = 2.0  # ftms.md "Control Point": wait for the indication, time out after 2 s
STOP_GRACE_S: Final = 0.3
"""How long a stop waits for the answer to a procedure already in flight before abandoning it (S5).
Machines answer within a connection interval or two (tens of ms); this is several times that."""
ECHO_WINDOW_S: Final = 1.0
"""A status 0x04/0x02 this soon after our own Start/Stop succeeded is its echo, not the user."""
RECONNECT_FIRST_S: Final = 0.5
RECONNECT_MAX_S: Final = 10.0
DISCONNECT_TIMEOUT_S: Final = 2.0
DEFAULT_RATE_HZ: Final = 1.0  # ftms.md: Treadmill Data is notified at about 1 Hz
S7_RESPONSE_S: Final = RESPONSE_S  # S7's window (drivers.types), which the start wait must fit in
START_WAIT_S: Final = 3.5
"""After Start, wait at most this long for status 0x04 or belt motion before the first speed
(hardware.md: KingSmith drops the link on a speed write while the motor spins up; TM11GY counts
down 3 s). Bounded by S7's window, not by the ~15 s hardware.md allows: the speed must still be
written (tens of ms) and the belt reach it and be sampled (about one 1 Hz period) within
``S7_RESPONSE_S`` of the start. A machine that shows neither by then could only latch
``no-response`` mid-start; the start is given up instead, with a stop and an error that says the
machine did not confirm in time (the supervisor stops the belt on it, rule S10)."""
MOVING_MPH: Final = 0.05  # a belt reading above this is moving (as the supervisor's standstill)
DIS_SERVICE_UUID: Final = "0000180a-0000-1000-8000-00805f9b34fb"
_DIS: Final = {  # Device Information Service characteristics we read (Bluetooth SIG assigned numbers)
    "maker": "00002a29-0000-1000-8000-00805f9b34fb",
    "model": "00002a24-0000-1000-8000-00805f9b34fb",
    "serial": "00002a25-0000-1000-8000-00805f9b34fb",
    "firmware": "00002a26-0000-1000-8000-00805f9b34fb",
}

_ADDRESS = re.compile(r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}$")

# The status a machine notifies when our own procedure changes its state (see ECHO_WINDOW_S).
_ECHOES: Final[dict[ControlOpcode, StatusOpcode]] = {
    ControlOpcode.START_OR_RESUME: StatusOpcode.STARTED_OR_RESUMED_BY_USER,
    ControlOpcode.STOP_OR_PAUSE: StatusOpcode.STOPPED_OR_PAUSED_BY_USER,
}

_T = TypeVar("_T")


def _text(data: Octets) -> str | None:
    """A Device Information string: UTF-8, trailing NULs and spaces dropped; empty is absent."""
    text = bytes(data).split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return text or None


def _advertised_name(client: BleakClient, target: object) -> str | None:
    for name in (getattr(target, "name", None), _client_name(client)):
        if isinstance(name, str) and name:
            return name
    return None


def _client_name(client: BleakClient) -> str | None:
    try:
        return client.name
    except (BleakError, AttributeError, NotImplementedError):
        return None


def _wire(request: SetTargetSpeed) -> str:
    return f"{request.speed_raw / 100:.2f} (raw {request.speed_raw})"


def _name(value: int) -> str:
    """A result or opcode by name (``control_not_permitted``), or its hex if we have no name."""
    for kind in (ResultCode, ControlOpcode):
        if isinstance(value, kind):
            return value.name.lower()
    return f"0x{value:02x}"


class _ProcedureSlot:
    """One control point procedure at a time (ftms.md), with stops served before anything else.

    Like an ``asyncio.Lock`` with two queues: a waiting stop is handed the slot before every
    waiting non-stop, each queue in arrival order. Cancelling a waiter never loses the slot.
    """

    def __init__(self) -> None:
        self._busy = False
        self._stops: deque[asyncio.Future[None]] = deque()
        self._others: deque[asyncio.Future[None]] = deque()

    @property
    def stops_waiting(self) -> bool:
        return any(not f.done() for f in self._stops)

    async def acquire(self, *, stop: bool) -> None:
        if not self._busy and not self._stops and not self._others:
            self._busy = True
            return
        queue = self._stops if stop else self._others
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed the slot as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
            raise

    def release(self) -> None:
        for queue in (self._stops, self._others):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot passes on; it stays busy
                    return
        self._busy = False


@dataclass
class _InFlight:
    """The procedure waiting for its indication."""

    op: ControlOpcode
    response: asyncio.Future[ControlResponse]
    stop: bool
    deadline: asyncio.Timeout | None = None
    cut_short: bool = False


@dataclass
class _Echo:
    """A status we expect the machine to notify because of our own procedure (ECHO_WINDOW_S)."""

    until: float


@dataclass(frozen=True, slots=True)
class _Machine:
    """What the machine said about itself on this connection."""

    feature: FitnessMachineFeature | None
    speed_range: SupportedSpeedRange | None
    incline_range: SupportedInclinationRange | None
    has_control_point: bool


class FtmsDriver(Driver):
    """An FTMS treadmill over Bluetooth LE. See the module docstring for the behaviour.

    ``backend`` (a ``BaseBleakClient`` subclass) and ``backend_options`` (keyword arguments for it)
    replace bleak's platform backend under the real ``BleakClient`` facade: the simulated
    peripheral of ``ftms+sim://`` is injected this way. ``scanner_backend`` does the same for the
    scan behind ``?name=``.
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        name_prefix: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        response_timeout: float = RESPONSE_TIMEOUT_S,
        nominal_period_s: float = 1.0 / DEFAULT_RATE_HZ,
        backend: type[BaseBleakClient] | None = None,
        backend_options: Mapping[str, Any] | None = None,
        scanner_backend: type[BaseBleakScanner] | None = None,
        reconnect_first_s: float = RECONNECT_FIRST_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
        unit: WireUnit | None = None,
        record: Path | None = None,
    ) -> None:
        if (address is None) == (name_prefix is None):
            raise ConfigError("ftms:// needs either an address (ftms://AA:BB:CC:DD:EE:FF) or ?name=PREFIX")
        self.address = address
        self.name_prefix = name_prefix
        self.url = f"ftms://{address}" if address is not None else f"ftms://?name={name_prefix}"
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.nominal_period_s = nominal_period_s
        self.reconnect_first_s = reconnect_first_s
        self.reconnect_max_s = reconnect_max_s
        self._backend = backend
        self._backend_options = dict(backend_options or {})
        self._scanner_backend = scanner_backend
        self._unit = unit  # the URL's unit, over the quirk table's
        self.quirks = with_unit(Quirks(), unit)
        """What this machine needs (``drivers.ftms.quirks``), known once it connected."""
        self._device: DeviceInfo | None = None
        self._started = asyncio.Event()  # status 0x04 or a moving belt since our last Start
        self._moving = False
        self.truncated_packets = 0
        """Treadmill Data records cut short whose speed was kept (Matrix TouchXL, hardware.md)."""
        self.recorder = CaptureRecorder(record) if record is not None else None
        """``?record=FILE``: the GATT conversation, written as a capture (``drivers.ftms.capture``)."""

        self._target: BLEDevice | str | None = None
        self._client: BleakClient | None = None
        self._link = LinkMachine(
            self.url,
            opening=self._open_link,
            greeting=self._greet,
            up=self._until_dropped,
            closing=self._close_link,
            backoff=Backoff(reconnect_first_s, reconnect_max_s),
            retry_on=(Exception,),  # whatever went wrong, the link must keep being tried
            expected=(BleakError,),
            logger=log,
        )
        self._link.add_listener(self._link_changed)
        self._runner: asyncio.Task[None] | None = None
        self._dropped = asyncio.Event()  # set by bleak's disconnected callback while up
        self._in_control = False
        self._found: _Machine | None = None  # read on the link being opened, kept once it greeted
        self._machine: _Machine | None = None
        self._caps = Capabilities(can_drive=False, nominal_period_s=nominal_period_s)
        self._open_refusal: str | None = "not connected yet"
        self._speed_refusal: str | None = None
        """Learnt at run time and kept across reconnects: the firmware refused Set Target Speed."""
        self._control_refusal: str | None = None
        self._queue: asyncio.Queue[Update | None] = asyncio.Queue()
        self._assembler = TreadmillDataAssembler()
        self._slot = _ProcedureSlot()
        self._inflight: _InFlight | None = None
        self._echoes: dict[StatusOpcode, _Echo] = {}
        self._stop_generation = 0
        self._packets_ok = True
        self.bad_packets = 0
        """Treadmill Data notifications that did not decode (dropped; rule S8 notices a drought)."""
        self._gate = SampleGate(1.0, name=self.url, logger=log)  # FTMS Total Distance counts metres
        self.reconnects = 0

    @classmethod
    def from_url(cls, url: SplitResult, options: dict[str, str]) -> Self:
        known = {"name", "timeout", "response_timeout", "rate_hz", "unit", "record"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"ftms:// has no option {unknown[0]!r}; known: {', '.join(sorted(known))}")
        address = url.netloc or None
        if address is not None and not _ADDRESS.match(address):
            raise ConfigError(f"ftms://{address}: expected a Bluetooth address like AA:BB:CC:DD:EE:FF")
        name = options.get("name")
        if name is not None and not name:
            raise ConfigError("ftms:// option name= is empty: give the start of the treadmill's name")
        if (address is None) == (name is None):
            raise ConfigError("ftms:// needs either an address (ftms://AA:BB:CC:DD:EE:FF) or ?name=PREFIX, not both")
        rate_hz = float_option(options, "rate_hz", DEFAULT_RATE_HZ, minimum=0.1, maximum=100.0)
        unit = options.get("unit")
        if unit is not None and unit not in ("kmh", "mph"):
            raise ConfigError(f"ftms:// option unit={unit!r}: allowed kmh or mph (the unit of speeds on the wire)")
        record = options.get("record")
        if record is not None and not record:
            raise ConfigError("ftms:// option record= is empty: give the file the capture is written to")
        return cls(
            address=address,
            name_prefix=name,
            connect_timeout=float_option(options, "timeout", CONNECT_TIMEOUT_S, minimum=0.1, maximum=120.0),
            response_timeout=float_option(options, "response_timeout", RESPONSE_TIMEOUT_S, minimum=0.01, maximum=30.0),
            nominal_period_s=1.0 / rate_hz,
            unit=WireUnit(unit) if unit is not None else None,
            record=Path(record) if record else None,
        )

    # -- what the daemon reads -------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        if self._drive_refusal is not None and self._caps.can_drive:
            return replace(self._caps, can_drive=False)
        return self._caps

    @property
    def device(self) -> DeviceInfo | None:
        return self._device

    @property
    def _drive_refusal(self) -> str | None:
        return self._speed_refusal or self._open_refusal

    @property
    def drive_refusal(self) -> str | None:
        """Why the machine cannot be driven, or ``None`` if it can."""
        return self._drive_refusal

    @property
    def connected(self) -> bool:
        return self._link.is_up

    @property
    def link_machine(self) -> LinkMachine:
        """The state machine that keeps the Bluetooth link up (its state, and ``wait_for``)."""
        return self._link

    def samples(self) -> AsyncIterator[Update]:
        return drain(self._queue)

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._runner is not None:
            return
        self._queue = asyncio.Queue()
        if self.recorder is not None:
            self.recorder.begin()
        self._target = await self._resolve_target()
        await self._link.connect()  # the first open fails to the caller; never retried
        self._runner = asyncio.create_task(self._link.run(), name=f"link {self.url}")

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        await cancel_and_wait(runner)
        self._link.closed()
        await self._close_link(NotConnected(f"{self.url}: closed"))
        if self.recorder is not None:
            self.recorder.close()
        if runner is not None:
            self._queue.put_nowait(None)

    async def _resolve_target(self) -> BLEDevice | str:
        if self.address is not None:
            return self.address
        assert self.name_prefix is not None
        device = await find_ftms(self.name_prefix, self.connect_timeout, backend=self._scanner_backend)
        if device is None:
            raise NotConnected(
                f"{self.url}: no FTMS device named {self.name_prefix}* heard within {self.connect_timeout:g} s; "
                "is the treadmill on, awake, and not connected to another app? (retrotread scan lists what it hears)"
            )
        return device

    async def _disconnect(self, client: BleakClient) -> None:
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await client.disconnect()
        except (BleakError, OSError, EOFError) as exc:  # TimeoutError is an OSError
            log.debug("%s: disconnect: %s", self.url, exc)

    # -- connecting ------------------------------------------------------------------------------

    def _new_client(self) -> BleakClient:
        assert self._target is not None
        return BleakClient(
            self._target,
            self._on_disconnected,
            [FTMS_SERVICE_UUID, DIS_SERVICE_UUID],
            timeout=self.connect_timeout,
            backend=self._backend,
            **self._backend_options,
        )

    async def _open_link(self) -> None:
        """The link machine's opening: connect, read what the machine is, subscribe."""
        self._dropped.clear()
        client = self._new_client()
        self._client = client
        self._in_control = False
        try:
            async with asyncio.timeout(self.connect_timeout):
                await client.connect()
        except TimeoutError:
            raise NotConnected(
                f"{self.url}: no connection within {self.connect_timeout:g} s; is the treadmill on and in range?"
            ) from None
        except BleakDeviceNotFoundError as exc:
            raise NotConnected(
                f"{self.url}: device not found; is the treadmill on, awake and in range? "
                "(retrotread scan lists what it hears)"
            ) from exc
        except (BleakError, OSError, EOFError) as exc:
            raise bluetooth_error(exc, f"{self.url}: connecting", NotConnected) from exc
        if self.recorder is not None:
            self.recorder.connected(
                url=self.url,
                advertised_name=_advertised_name(client, self._target),
                services=client.services,
                rate_hz=1.0 / self.nominal_period_s,
            )
        await self._read_device_information(client)
        self._found = await self._read_machine(client)
        self._assembler.reset()
        await self._subscribe(client)

    async def _greet(self) -> None:
        """The link machine's greeting: on a reconnect a stop first (S9), then take control."""
        client, machine = self._client, self._found
        assert client is not None
        assert machine is not None
        reconnect = self._link.ups > 0
        if machine.has_control_point:
            await self._take_control(client, reconnect=reconnect)
        self._machine = machine
        self._caps, refusal = self._capabilities(machine)
        if refusal is None and not reconnect and not self._in_control:
            # Refused control at open is a capability (ftms.md: report it, do not loop on it).
            # After a reconnect the next command asks once more instead: control is per link.
            refusal = self._control_refusal or "the machine did not grant control"
        self._open_refusal = refusal

    async def _until_dropped(self) -> None:
        """The link machine's up: bleak tells us of a drop by callback (``_on_disconnected``)."""
        await self._dropped.wait()
        raise LinkLost(f"{self.url}: Bluetooth link lost")

    async def _close_link(self, error: DriverError | None = None) -> None:
        """After a failed attempt, a drop, or close(): fail what waits, let the client go."""
        client, self._client = self._client, None  # its disconnected callback is ours no more
        self._in_control = False
        self._fail_inflight(error or NotConnected(f"{self.url}: connection attempt failed"))
        if client is not None:
            await self._disconnect(client)

    def _link_changed(self, change: LinkChange) -> None:
        if not change.recovered:
            return
        self._gate.rebase()  # the treadmill may have counted on, or restarted, while we were away
        self.reconnects += 1
        self._queue.put_nowait(
            DeviceEvent(time.monotonic(), DeviceEventKind.CONNECTED, "Bluetooth link back; a stop went first (S9)")
        )

    async def _read_device_information(self, client: BleakClient) -> None:
        """0x180A (maker, model, firmware, serial) and the quirks they and the name select."""
        found: dict[str, str | None] = {}
        for key, uuid in _DIS.items():
            found[key] = await self._read(client, uuid, _text, f"Device Information {uuid[4:8]}")
        name = _advertised_name(client, self._target)
        self.quirks = with_unit(quirks_for(name, found["model"]), self._unit)
        for source in self.quirks.sources:
            log.info("%s: quirk: %s", self.url, source)
        self._device = DeviceInfo(
            maker=found["maker"],
            model=found["model"] or name,
            firmware=found["firmware"],
            serial=found["serial"],
            units="mph" if WireUnit.MPH in (self.quirks.takes, self.quirks.reports) else "km/h",
            quirks=self.quirks.sources,
        )

    async def _read_machine(self, client: BleakClient) -> _Machine:
        services = client.services
        if services.get_service(FTMS_SERVICE_UUID) is None:
            raise Unsupported(f"{self.url}: the device has no Fitness Machine Service (0x1826)")
        feature = await self._read(client, FEATURE_UUID, decode_feature, "Fitness Machine Feature")
        speed_range = await self._read(client, SUPPORTED_SPEED_RANGE_UUID, decode_speed_range, "Supported Speed Range")
        incline_range = await self._read(
            client, SUPPORTED_INCLINATION_RANGE_UUID, decode_inclination_range, "Supported Inclination Range"
        )
        has_cp = services.get_characteristic(CONTROL_POINT_UUID) is not None
        return _Machine(feature, speed_range, incline_range, has_cp)

    async def _read(self, client: BleakClient, uuid: str, decode: Callable[[Octets], _T], what: str) -> _T | None:
        char = client.services.get_characteristic(uuid)
        if char is None:
            return None
        try:
            data = await client.read_gatt_char(char)
        except (BleakError, OSError, EOFError) as exc:
            raise self._link_error(client, exc, f"reading {what}") from exc
        if self.recorder is not None:
            self.recorder.read(char.uuid, bytes(data))
        try:
            return decode(data)
        except FtmsDecodeError as exc:
            log.warning("%s: %s is malformed (%s); treating it as absent", self.url, what, exc)
            return None

    async def _subscribe(self, client: BleakClient) -> None:
        services = client.services
        data = services.get_characteristic(TREADMILL_DATA_UUID)
        if data is None:
            raise Unsupported(f"{self.url}: no Treadmill Data (0x2ACD): this fitness machine is not a treadmill")
        wanted: list[tuple[BleakGATTCharacteristic, Callable[[BleakGATTCharacteristic, bytearray], None]]] = [
            (data, self._on_treadmill_data)
        ]
        status = services.get_characteristic(MACHINE_STATUS_UUID)
        if status is not None:
            wanted.append((status, self._on_status))
        training = services.get_characteristic(TRAINING_STATUS_UUID)
        if training is not None and {"notify", "indicate"} & set(training.properties):
            wanted.append((training, self._on_training_status))
        control = services.get_characteristic(CONTROL_POINT_UUID)
        if control is not None:
            # ftms.md: indications on the control point must be on before the first write to it.
            wanted.append((control, self._on_control_point))
        for index, (char, callback) in enumerate(wanted):
            if index and self.quirks.cccd_gap_s:
                await asyncio.sleep(self.quirks.cccd_gap_s)  # KS-MC21: staggered subscriptions (quirks)
            if self.recorder is not None:
                self.recorder.subscribe(char.uuid)
            try:
                await client.start_notify(char, self._heard(callback))
            except (BleakError, OSError, EOFError) as exc:
                raise self._link_error(client, exc, f"subscribing to {char.uuid[4:8]}") from exc

    async def _take_control(self, client: BleakClient, *, reconnect: bool) -> None:
        self._control_refusal = None
        async with self._holding_slot(stop=reconnect):
            if reconnect:
                # Rule S9: the first thing a reconnected machine hears from us is a stop, before
                # Request Control; if it wants control first, _stop_exchanges takes it and stops again.
                self._stop_generation += 1
                try:
                    await self._stop_exchanges(client, "stop after reconnect (S9)")
                except CommandRejected as exc:
                    log.warning("%s: %s", self.url, exc)
            if self._in_control:
                return
            try:
                response = await self._exchange(client, RequestControl(), stop=False)
            except CommandRejected as exc:
                self._control_refusal = f"the machine did not answer Request Control ({exc})"
                log.warning("%s: %s", self.url, self._control_refusal)
                return
            if response.ok:
                self._in_control = True
            else:
                self._control_refusal = (
                    f"the machine refused control ({_name(response.result)}); is another app connected to it?"
                )
                log.warning("%s: %s", self.url, self._control_refusal)

    def _capabilities(self, machine: _Machine) -> tuple[Capabilities, str | None]:
        claims_speed = machine.feature is not None and TargetSetting.SPEED in machine.feature.targets
        refusal: str | None = None
        if not machine.has_control_point:
            refusal = "the machine has no Fitness Machine Control Point (0x2AD9): it can be measured, not driven"
        elif machine.speed_range is None:
            # ftms.md: feature bits are sometimes wrong; a machine that publishes a settable speed
            # range is taken at its word even if the feature bit is missing, one without is not.
            refusal = (
                "the machine claims speed control but publishes no Supported Speed Range (0x2AD4)"
                if claims_speed
                else "the machine does not offer speed control (no speed target setting, no 0x2AD4)"
            )
        speed = machine.speed_range
        incline = machine.incline_range
        grid = SpeedGrid()
        if speed is not None:
            grid = speed.grid
            if self.quirks.takes is WireUnit.MPH:
                # The range's numbers are hundredths of mph on this machine (quirks; hardware.md).
                step = SpeedUnit.MPH_HUNDREDTHS
                inc = max(1, speed.increment_raw)
                grid = SpeedGrid(step, inc, step.from_count(speed.min_raw), step.from_count(speed.max_raw))
        caps = Capabilities(
            can_drive=refusal is None,
            speed_grid=grid,
            incline_min_pct=incline.min_pct if incline else 0.0,
            incline_max_pct=incline.max_pct if incline else 0.0,
            incline_increment_pct=incline.increment_pct if incline and incline.increment_raw else 0.1,
            nominal_period_s=self.nominal_period_s,
        )
        return caps, refusal

    # -- the link going and coming back ----------------------------------------------------------

    def _on_disconnected(self, client: BleakClient) -> None:
        if client is not self._client:
            return  # an earlier connection, already replaced, or our own close
        self._fail_inflight(LinkLost(f"{self.url}: the Bluetooth link dropped"))
        if not self._link.is_up or self._dropped.is_set():
            return  # a connection attempt, which fails on its own
        self._in_control = False
        self._dropped.set()  # the link machine logs it and reconnects
        if self.recorder is not None:
            self.recorder.disconnected()
        # At once, from the callback, so the daemon latches within 100 ms (S9).
        self._queue.put_nowait(DeviceEvent(time.monotonic(), DeviceEventKind.DISCONNECTED, "Bluetooth link lost"))

    # -- notifications ---------------------------------------------------------------------------

    def _heard(
        self, callback: Callable[[BleakGATTCharacteristic, bytearray], None]
    ) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        """The callback, with what the machine sent recorded first under ``?record=``."""
        recorder = self.recorder
        if recorder is None:
            return callback

        def heard(char: BleakGATTCharacteristic, data: bytearray) -> None:
            recorder.received(char.uuid, bytes(data))
            callback(char, data)

        return heard

    def _on_treadmill_data(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        now = time.monotonic()
        try:
            record = self._assembler.feed(data)
        except FtmsDecodeError as exc:
            salvaged = truncated_speed(data)
            if salvaged is not None:
                # Matrix TouchXL (hardware.md): flags promise 30-32 bytes, 20 arrive; the speed's
                # bytes are intact, so the speed counts. The packet is counted as truncated.
                self.truncated_packets += 1
                self._admit(now, self._reported(salvaged), None, None)
                return
            self.bad_packets += 1
            if self._packets_ok:
                self._packets_ok = False
                log.warning("%s: malformed Treadmill Data %s (%s); dropping such packets", self.url, data.hex(), exc)
            return
        if record is None:
            return  # a part of a split record, or a null packet (ftms.md)
        if not self._packets_ok:
            self._packets_ok = True
            log.warning("%s: valid Treadmill Data again (%d malformed so far)", self.url, self.bad_packets)
        speed = record.speed
        if speed is None:
            return
        distance = float(record.distance_m) if record.distance_m is not None else None
        self._admit(now, self._reported(speed), record.incline_pct, distance)

    def _reported(self, speed: Speed) -> Speed:
        # A machine that reports mph in the km/h field (quirks, e.g. Bowflex T9): read the number as mph.
        return Speed.from_mph(speed.kmh) if self.quirks.reports is WireUnit.MPH else speed

    def _admit(self, now: float, speed: Speed, incline: float | None, distance: float | None) -> None:
        if not self._link.is_up:
            return
        sample = self._gate.admit(BeltSample(now, speed, incline, distance))
        if sample is not None:
            self._moving = sample.speed.mph > MOVING_MPH
            if self._moving:
                self._started.set()
            self._queue.put_nowait(sample)

    @property
    def bad_samples(self) -> int:
        """Treadmill Data records refused because no belt can produce them (plausible.py)."""
        return self._gate.bad_samples

    def _on_status(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        now = time.monotonic()
        try:
            status = decode_machine_status(data)
        except FtmsDecodeError as exc:
            log.warning("%s: malformed Fitness Machine Status %s: %s", self.url, data.hex(), exc)
            return
        op = status.op
        kind: DeviceEventKind
        if op == StatusOpcode.RESET:
            self._in_control = False  # FTMS Reset revokes control
            kind, detail = DeviceEventKind.IDLE, "machine reset (status 0x01): targets 0, control revoked"
        elif op == StatusOpcode.STOPPED_OR_PAUSED_BY_USER:
            if self._is_echo(StatusOpcode.STOPPED_OR_PAUSED_BY_USER, now):
                return
            kind = DeviceEventKind.PAUSED_BY_USER if status.pause else DeviceEventKind.STOPPED_BY_USER
            detail = "paused on the machine (status 0x02)" if status.pause else "stopped on the machine (status 0x02)"
        elif op == StatusOpcode.STOPPED_BY_SAFETY_KEY:
            kind, detail = DeviceEventKind.SAFETY_KEY, "safety key pulled (status 0x03)"
        elif op == StatusOpcode.STARTED_OR_RESUMED_BY_USER:
            self._started.set()  # ours or the user's: the motor runs (the start sequence waits on it)
            if self._is_echo(StatusOpcode.STARTED_OR_RESUMED_BY_USER, now):
                return
            kind, detail = DeviceEventKind.STARTED_BY_USER, "started on the machine (status 0x04)"
        elif op == StatusOpcode.CONTROL_PERMISSION_LOST:
            self._in_control = False
            kind, detail = DeviceEventKind.CONTROL_LOST, "control permission lost (status 0xff)"
        else:
            log.debug("%s: status %s", self.url, status)
            return
        self._queue.put_nowait(DeviceEvent(now, kind, detail))

    def _is_echo(self, op: StatusOpcode, now: float) -> bool:
        expected = self._echoes.pop(op, None)
        return expected is not None and now <= expected.until

    def _on_training_status(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        try:
            log.debug("%s: training status %s", self.url, decode_training_status(data))
        except FtmsDecodeError as exc:
            log.debug("%s: malformed Training Status %s: %s", self.url, data.hex(), exc)

    def _on_control_point(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        try:
            response = decode_control_response(data)
        except FtmsDecodeError as exc:
            log.warning("%s: malformed control point indication %s: %s", self.url, data.hex(), exc)
            return
        flight = self._inflight
        if flight is None or flight.response.done():
            log.info("%s: control point answer %s with no procedure waiting (a late answer?)", self.url, data.hex())
            return
        if response.request != flight.op:
            log.warning("%s: control point answered %s while %s waits; ignored", self.url, data.hex(), _name(flight.op))
            return
        flight.response.set_result(response)

    # -- control point procedures ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _holding_slot(self, *, stop: bool) -> AsyncIterator[None]:
        if stop:
            flight = self._inflight
            if flight is not None and not flight.stop:
                self._cut_short(flight)
        await self._slot.acquire(stop=stop)
        try:
            yield
        finally:
            self._slot.release()

    def _cut_short(self, flight: _InFlight) -> None:
        """A stop is waiting: give the procedure in flight STOP_GRACE_S more at most (S5)."""
        deadline = flight.deadline
        if deadline is None or deadline.expired():
            return
        soon = asyncio.get_running_loop().time() + STOP_GRACE_S
        when = deadline.when()
        if when is None or soon < when:
            with contextlib.suppress(RuntimeError):  # it fired a moment ago: nothing left to shorten
                deadline.reschedule(soon)
                flight.cut_short = True

    async def _exchange(self, client: BleakClient, request: ControlRequest, *, stop: bool) -> ControlResponse:
        """One procedure: write with response, then the ``80 <op> <result>`` indication."""
        loop = asyncio.get_running_loop()
        op = request.op
        data = encode_control_point(request)
        flight = _InFlight(op, loop.create_future(), stop)
        self._inflight = flight
        echo = _ECHOES.get(op)
        expected: _Echo | None = None
        if echo is not None:
            # The machine may notify the status before it indicates the answer: expect it from now.
            expected = self._echoes[echo] = _Echo(time.monotonic() + self.response_timeout + ECHO_WINDOW_S)
        try:
            async with asyncio.timeout(self.response_timeout) as deadline:
                flight.deadline = deadline
                if not stop and self._slot.stops_waiting:
                    self._cut_short(flight)
                response_wanted = self._with_response(client)
                if self.recorder is not None:
                    self.recorder.write(CONTROL_POINT_UUID, data, response=response_wanted)
                try:
                    await client.write_gatt_char(CONTROL_POINT_UUID, data, response=response_wanted)
                except (BleakError, OSError, EOFError) as exc:
                    raise self._link_error(client, exc, f"writing {_name(op)} ({data.hex()})") from exc
                response = await flight.response
        except TimeoutError:
            self._forget_echo(echo, expected)
            why = f" (given up after {STOP_GRACE_S:g} s for a stop, S5)" if flight.cut_short else ""
            raise CommandRejected(
                f"{self.url}: no answer to {_name(op)} within {self.response_timeout:g} s{why}"
            ) from None
        except BaseException:
            self._forget_echo(echo, expected)
            raise
        finally:
            if self._inflight is flight:
                self._inflight = None
            if flight.response.done() and not flight.response.cancelled():
                flight.response.exception()  # retrieved: a failure we raised another way is not "lost"
            else:
                flight.response.cancel()
        if not response.ok:
            self._forget_echo(echo, expected)
        elif expected is not None:
            # Still expected (not seen yet): from the answer on, the echo has ECHO_WINDOW_S to come.
            expected.until = min(expected.until, time.monotonic() + ECHO_WINDOW_S)
        if response.result == ResultCode.CONTROL_NOT_PERMITTED:
            self._in_control = False
        return response

    @staticmethod
    def _with_response(client: BleakClient) -> bool:
        """The write type the control point offers (Urevo E1L: write-without-response only, hardware.md)."""
        char = client.services.get_characteristic(CONTROL_POINT_UUID)
        return char is None or "write" in char.properties or "write-without-response" not in char.properties

    def _forget_echo(self, echo: StatusOpcode | None, expected: _Echo | None) -> None:
        if echo is not None and expected is not None and self._echoes.get(echo) is expected:
            del self._echoes[echo]

    def _fail_inflight(self, exc: DriverError) -> None:
        flight = self._inflight
        if flight is not None and not flight.response.done():
            flight.response.set_exception(exc)

    def _link_error(self, client: BleakClient, exc: BaseException, doing: str) -> DriverError:
        if client is not self._client or not client.is_connected:
            return LinkLost(f"{self.url}: link lost while {doing}")
        return bluetooth_error(exc, f"{self.url}: {doing}", CommandRejected)

    def _expect(self, response: ControlResponse, what: str) -> None:
        if not response.ok:
            raise CommandRejected(f"{self.url}: the machine refused {what}: {_name(response.result)}")

    async def _ensure_control(self, client: BleakClient) -> None:
        """Take control if we do not hold it (after status 0xFF or a reset): once per command."""
        if self._in_control:
            return
        response = await self._exchange(client, RequestControl(), stop=False)
        if not response.ok:
            raise CommandRejected(f"{self.url}: control not granted: Request Control answered {_name(response.result)}")
        self._in_control = True

    async def _stop_exchanges(self, client: BleakClient, what: str) -> None:
        """Stop or Pause (stop); if the machine wants control first, take it and stop again."""
        response = await self._exchange(client, StopOrPause(StopAction.STOP), stop=True)
        if response.result == ResultCode.CONTROL_NOT_PERMITTED:
            granted = await self._exchange(client, RequestControl(), stop=True)
            if not granted.ok:
                raise CommandRejected(
                    f"{self.url}: {what} refused (control not permitted) and control refused ({_name(granted.result)})"
                )
            self._in_control = True
            response = await self._exchange(client, StopOrPause(StopAction.STOP), stop=True)
        self._expect(response, what)

    # -- commands --------------------------------------------------------------------------------

    def _live_client(self, what: str) -> BleakClient:
        client = self._client
        if not self._link.is_up or client is None:
            raise NotConnected(f"{self.url}: not connected; {what} not sent")
        return client

    def _require_drive(self, what: str) -> BleakClient:
        client = self._live_client(what)
        if self._drive_refusal is not None:
            raise Unsupported(f"{self.url}: cannot {what}: {self._drive_refusal}")
        return client

    def _still_wanted(self, generation: int, what: str) -> None:
        if generation != self._stop_generation:
            raise CommandRejected(f"{self.url}: {what} abandoned: a stop was asked for meanwhile (S5)")

    def _speed_request(self, speed: Speed) -> SetTargetSpeed:
        # Always a whole multiple of the machine's increment (0x2AD4). The supervisor already
        # snapped the speed to that grid inside the envelope (S2), so NEAREST only absorbs the
        # float noise of the unit conversion and never crosses a grid step.
        if self.quirks.takes is WireUnit.MPH:
            # Hundredths of mph where the spec says km/h (quirks): the grid is in mph already.
            return SetTargetSpeed(self._caps.speed_grid.encode(speed, Rounding.NEAREST))
        return SetTargetSpeed.from_speed(speed, Rounding.NEAREST, increment_raw=self._caps.speed_grid.increment)

    async def _set_target_speed(self, client: BleakClient, request: SetTargetSpeed, what: str) -> None:
        response = await self._exchange(client, request, stop=False)
        if response.result == ResultCode.OP_CODE_NOT_SUPPORTED:
            # ftms.md: some machines refuse speed control in firmware; report it as a capability.
            self._speed_refusal = "the machine answered Set Target Speed with op_code_not_supported"
            log.warning("%s: %s; it can be measured, not driven", self.url, self._drive_refusal)
            try:
                await self._stop_exchanges(client, "stop after a refused speed")  # it may run at its own speed
            except DriverError as exc:
                log.warning("%s: %s", self.url, exc)
            raise Unsupported(f"{self.url}: cannot {what}: {self._drive_refusal}")
        self._expect(response, what)

    async def start(self, speed: Speed) -> None:
        """Start, wait for the motor (status 0x04 or a moving belt, at most START_WAIT_S), then the
        speed. The slot is free while it waits, so a stop goes out at once (S5)."""
        self._require_drive("start")
        request = self._speed_request(speed)
        generation = self._stop_generation
        async with self._holding_slot(stop=False):
            client = self._require_drive("start")
            self._still_wanted(generation, "start")
            await self._ensure_control(client)
            self._still_wanted(generation, "start")
            if self.quirks.never_resend_start and self._moving:
                log.info("%s: the belt runs: no Start (it would toggle pause on this machine, quirks)", self.url)
            else:
                self._started.clear()
                self._expect(await self._exchange(client, StartOrResume(), stop=False), "start")
        await self._motor_running(generation)
        async with self._holding_slot(stop=False):
            client = self._require_drive("start")
            self._still_wanted(generation, "start")
            await self._set_target_speed(client, request, f"start at {_wire(request)}")

    async def _motor_running(self, generation: int) -> None:
        if self._started.is_set():
            return
        try:
            async with asyncio.timeout(START_WAIT_S):
                while not self._started.is_set():
                    self._still_wanted(generation, "start")
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.1):  # looks at the stop generation 10 times a second
                            await self._started.wait()
        except TimeoutError:
            self._still_wanted(generation, "start")
            why = (
                f"{self.url}: the machine did not confirm the start in time: no status 0x04 and no belt "
                f"motion {START_WAIT_S:g} s after Start, too late for a first speed to take effect within "
                f"rule S7's {S7_RESPONSE_S:g} s; the start was given up and the machine told to stop"
            )
            log.warning("%s", why)
            try:
                # A Start we gave up on must not run the belt later (a countdown ending, a slow motor).
                await self._stop("stop after an unconfirmed start")
            except DriverError as exc:
                log.warning("%s: %s", self.url, exc)
            raise CommandRejected(why) from None
        self._still_wanted(generation, "start")

    async def set_speed(self, speed: Speed) -> None:
        self._require_drive("set the speed")
        request = self._speed_request(speed)
        generation = self._stop_generation
        async with self._holding_slot(stop=False):
            client = self._require_drive("set the speed")
            self._still_wanted(generation, "set speed")
            if self.quirks.start_before_speed:
                # Technogym MyRun (quirks): Request Control + Start before every speed write.
                self._in_control = False
                await self._ensure_control(client)
                self._still_wanted(generation, "set speed")
                self._expect(await self._exchange(client, StartOrResume(), stop=False), "start before speed")
            else:
                await self._ensure_control(client)
            self._still_wanted(generation, "set speed")
            await self._set_target_speed(client, request, f"speed {_wire(request)}")

    async def set_incline(self, incline_pct: float) -> None:
        self._live_client("set the incline")
        incline_range = self._machine.incline_range if self._machine else None
        if incline_range is None:
            raise Unsupported(f"{self.url}: the machine publishes no Supported Inclination Range (0x2AD5)")
        step = max(1, incline_range.increment_raw)
        raw = SetTargetInclination.from_pct(incline_pct).incline_raw
        request = SetTargetInclination(round(raw / step) * step)
        generation = self._stop_generation
        async with self._holding_slot(stop=False):
            client = self._live_client("set the incline")
            self._still_wanted(generation, "set incline")
            await self._ensure_control(client)
            self._expect(await self._exchange(client, request, stop=False), f"incline {request.incline_pct:g} %")

    async def stop(self) -> None:
        await self._stop("stop")

    async def emergency_stop(self) -> None:
        # The same Stop as stop(): FTMS has no stronger one. What makes it an emergency is upstream
        # (the guard sends it at once, the supervisor repeats it every 250 ms, rule S5).
        await self._stop("emergency stop")

    async def _stop(self, what: str) -> None:
        self._stop_generation += 1  # motion commands still in progress write nothing more
        self._live_client(what)
        if self._machine is not None and not self._machine.has_control_point:
            raise Unsupported(f"{self.url}: the machine has no control point: it cannot be stopped from here")
        async with self._holding_slot(stop=True):
            client = self._live_client(what)
            await self._stop_exchanges(client, what)
