"""``retrotread scan``'s Bluetooth half and ``ftms://?name=``, through bleak's real ``BleakScanner``
with a scanner backend that hears made-up advertisements (or fails like a machine without BlueZ)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import BleakBluetoothNotAvailableError, BleakBluetoothNotAvailableReason, BleakDBusError

from retrotread.drivers import DeviceAccessError, NotConnected
from retrotread.drivers.ftms.codec import FTMS_SERVICE_UUID
from retrotread.drivers.ftms.driver import FtmsDriver
from retrotread.drivers.ftms.scan import FoundDevice, find_ftms, scan_ftms
from retrotread.sims.ftms import SimFtmsBackend
from retrotread.sims.ftms_peripheral import FtmsPeripheral, SimMachine

HEART_RATE = "0000180d-0000-1000-8000-00805f9b34fb"


def advert(address: str, name: str | None, rssi: int, service_data: bytes | None, uuids: list[str]) -> Any:
    data = {FTMS_SERVICE_UUID: service_data} if service_data is not None else {}
    return BLEDevice(address, name, None), AdvertisementData(name, {}, data, uuids, None, rssi, ())


def air(*adverts: tuple[BLEDevice, AdvertisementData], failure: BaseException | None = None) -> type[BaseBleakScanner]:
    """A scanner backend that hears ``adverts`` once scanning starts, or fails to start."""

    class Air(BaseBleakScanner):
        def __init__(
            self,
            detection_callback: AdvertisementDataCallback | None,
            service_uuids: list[str] | None,
            *_: Any,
            **__: Any,
        ) -> None:
            super().__init__(detection_callback, service_uuids)

        async def start(self) -> None:
            if failure is not None:
                raise failure
            self.seen_devices = {}
            asyncio.get_running_loop().call_soon(self._hear)  # over the air: after start() returns

        def _hear(self) -> None:
            for device, adv in adverts:
                if self.is_allowed_uuid(adv.service_uuids):
                    self.seen_devices[device.address] = (device, adv)
                    self.call_detection_callbacks(device, adv)

        async def stop(self) -> None:
            pass

    return Air


NEIGHBOURHOOD = (
    advert("AA:00:00:00:00:01", "URevo 3S", -70, bytes.fromhex("010100"), [FTMS_SERVICE_UUID]),
    advert("AA:00:00:00:00:02", "CrossX", -50, bytes.fromhex("010200"), [FTMS_SERVICE_UUID]),
    advert("AA:00:00:00:00:03", None, -80, None, [FTMS_SERVICE_UUID]),
    advert("AA:00:00:00:00:04", "HRM", -40, None, [HEART_RATE]),
    advert("AA:00:00:00:00:05", "KingSmith", -60, bytes.fromhex("0001"), [FTMS_SERVICE_UUID]),  # one type byte
)


async def test_scan_lists_ftms_devices_strongest_first() -> None:
    found = await scan_ftms(0.01, backend=air(*NEIGHBOURHOOD))
    assert [(f.address[-2:], f.treadmill) for f in found] == [("02", False), ("05", True), ("01", True), ("03", None)]
    treadmill = found[2]
    assert treadmill == FoundDevice("AA:00:00:00:00:01", "URevo 3S", -70, True, True)
    line = treadmill.describe()
    assert "URevo 3S" in line and "-70 dBm" in line and "treadmill" in line and "ftms://AA:00:00:00:00:01" in line
    assert "not a treadmill" in found[0].describe()
    assert "(no name)" in found[3].describe()


@pytest.mark.parametrize(
    "failure",
    [
        FileNotFoundError(2, "No such file or directory"),  # no system D-Bus socket
        BleakDBusError("org.freedesktop.DBus.Error.ServiceUnknown", ["The name org.bluez was not provided"]),
        BleakBluetoothNotAvailableError("No Bluetooth adapters found.", BleakBluetoothNotAvailableReason.NO_BLUETOOTH),
    ],
)
async def test_no_adapter_or_no_bluez_is_a_clear_device_access_error(failure: BaseException) -> None:
    with pytest.raises(DeviceAccessError, match="no Bluetooth adapter or BlueZ not running: install bluez") as info:
        await scan_ftms(0.01, backend=air(failure=failure))
    assert info.value.__cause__ is failure
    with pytest.raises(DeviceAccessError):
        await find_ftms("URevo", 0.01, backend=air(failure=failure))


async def test_find_by_name_prefix() -> None:
    device = await find_ftms("King", 5.0, backend=air(*NEIGHBOURHOOD))
    assert device is not None and device.address == "AA:00:00:00:00:05"
    assert await find_ftms("HRM", 0.05, backend=air(*NEIGHBOURHOOD)) is None  # not FTMS


async def test_driver_by_name_finds_and_connects() -> None:
    peripheral = FtmsPeripheral(SimMachine(rate_hz=20))
    heard = advert(peripheral.address, peripheral.name, -55, bytes.fromhex("010100"), [FTMS_SERVICE_UUID])
    driver = FtmsDriver(
        name_prefix="RetroTread",
        backend=SimFtmsBackend,
        backend_options={"peripheral": peripheral},
        scanner_backend=air(*NEIGHBOURHOOD, heard),
    )
    await peripheral.power_on()
    try:
        async with driver:
            assert driver.connected and driver.capabilities.can_drive
    finally:
        await peripheral.power_off()
    nobody = FtmsDriver(name_prefix="Peloton", connect_timeout=0.05, scanner_backend=air(*NEIGHBOURHOOD))
    with pytest.raises(NotConnected, match="no FTMS device named Peloton"):
        await nobody.open()
