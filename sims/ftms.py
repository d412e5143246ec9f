"""``ftms+sim://``: the real FTMS driver and the real bleak client over a simulated treadmill.

``SimFtmsBackend`` is a bleak backend (``drivers.ftms.local_gatt.LocalGattBackend``, the BlueZ-like GATT
surface it shares with the replay) whose radio is an in-process
``FtmsPeripheral`` (``sims.ftms_peripheral``). ``SimFtmsDriver`` is ``drivers.ftms.driver.FtmsDriver``
unchanged, built with ``BleakClient(..., backend=SimFtmsBackend, peripheral=...)``: every byte goes
through the codecs, the driver and bleak's facade exactly as with a treadmill (docs/ftms.md,
"Testing without a radio"). The driver only gains the peripheral's power switch around open/close.

Query options (speeds in km/h and inclines in % as the machine publishes them in 0x2AD4/0x2AD5):
``rate_hz`` (Treadmill Data notifications per second, default 1), ``min_kmh`` (0.5), ``max_kmh``
(20), ``increment`` (0.01), ``incline_max`` (15; 0 for a flat machine without 0x2AD5),
``incline_increment`` (0.5), ``split`` (1: records split over several notifications),
``no_speed_control`` (1: the machine offers no speed control; ``claimed``: its Feature claims speed
control, yet it answers Set Target Speed with "op code not supported"), ``fault``
(``KIND@SECONDS,...``, see ``sims.faults``), ``lose_control`` (seconds: status 0xFF then),
``trace`` (a file that gets one JSON line per control point write), ``lie`` (``mph``: the machine
takes and reports mph while it claims km/h; ``mph-in``: it takes mph and reports km/h honestly;
``mph-out``: it takes km/h and reports mph; ``sims.belt.Lie``, the S7 unit check), ``name`` (the
advertised name, for the quirk table), ``model`` (a Device Information Service with this model
number), ``countdown`` (seconds between Start and the motor running; a speed written meanwhile drops
the link, as on KingSmith machines), ``without_response`` (1: the control point offers
write-without-response only, like the Urevo E1L), ``needs_start`` (1: Set Target Speed counts only
right after a Start, like a Technogym MyRun), ``truncate`` (every record carries all fields and
is cut to this many bytes, like the Matrix TouchXL's 20), and the driver's own ``unit``,
``timeout``, ``response_timeout`` and ``record`` (a file the GATT conversation is written to as a
capture, as ``ftms://?record=`` does on a real machine: a daemon session on the simulator can then
be replayed with ``ftms+replay://``).

Like every simulator here it ships in the product and registers like any driver. It must not
change what the driver does: anything it needs from the driver is a constructor argument.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Self
from urllib.parse import SplitResult

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError

from retrotread.drivers.errors import ConfigError
from retrotread.drivers.ftms.codec import FTMS_SERVICE_UUID
from retrotread.drivers.ftms.driver import CONNECT_TIMEOUT_S, DIS_SERVICE_UUID, RESPONSE_TIMEOUT_S, FtmsDriver
from retrotread.drivers.ftms.local_gatt import LocalGattBackend, add_characteristic
from retrotread.drivers.ftms.quirks import WireUnit
from retrotread.drivers.registry import float_option
from retrotread.sims.belt import Lie
from retrotread.sims.faults import parse_faults
from retrotread.sims.ftms_peripheral import (
    DIS_UUIDS,
    NAME,
    AttError,
    CharacteristicSpec,
    FtmsPeripheral,
    NotAdvertising,
    SimMachine,
    SpeedControl,
)

__all__ = ["SimFtmsBackend", "SimFtmsDriver", "machine_from_options"]

log = logging.getLogger(__name__)

SERVICE_HANDLE = 0x0020
DIS_HANDLE = 0x0010


class SimFtmsBackend(LocalGattBackend):
    """A bleak backend whose peripheral is simulated. Pass ``peripheral=`` through ``BleakClient``.

    Behaves like bleak's BlueZ backend where the driver could tell the difference (the rest of
    that is ``LocalGattBackend``'s): the disconnected callback fires for every disconnection, ours
    included; connecting to a machine that is not advertising raises ``BleakDeviceNotFoundError``;
    ATT error responses raise ``BleakGATTProtocolError`` with the code.
    """

    def __init__(
        self, address_or_ble_device: BLEDevice | str, *, peripheral: FtmsPeripheral | None = None, **kwargs: Any
    ) -> None:
        super().__init__(address_or_ble_device, **kwargs)
        if peripheral is None:
            raise BleakError(
                "SimFtmsBackend needs its peripheral: BleakClient(..., backend=SimFtmsBackend, peripheral=p)"
            )
        self._peripheral = peripheral

    # -- connection -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._peripheral.name

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        await asyncio.sleep(0)  # a radio is never synchronous
        if self._connected:
            return
        try:
            self._peripheral.connect(self)
        except NotAdvertising as exc:
            raise BleakDeviceNotFoundError(self.address, f"Device with address {self.address} was not found.") from exc
        self._connected = True
        self.services = _services(self._peripheral.gatt, dis=bool(self._peripheral.machine.model))

    async def disconnect(self) -> None:
        if not self._connected:
            return
        self._peripheral.disconnect(self)
        self._lose_link()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    def _lose_link(self) -> None:
        self._connected = False
        self._callbacks.clear()

    # -- GATT -----------------------------------------------------------------------------------

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        self._require_link()
        try:
            return bytearray(self._peripheral.read(self, characteristic.uuid))
        except AttError as exc:
            raise BleakGATTProtocolError(exc.code) from exc

    async def _written(self, uuid: str, data: bytes, response: bool) -> None:
        try:
            self._peripheral.write(self, uuid, data)
        except AttError as exc:
            raise BleakGATTProtocolError(exc.code) from exc

    def _subscribed(self, uuid: str, on: bool) -> None:
        self._peripheral.subscribe(self, uuid, on)

    # -- the peripheral's side of the link (sims.ftms_peripheral.Link) --------------------------

    def deliver(self, uuid: str, data: bytes) -> None:
        # Through the event loop, in order, as a radio hands notifications over.
        asyncio.get_running_loop().call_soon(self._deliver, uuid, data)

    def dropped(self, why: str) -> None:
        log.debug("%s: link dropped by the peripheral: %s", self.address, why)
        was_connected = self._connected
        self._lose_link()
        callback = self._disconnected_callback
        if was_connected and callback is not None:
            asyncio.get_running_loop().call_soon(callback)


def _services(gatt: tuple[CharacteristicSpec, ...], *, dis: bool = False) -> BleakGATTServiceCollection:
    """The GATT database as bleak's objects, so the facade finds characteristics by UUID."""
    collection = BleakGATTServiceCollection()
    if dis:
        info = BleakGATTService(None, DIS_HANDLE, DIS_SERVICE_UUID)
        collection.add_service(info)
        for offset, uuid in enumerate(DIS_UUIDS):
            add_characteristic(collection, info, DIS_HANDLE + 1 + 2 * offset, uuid, ["read"])
    service = BleakGATTService(None, SERVICE_HANDLE, FTMS_SERVICE_UUID)
    collection.add_service(service)
    for spec in gatt:
        add_characteristic(collection, service, spec.handle, spec.uuid, spec.properties)
    return collection


