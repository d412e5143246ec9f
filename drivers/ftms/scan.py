"""Finding FTMS treadmills over the air: ``retrotread scan`` and ``ftms://?name=PREFIX``.

A scan listens for advertisements of the Fitness Machine Service (0x1826) with bleak's
``BleakScanner`` and reads the FTMS service data of each (``codec.parse_service_data``: flags, then
the machine type, whose bit 0 says treadmill; ftms.md "Service and characteristics").

Errors from bleak, D-Bus and the OS are translated here, at the boundary: no adapter, no BlueZ or
no system bus becomes ``DeviceAccessError`` with a message that says how to fix it.

This module must not connect to a device or write anything: it only listens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakBluetoothNotAvailableError, BleakDBusError, BleakError

from retrotread.drivers.errors import DeviceAccessError, DriverError
from retrotread.drivers.ftms.codec import FTMS_SERVICE_UUID, FtmsDecodeError, parse_service_data

__all__ = ["FoundDevice", "bluetooth_error", "find_ftms", "name_filter", "scan_ftms"]

NO_BLUETOOTH: Final = "no Bluetooth adapter or BlueZ not running: install bluez and start bluetooth.service"


@dataclass(frozen=True, slots=True)
class FoundDevice:
    """One device that advertises the Fitness Machine Service."""

    address: str
    name: str | None
    rssi: int | None
    treadmill: bool | None
    """Machine type bit 0 of the service data; ``None`` when the advertisement carried none."""
    available: bool | None
    """Flags bit 0 of the service data (not in use by another client); ``None`` when unknown."""

    @property
    def url(self) -> str:
        return f"ftms://{self.address}"

    def describe(self) -> str:
        """One line for ``retrotread scan``: address, name, signal, kind, and the driver URL."""
        parts = [self.address, repr(self.name) if self.name else "(no name)"]
        if self.rssi is not None:
            parts.append(f"{self.rssi} dBm")
        if self.treadmill is None:
            parts.append("fitness machine (type not advertised)")
        else:
            parts.append("treadmill" if self.treadmill else "fitness machine, not a treadmill")
        if self.available is False:
            parts.append("in use by another client")
        return "  ".join(parts) + f"  → --driver {self.url}"


def bluetooth_error(exc: BaseException, doing: str, fallback: type[DriverError] = DriverError) -> DriverError:
    """The product's error for a bleak, D-Bus or OS error met while ``doing`` something.

    No adapter, no BlueZ, no system bus (``FileNotFoundError`` on the D-Bus socket) all mean the
    same to a user: there is no Bluetooth to talk to, and the fix is the same. Anything else is
    ``fallback(...)``.
    """
    if isinstance(exc, PermissionError):
        return DeviceAccessError(f"{doing}: not allowed to use Bluetooth ({exc}); run as a user in the bluetooth group")
    if isinstance(exc, BleakBluetoothNotAvailableError | FileNotFoundError | ConnectionRefusedError):
        return DeviceAccessError(f"{NO_BLUETOOTH} ({doing}: {exc})")
    if isinstance(exc, BleakDBusError) and (
        exc.dbus_error.startswith("org.freedesktop.DBus.Error.") or exc.dbus_error == "org.bluez.Error.NotReady"
    ):
        return DeviceAccessError(f"{NO_BLUETOOTH} ({doing}: {exc})")
    if isinstance(exc, BleakError) and "adapter" in str(exc).lower():
        return DeviceAccessError(f"{NO_BLUETOOTH} ({doing}: {exc})")
    return fallback(f"{doing}: {exc}")


def _found(device: BLEDevice, adv: AdvertisementData) -> FoundDevice | None:
    """The device, if its advertisement really names FTMS (backends filter on a best-effort basis)."""
    data = adv.service_data.get(FTMS_SERVICE_UUID)
    if data is None and FTMS_SERVICE_UUID not in (u.lower() for u in adv.service_uuids):
        return None
    treadmill: bool | None = None
    available: bool | None = None
    if data is not None:
        try:
            parsed = parse_service_data(data)
        except FtmsDecodeError:
            pass  # empty service data: the service UUID alone still says FTMS
        else:
            # Only one type byte, or a type of 0: some machines (ftms.md); unknown, not "not a treadmill".
            treadmill = parsed.treadmill if int(parsed.machine_type) else None
            available = parsed.available
    return FoundDevice(device.address, adv.local_name or device.name, adv.rssi, treadmill, available)


# ``timeout`` is how long to listen (the name api/cli.py calls it by), not a deadline to cancel at.
async def scan_ftms(timeout: float, *, backend: type[BaseBleakScanner] | None = None) -> list[FoundDevice]:  # noqa: ASYNC109
    """Listen for ``timeout`` seconds; the FTMS devices heard, strongest signal first.

    ``backend`` replaces bleak's platform scanner (tests). Raises ``DeviceAccessError`` when there
    is no Bluetooth to listen with.
    """
    options: BleakScanner.ExtraArgs = {"service_uuids": [FTMS_SERVICE_UUID]}
    if backend is not None:
        options["backend"] = backend
    try:
        seen = await BleakScanner.discover(timeout, return_adv=True, **options)
    except (BleakError, OSError) as exc:
        raise bluetooth_error(exc, "scanning for FTMS devices") from exc
    found = [f for device, adv in seen.values() if (f := _found(device, adv)) is not None]
    return sorted(found, key=lambda f: -(f.rssi if f.rssi is not None else -1000))


def name_filter(prefix: str) -> Callable[[BLEDevice, AdvertisementData], bool]:
    """Matches an FTMS advertisement whose name starts with ``prefix``."""

    def match(device: BLEDevice, adv: AdvertisementData) -> bool:
        name = adv.local_name or device.name or ""
        return name.startswith(prefix) and _found(device, adv) is not None

    return match


async def find_ftms(
    name_prefix: str,
    timeout: float,  # noqa: ASYNC109 - bleak's name for how long to listen
    *,
    backend: type[BaseBleakScanner] | None = None,
) -> BLEDevice | None:
    """The first device heard within ``timeout`` that advertises FTMS with a name starting with
    ``name_prefix``, or ``None``."""
    options: BleakScanner.ExtraArgs = {"service_uuids": [FTMS_SERVICE_UUID]}
    if backend is not None:
        options["backend"] = backend
    try:
        return await BleakScanner.find_device_by_filter(name_filter(name_prefix), timeout, **options)
    except (BleakError, OSError) as exc:
        raise bluetooth_error(exc, f"looking for an FTMS device named {name_prefix}*") from exc
