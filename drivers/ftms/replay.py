"""``ftms+replay://FILE``: the real FTMS driver and bleak's facade against a recorded conversation.

``ReplayBackend`` is a bleak backend (``drivers.ftms.local_gatt.LocalGattBackend``, the BlueZ-like GATT
surface it shares with the simulator) whose machine is a capture
(``drivers.ftms.capture``, docs/protocols/ftms.md "Captures"): it offers the capture's GATT table
with its properties, answers reads with the recorded bytes, and plays the machine's notifications
and indications with their recorded timing, each timed from the client's last write as the
capture has it. The client's writes must be the capture's, in order, byte for byte and of the
recorded write type: anything else is a ``ReplayMismatch`` (a ``BleakError``, so the driver sees a
failed write), logged as an error and kept in ``Replay.errors``, and the conversation stops there.
``ReplayFtmsDriver`` is ``FtmsDriver`` unchanged, built on that backend.

One write is taken where the capture does not have it: a stop (``0801``) where the capture's next
write is not a stop. A daemon stops at start-up (S15), on every trigger of S5 and repeats its stop
every 250 ms until the belt reads 0; a capture of a bare driver session has none of these, and one
of a daemon has as many repeats as that run's timing made. A stop is never refused (S5), so the
replay answers it ``800801`` as the machine would, lists it in ``Replay.unrecorded_stops`` and logs
it; the capture still expects its next write, on its recorded timing. The other way round, recorded
repeats of a stop the client has made are passed over when it writes the capture's next other
write (``Replay.skipped_stops``). A replay cannot make the recorded belt stop sooner: after an
unrecorded stop the records say what they say (and a daemon whose stop is not followed by a record
at 0 raises ``stop-unconfirmed``, as it would on a machine that went quiet).

Where the client writes before the capture's machine events that preceded that write have been
played (a test stops the belt after the first moving record), those events are skipped, and
listed in ``Replay.skipped``: a replay cannot know what the machine would have said instead.
A connection after the machine dropped the link (a ``disconnect`` line) plays the capture's next
connection (after its ``connect`` line); one that the capture does not have fails loudly. A
connection after the client's own disconnect starts the capture over: a new session.

File: ``ftms+replay:///abs/path.jsonl`` or ``ftms+replay://relative/path.jsonl``. Options: the
driver's own ``timeout``, ``response_timeout``, ``unit`` and ``rate_hz`` (default: the capture's),
and ``name=PREFIX``: find the machine by name through bleak's real ``BleakScanner`` facade, on a
scanner backend that hears the capture's ``advertised_name`` advertising FTMS (0x1826), as
``ftms://?name=`` does over the air.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import SplitResult

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError

from retrotread.drivers.errors import CommandRejected, ConfigError
from retrotread.drivers.ftms.capture import Capture, CaptureEvent, load_capture, short_uuid
from retrotread.drivers.ftms.codec import (
    CONTROL_POINT_UUID,
    FTMS_SERVICE_UUID,
    ControlOpcode,
    ControlResponse,
    ResultCode,
    StopAction,
    StopOrPause,
    encode_control_point,
)
from retrotread.drivers.ftms.driver import CONNECT_TIMEOUT_S, RESPONSE_TIMEOUT_S, FtmsDriver
from retrotread.drivers.ftms.local_gatt import LocalGattBackend, add_characteristic
from retrotread.drivers.ftms.quirks import WireUnit
from retrotread.drivers.registry import float_option

__all__ = ["Replay", "ReplayBackend", "ReplayFtmsDriver", "ReplayMismatch", "UnrecordedStop", "scanner_for"]

log = logging.getLogger(__name__)

_MACHINE = frozenset({"notify", "indicate", "disconnect"})
STOP = encode_control_point(StopOrPause(StopAction.STOP))
"""Stop or Pause (stop), ``0801``: the one write a replay takes where the capture has none (S5)."""
STOP_ANSWER = encode_control_point(ControlResponse(ControlOpcode.STOP_OR_PAUSE, ResultCode.SUCCESS))
"""``800801``: what a machine answers a stop with."""


def _is_stop(event: CaptureEvent) -> bool:
    return event.kind == "write" and event.uuid == CONTROL_POINT_UUID and event.data == STOP


class ReplayMismatch(BleakError, CommandRejected):
    """The client did something the capture did not: the message names the capture's line."""


@dataclass(frozen=True, slots=True)
class UnrecordedStop:
    """A stop the client wrote where the capture's next write is not a stop, taken and answered.

    A daemon stops at start-up (S15) and repeats a stop every 250 ms until the belt reads 0 (S5):
    a capture of another client (a bare driver session) has none of these, and one of a daemon has
    as many repeats as that run's timing made. A stop is never refused (S5), so a replay takes it.
    """

    before: CaptureEvent | None
    """The capture's next expected write, still expected; ``None``: this connection has no more."""
    response: bool
    """The write type the client used."""