_SIM_OPTIONS = {
    "rate_hz",
    "min_kmh",
    "max_kmh",
    "increment",
    "incline_max",
    "incline_increment",
    "split",
    "no_speed_control",
    "fault",
    "lose_control",
    "trace",
    "lie",
    "name",
    "model",
    "countdown",
    "without_response",
    "truncate",
    "needs_start",
}
_DRIVER_OPTIONS = {"timeout", "response_timeout", "unit", "record"}


def _flag(options: dict[str, str], key: str) -> bool:
    raw = options.get(key, "0")
    if raw not in ("0", "1"):
        raise ConfigError(f"ftms+sim:// option {key}={raw!r}: allowed 0 or 1")
    return raw == "1"


def _raw(kmh_or_pct: float, per_unit: int) -> int:
    return round(kmh_or_pct * per_unit)


def _unit(options: dict[str, str]) -> WireUnit | None:
    raw = options.get("unit")
    if raw is None:
        return None
    if raw not in ("kmh", "mph"):
        raise ConfigError(f"ftms+sim:// option unit={raw!r}: allowed kmh or mph (the unit of speeds on the wire)")
    return WireUnit(raw)


def machine_from_options(options: dict[str, str]) -> SimMachine:
    """The simulated treadmill an ``ftms+sim://`` URL describes; errors name the option."""
    unknown = sorted(set(options) - _SIM_OPTIONS - _DRIVER_OPTIONS)
    if unknown:
        known = ", ".join(sorted(_SIM_OPTIONS | _DRIVER_OPTIONS))
        raise ConfigError(f"ftms+sim:// has no option {unknown[0]!r}; known: {known}")
    increment = _raw(float_option(options, "increment", 0.01, minimum=0.01, maximum=10.0), 100)
    min_raw = _raw(float_option(options, "min_kmh", 0.5, maximum=100.0), 100)
    max_raw = _raw(float_option(options, "max_kmh", 20.0, minimum=0.01, maximum=100.0), 100)
    if min_raw > max_raw:
        raise ConfigError(f"ftms+sim:// min_kmh={min_raw / 100:g} is above max_kmh={max_raw / 100:g}")
    incline_max = _raw(float_option(options, "incline_max", 15.0, maximum=40.0), 10)
    incline_inc = _raw(float_option(options, "incline_increment", 0.5, minimum=0.1, maximum=10.0), 10)
    speed_control = {"0": SpeedControl.YES, "1": SpeedControl.NO, "claimed": SpeedControl.CLAIMED}.get(
        options.get("no_speed_control", "0")
    )
    if speed_control is None:
        raise ConfigError(
            f"ftms+sim:// option no_speed_control={options['no_speed_control']!r}: allowed 0, 1 or claimed"
        )
    lose_control = options.get("lose_control")
    try:
        lie = Lie.parse(options.get("lie", ""), claims="kmh")
    except ValueError as exc:
        raise ConfigError(f"ftms+sim:// option {exc}") from None
    return SimMachine(
        rate_hz=float_option(options, "rate_hz", 1.0, minimum=0.2, maximum=100.0),
        speed_min_raw=min_raw,
        speed_max_raw=max_raw,
        speed_increment_raw=increment,
        incline_max_raw=incline_max,
        incline_increment_raw=incline_inc,
        split=_flag(options, "split"),
        speed_control=speed_control,
        faults=parse_faults(options.get("fault", "")),
        lose_control_at=None if lose_control is None else float_option(options, "lose_control", 0.0),
        trace_path=options.get("trace") or None,
        lie=lie,
        name=options.get("name") or NAME,
        model=options.get("model", ""),
        countdown_s=float_option(options, "countdown", 0.0, maximum=30.0),
        write_without_response=_flag(options, "without_response"),
        needs_start=_flag(options, "needs_start"),
        truncate=int(float_option(options, "truncate", 0, minimum=0, maximum=64)),
    )


