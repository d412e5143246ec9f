"""Drivers: the belt as the rest of retrotread sees it.

Units and samples, the ``Driver`` interface, the URL registry, and one sub-package per protocol
(``csafe``, ``ftms``, ``pulse``), each with a sans-IO codec. Imports nothing else of ours.
"""

from retrotread.drivers.base import Driver
from retrotread.drivers.errors import (
    CodecError,
    CommandRejected,
    ConfigError,
    DeviceAccessError,
    DriverError,
    LinkLost,
    LocalProtocolError,
    NotConnected,
    RemoteProtocolError,
    TreadError,
    Unsupported,
)
from retrotread.drivers.registry import BACKENDS, open_driver
from retrotread.drivers.types import BeltSample, Capabilities, DeviceEvent, DeviceEventKind, DeviceInfo, Update
from retrotread.drivers.units import KMH_PER_MPH, Rounding, Speed, SpeedGrid, SpeedUnit

__all__ = [
    "BACKENDS",
    "KMH_PER_MPH",
    "BeltSample",
    "Capabilities",
    "CodecError",
    "CommandRejected",
    "ConfigError",
    "DeviceAccessError",
    "DeviceEvent",
    "DeviceEventKind",
    "DeviceInfo",
    "Driver",
    "DriverError",
    "LinkLost",
    "LocalProtocolError",
    "NotConnected",
    "RemoteProtocolError",
    "Rounding",
    "Speed",
    "SpeedGrid",
    "SpeedUnit",
    "TreadError",
    "Unsupported",
    "Update",
    "open_driver",
]