@dataclass
class Replay:
    """The machine's side of one capture, and what happened when it was played."""

    capture: Capture
    errors: list[str] = field(default_factory=list)
    """Every divergence from the capture (a write it did not expect, a read it has no answer for)."""
    skipped: list[CaptureEvent] = field(default_factory=list)
    """Machine events not played because the client wrote before their time."""
    played: list[CaptureEvent] = field(default_factory=list)
    """Machine events delivered to the client, in order."""
    writes: list[CaptureEvent] = field(default_factory=list)
    """The capture's writes the client made, matched."""
    unrecorded_stops: list[UnrecordedStop] = field(default_factory=list)
    """Stops the client wrote where the capture's next write is not a stop: taken and answered with
    ``800801``, as the machine would (never refused, S5), and the capture still expects its write."""
    skipped_stops: list[CaptureEvent] = field(default_factory=list)
    """Recorded repeats of a stop (S5) the client did not make: it had stopped, and wrote the
    capture's next write after them sooner than the recorded run did."""
    connections: int = 0
    next_segment: int | None = 0
    """Where the next connection's conversation starts; ``None``: the capture has no more."""
    waiting: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while the machine has nothing more to say until the client writes (or ever, on this
    connection): everything before that point was played. Tests wait on it, never on time."""

    def check(self) -> None:
        """Raise the first divergence, if any (for a test's last word)."""
        if self.errors:
            raise ReplayMismatch(self.errors[0])

    def fail(self, why: str) -> ReplayMismatch:
        message = f"replay {self.capture.name} ({self.capture.path.name}): {why}"
        self.errors.append(message)
        log.error("%s", message)
        return ReplayMismatch(message)


class ReplayBackend(LocalGattBackend):
    """A bleak backend whose peripheral is a capture. Pass ``replay=`` through ``BleakClient``."""

    def __init__(self, address_or_ble_device: BLEDevice | str, *, replay: Replay | None = None, **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, **kwargs)
        if replay is None:
            raise BleakError("ReplayBackend needs its capture: BleakClient(..., backend=ReplayBackend, replay=r)")
        self.replay = replay
        self._reads: dict[str, list[CaptureEvent]] = {}
        self._pos = 0
        self._last_write: CaptureEvent | None = None  # this connection's last matched write
        self._anchor = (0.0, 0.0)  # (loop time, capture time) of the last matched write
        self._wake = asyncio.Event()
        self._walker: asyncio.Task[None] | None = None

    # -- connection -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.replay.capture.advertised_name or ""

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        await asyncio.sleep(0)  # a radio is never synchronous
        if self._connected:
            return
        capture = self.replay.capture
        start = self.replay.next_segment
        if start is None:
            error = self.replay.fail(
                f"the client connected again; the capture has {len(capture.segments())} connection(s)"
            )
            raise BleakDeviceNotFoundError(self.address, str(error))
        self.replay.connections += 1
        self._connected = True
        self.services = _services(capture)
        # This connection's recorded answers; a characteristic it did not read answers as last read.
        self._reads = {}
        later = [i for i in capture.segments() if i > start]
        for event in capture.events[start : later[0] if later else None]:
            if event.kind == "read" and event.uuid is not None:
                self._reads.setdefault(event.uuid, []).append(event)
        for event in reversed(capture.events[:start]):
            if event.kind == "read" and event.uuid is not None and event.uuid not in self._reads:
                self._reads[event.uuid] = [event]
        self._pos = start
        self._last_write = None
        self.replay.waiting.clear()
        begun = capture.events[start - 1].t if start else 0.0
        self._anchor = (asyncio.get_running_loop().time(), begun)
        self._walker = asyncio.create_task(self._walk(), name=f"replay {capture.name}")

    async def disconnect(self) -> None:
        if not self._connected:
            return
        self.replay.next_segment = 0  # the client hung up: connecting again is a new session
        await self._lose_link()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def _lose_link(self) -> None:
        self._connected = False
        self._callbacks.clear()
        walker, self._walker = self._walker, None
        if walker is not None and walker is not asyncio.current_task():
            walker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await walker

    # -- GATT -----------------------------------------------------------------------------------

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        self._require_link()
        await asyncio.sleep(0)
        if "read" not in characteristic.properties:
            raise BleakGATTProtocolError(0x02)  # read not permitted
        answers = self._reads.get(characteristic.uuid)
        if not answers:
            raise self.replay.fail(f"the client read {short_uuid(characteristic.uuid)}; the capture has no answer")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]  # the last answer stands for later reads
        return bytearray(answer.data)

    async def _written(self, uuid: str, data: bytes, response: bool) -> None:
        self._match_write(uuid, data, response)

    # -- the conversation -----------------------------------------------------------------------

    def _next_write(self, start: int) -> int | None:
        """The index of this connection's next recorded write from ``start`` on, if any."""
        events = self.replay.capture.events
        for k in range(start, len(events)):
            if events[k].kind == "connect":
                return None  # the next connection's writes are not this one's
            if events[k].kind == "write":
                return k
        return None

    def _match_write(self, uuid: str, data: bytes, response: bool) -> None:
        replay = self.replay
        wrote = f"{data.hex() or '(nothing)'} to {short_uuid(uuid)} ({'with' if response else 'without'} response)"
        if replay.errors:
            raise ReplayMismatch(f"{replay.errors[0]}; the conversation ended there, so {wrote} was not taken")
        events = replay.capture.events
        j = self._next_write(self._pos)
        stop = uuid == CONTROL_POINT_UUID and data == STOP
        if stop and (j is None or not _is_stop(events[j])):
            self._take_unrecorded_stop(None if j is None else events[j], response)
            return
        last = self._last_write
        if not stop and j is not None and _is_stop(events[j]) and last is not None and _is_stop(last):
            # The recorded run repeated its stop more often than this one (S5: until the belt read
            # 0): the client did stop; the repeats it did not make are passed over.
            while j is not None and _is_stop(events[j]):
                replay.skipped_stops.append(events[j])
                j = self._next_write(j + 1)
        if j is None:
            self._stop_walking()
            raise replay.fail(f"the client wrote {wrote} after the last write of this connection in the capture")
        expected = events[j]
        assert expected.uuid is not None
        if expected.uuid != uuid or expected.data != data or expected.response not in (None, response):
            self._stop_walking()
            kind = "" if expected.response is None else f" ({'with' if expected.response else 'without'} response)"
            raise replay.fail(
                f"the client wrote {wrote} where the capture (line {expected.line}) expects "
                f"{expected.data.hex()} to {short_uuid(expected.uuid)}{kind}"
            )
        log.info("replay %s: line %d: the client wrote %s, as recorded", replay.capture.name, expected.line, wrote)
        replay.skipped.extend(e for e in events[self._pos : j] if e.kind in _MACHINE)
        replay.writes.append(expected)
        self._last_write = expected
        self._pos = j + 1
        self._anchor = (asyncio.get_running_loop().time(), expected.t)
        self.replay.waiting.clear()  # the machine has its say again from here
        self._wake.set()

    def _take_unrecorded_stop(self, before: CaptureEvent | None, response: bool) -> None:
        """Take a stop the capture does not have here (S5: never refused) and answer it as the
        machine would, ``800801``; the capture's position and timing stay where they were."""
        replay = self.replay
        replay.unrecorded_stops.append(UnrecordedStop(before, response))
        where = "no more writes" if before is None else f"{before.data.hex()} next (line {before.line})"
        log.info(
            "replay %s: an unrecorded stop (0801), where the capture has %s: answered %s as the machine would",
            replay.capture.name,
            where,
            STOP_ANSWER.hex(),
        )
        asyncio.get_running_loop().call_soon(self._deliver, CONTROL_POINT_UUID, STOP_ANSWER)  # over the air

    def _stop_walking(self) -> None:
        self._pos = len(self.replay.capture.events)
        self._wake.set()

    async def _walk(self) -> None:
        """Play the machine's events on their times; a write waits for the client (``_match_write``)."""
        events = self.replay.capture.events
        loop = asyncio.get_running_loop()
        while self._connected and self._pos < len(events):
            event = events[self._pos]
            if event.kind == "connect":
                break  # this connection's conversation is over; the machine says nothing more
            if event.kind not in _MACHINE:
                if event.kind == "write":
                    self._wake.clear()
                    self.replay.waiting.set()
                    await self._wake.wait()  # the client's write moves the position on
                    self.replay.waiting.clear()
                else:
                    self._pos += 1  # reads are answered on demand; subscriptions are informative
                continue
            real, recorded = self._anchor
            delay = real + (event.t - recorded) - loop.time()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue  # the time came, or a write moved the position: look again
            self._pos += 1
            await self._play(event)
        self.replay.waiting.set()

    async def _play(self, event: CaptureEvent) -> None:
        self.replay.played.append(event)
        if event.kind == "disconnect":
            log.info("replay %s: the machine drops the link (line %d)", self.replay.capture.name, event.line)
            later = [i for i in self.replay.capture.segments() if i > self._pos]
            self.replay.next_segment = later[0] if later else None
            await self._lose_link()
            if self._disconnected_callback is not None:
                self._disconnected_callback()
            return
        assert event.uuid is not None
        if event.uuid not in self._callbacks:
            log.debug("replay: %s not subscribed; line %d not delivered", short_uuid(event.uuid), event.line)
            return
        self._deliver(event.uuid, event.data)