class SimFtmsDriver(FtmsDriver):
    """``FtmsDriver`` on a simulated treadmill: the peripheral is powered on by ``open()`` (its fault
    clock starts then) and off by ``close()``."""

    def __init__(
        self,
        peripheral: FtmsPeripheral | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        response_timeout: float = RESPONSE_TIMEOUT_S,
        **driver_options: Any,
    ) -> None:
        self.peripheral = peripheral or FtmsPeripheral()
        super().__init__(
            address=self.peripheral.address,
            connect_timeout=connect_timeout,
            response_timeout=response_timeout,
            # The simulated machine's rate is known, as a per-model table would know a real one's.
            nominal_period_s=1.0 / self.peripheral.machine.rate_hz,
            backend=SimFtmsBackend,
            backend_options={"peripheral": self.peripheral},
            **driver_options,
        )
        self.url = "ftms+sim://"

    @classmethod
    def from_url(cls, url: SplitResult, options: dict[str, str]) -> Self:
        where = url.netloc or url.path.strip("/")
        if where:
            raise ConfigError(f"ftms+sim://{where}: the simulated treadmill takes no address; use ftms+sim://?OPTIONS")
        machine = machine_from_options(options)
        record = options.get("record")
        if record is not None and not record:
            raise ConfigError("ftms+sim:// option record= is empty: give the file the capture is written to")
        return cls(
            FtmsPeripheral(machine),
            connect_timeout=float_option(options, "timeout", CONNECT_TIMEOUT_S, minimum=0.1, maximum=120.0),
            response_timeout=float_option(options, "response_timeout", RESPONSE_TIMEOUT_S, minimum=0.01, maximum=30.0),
            unit=_unit(options),
            record=Path(record) if record else None,
        )

    async def open(self) -> None:
        if self.connected:
            return
        await self.peripheral.power_on()
        try:
            await super().open()
        except BaseException:
            await self.peripheral.power_off()
            raise

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self.peripheral.power_off()
