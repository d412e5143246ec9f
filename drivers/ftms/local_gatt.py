"""A bleak backend whose peripheral lives in this process: the part the simulator and the replay share.

``ftms+sim://`` (``sims.ftms``: a simulated treadmill) and ``ftms+replay://`` (``drivers.ftms.replay``:
a recorded conversation) each hand the real ``FtmsDriver`` a ``BleakClient`` on a backend of their
own, and both must behave like bleak's BlueZ backend wherever the driver could tell the difference:
a write type the characteristic does not offer is ATT error 0x03 (write not permitted), as BlueZ
answers (Urevo E1L: write-without-response only, hardware.md); CCCDs are written through
``start_notify``, never directly; a characteristic without notify or indicate cannot be subscribed;
every GATT call on a link that is down raises "Not connected". That behaviour is written once, here
(drivers cannot import ``sims``, so the base lives with the driver); each backend gives its
machine's side: ``connect``, ``disconnect``, ``read_gatt_char``, ``name`` and ``_written``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_16

from retrotread.drivers.ftms.driver import CONNECT_TIMEOUT_S

__all__ = ["ATT_MTU", "CCCD_UUID", "LocalGattBackend", "add_characteristic"]

CCCD_UUID = normalize_uuid_16(0x2902)
ATT_MTU = 23
"""The default ATT MTU: a notification carries at most 20 bytes (split records, the Matrix TouchXL's
cut records)."""


def add_characteristic(
    collection: BleakGATTServiceCollection,
    service: BleakGATTService,
    handle: int,
    uuid: str,
    properties: Iterable[CharacteristicPropertyName],
) -> BleakGATTCharacteristic:
    """Add a characteristic as bleak's objects (with its CCCD when it notifies or indicates), so
    the facade finds it by UUID."""
    props = list(properties)
    char = BleakGATTCharacteristic(None, handle, uuid, props, lambda: ATT_MTU - 3, service)
    collection.add_characteristic(char)
    if {"notify", "indicate"} & set(props):
        collection.add_descriptor(BleakGATTDescriptor(None, handle + 1, CCCD_UUID, char))
    return char


class LocalGattBackend(BaseBleakClient):
    """The BlueZ-like GATT surface over an in-process peripheral; a subclass gives the machine."""

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.pop("disconnected_callback", None),
            timeout=kwargs.pop("timeout", CONNECT_TIMEOUT_S),
        )
        self._connected = False
        self._callbacks: dict[str, NotifyCallback] = {}

    # -- the machine's side (the subclass) --------------------------------------------------------

    async def _written(self, uuid: str, data: bytes, response: bool) -> None:
        """The machine takes a write of a type the characteristic offers (raise an ATT error or a
        ``BleakError`` for one it refuses)."""
        raise NotImplementedError

    def _subscribed(self, uuid: str, on: bool) -> None:
        """The client enabled (``on``) or disabled notifications or indications on ``uuid``."""

    # -- connection -------------------------------------------------------------------------------

    @property
    def mtu_size(self) -> int:
        return ATT_MTU

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """FTMS needs no pairing, and neither a simulated nor a recorded machine asks for any."""

    async def unpair(self) -> None:
        """Nothing to forget."""

    def _require_link(self) -> None:
        if not self._connected:
            raise BleakError("Not connected")

    # -- GATT -------------------------------------------------------------------------------------

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        self._require_link()
        if descriptor.uuid != CCCD_UUID:
            raise BleakGATTProtocolError(0x0A)  # attribute not found
        uuid = descriptor.characteristic_uuid
        value = 0x0000
        if uuid in self._callbacks:  # CCCD bits: 0 notify, 1 indicate (what start_notify enabled)
            char = self.services.get_characteristic(uuid) if self.services is not None else None
            indicate = char is not None and "notify" not in char.properties and "indicate" in char.properties
            value = 0x0002 if indicate else 0x0001
        return bytearray(value.to_bytes(2, "little"))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        self._require_link()
        if ("write" if response else "write-without-response") not in characteristic.properties:
            raise BleakGATTProtocolError(0x03)  # write not permitted, as BlueZ answers
        await self._written(characteristic.uuid, bytes(data), response)
        await asyncio.sleep(0)  # the write response comes back over the air

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        self._require_link()
        raise BleakGATTProtocolError(0x03)  # write not permitted: CCCDs go through start_notify

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        self._require_link()
        if not {"notify", "indicate"} & set(characteristic.properties):
            raise BleakError(f"Characteristic {characteristic.uuid} does not support notifications or indications")
        self._callbacks[characteristic.uuid] = callback
        self._subscribed(characteristic.uuid, True)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        self._require_link()
        self._callbacks.pop(characteristic.uuid, None)
        self._subscribed(characteristic.uuid, False)

    def _deliver(self, uuid: str, data: bytes) -> None:
        """Hand the machine's notification or indication on ``uuid`` to the client, if it listens."""
        callback = self._callbacks.get(uuid) if self._connected else None
        if callback is not None:
            callback(bytearray(data))