def _services(capture: Capture) -> BleakGATTServiceCollection:
    """The capture's GATT table as bleak's objects, so the facade finds characteristics by UUID."""
    collection = BleakGATTServiceCollection()
    services: dict[str, BleakGATTService] = {}
    for record in capture.characteristics:
        service = services.get(record.service)
        if service is None:
            service = services[record.service] = BleakGATTService(None, record.handle - 1, record.service)
            collection.add_service(service)
        add_characteristic(collection, service, record.handle, record.uuid, record.properties)
    return collection


def scanner_for(capture: Capture) -> type[BaseBleakScanner]:
    """A bleak scanner backend that hears the capture's machine advertise FTMS by its name.

    A class per capture: bleak builds the backend itself, with no way to hand it the capture.
    A capture with no ``advertised_name`` advertises nothing to look for, so ``name=`` finds nothing.
    """

    class ReplayScanner(BaseBleakScanner):
        def __init__(
            self,
            detection_callback: AdvertisementDataCallback | None,
            service_uuids: list[str] | None,
            *_: Any,
            **__: Any,
        ) -> None:
            super().__init__(detection_callback, service_uuids)

        async def start(self) -> None:
            self.seen_devices = {}
            asyncio.get_running_loop().call_soon(self._hear)  # over the air: after start() returns

        def _hear(self) -> None:
            name = capture.advertised_name
            if name is None or not self.is_allowed_uuid([FTMS_SERVICE_UUID]):
                return
            device = BLEDevice(_ADDRESS, name, None)
            advert = AdvertisementData(name, {}, {}, [FTMS_SERVICE_UUID], None, -60, ())
            self.seen_devices[device.address] = (device, advert)
            self.call_detection_callbacks(device, advert)

        async def stop(self) -> None:
            """Nothing to stop: the capture advertised once."""

    return ReplayScanner


class ReplayFtmsDriver(FtmsDriver):
    """``FtmsDriver`` on a recorded conversation (``replay`` holds what was played and matched)."""

    def __init__(
        self,
        capture: Capture,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        response_timeout: float = RESPONSE_TIMEOUT_S,
        rate_hz: float | None = None,
        name_prefix: str | None = None,
        **driver_options: Any,
    ) -> None:
        self.replay = Replay(capture)
        rate = rate_hz or capture.rate_hz or 1.0
        super().__init__(
            address=None if name_prefix is not None else _ADDRESS,
            name_prefix=name_prefix,
            scanner_backend=scanner_for(capture),
            connect_timeout=connect_timeout,
            response_timeout=response_timeout,
            nominal_period_s=1.0 / rate,
            backend=ReplayBackend,
            backend_options={"replay": self.replay},
            **driver_options,
        )
        self.url = f"ftms+replay://{capture.path}"

    @classmethod
    def from_url(cls, url: SplitResult, options: dict[str, str]) -> Self:
        where = url.netloc + url.path
        if not where:
            raise ConfigError("ftms+replay:// needs a capture file: ftms+replay:///path/to/capture.jsonl")
        known = {"timeout", "response_timeout", "unit", "rate_hz", "name"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"ftms+replay:// has no option {unknown[0]!r}; known: {', '.join(sorted(known))}")
        unit = options.get("unit")
        if unit is not None and unit not in ("kmh", "mph"):
            raise ConfigError(f"ftms+replay:// option unit={unit!r}: allowed kmh or mph (speeds on the wire)")
        name = options.get("name")
        if name is not None and not name:
            raise ConfigError("ftms+replay:// option name= is empty: give the start of the machine's name")
        return cls(
            load_capture(Path(where)),
            connect_timeout=float_option(options, "timeout", CONNECT_TIMEOUT_S, minimum=0.1, maximum=120.0),
            response_timeout=float_option(options, "response_timeout", RESPONSE_TIMEOUT_S, minimum=0.01, maximum=30.0),
            rate_hz=float_option(options, "rate_hz", 0.0, minimum=0.1, maximum=100.0) if "rate_hz" in options else None,
            unit=WireUnit(unit) if unit is not None else None,
            name_prefix=name,
        )


_ADDRESS = "00:00:00:00:00:00"  # a capture has no radio address; the file is its name
