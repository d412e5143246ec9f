"""The simulated FTMS treadmill: the driver contract over it, and the GATT behaviour it must keep.

The contract classes run the real ``FtmsDriver`` and the real ``bleak.BleakClient`` over the
simulated peripheral (``ftms+sim://``). The other tests talk to the peripheral through bleak's
facade directly, as a central that does things wrong on purpose would (docs/ftms.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakDeviceNotFoundError, BleakGATTProtocolError
from contract import DriverContract

from retrotread.drivers import ConfigError, Speed, open_driver
from retrotread.drivers.ftms.codec import (
    CONTROL_POINT_UUID,
    FEATURE_UUID,
    SUPPORTED_INCLINATION_RANGE_UUID,
    SUPPORTED_SPEED_RANGE_UUID,
    TREADMILL_DATA_UUID,
    ControlOpcode,
    ResultCode,
    TargetSetting,
    TreadmillDataAssembler,
    decode_control_response,
    decode_feature,
    decode_speed_range,
)
from retrotread.drivers.types import BeltSample, DeviceEvent, DeviceEventKind
from retrotread.sims.faults import Fault, FaultKind, Phase
from retrotread.sims.ftms import SimFtmsBackend, SimFtmsDriver, machine_from_options
from retrotread.sims.ftms_peripheral import FtmsPeripheral, SimMachine, SpeedControl

# -- the contract ------------------------------------------------------------------------------


class TestFtmsSim(DriverContract):
    @pytest.fixture
    def driver_url(self) -> str:
        return "ftms+sim://?rate_hz=20"


class TestFtmsSimSplitRecords(DriverContract):
    @pytest.fixture
    def driver_url(self) -> str:
        return "ftms+sim://?rate_hz=20&split=1"


class TestFtmsSimNoSpeedControl(DriverContract):
    @pytest.fixture
    def driver_url(self) -> str:
        return "ftms+sim://?rate_hz=20&no_speed_control=1"

    async def test_reports_it_cannot_drive(self, driver_url: str) -> None:
        async with open_driver(driver_url) as driver:
            assert not driver.capabilities.can_drive


# -- a central that talks to the peripheral through bleak's facade ---------------------------------


class Central:
    """bleak's real client on the simulated peripheral, collecting indications and notifications."""

    def __init__(self, client: BleakClient) -> None:
        self.client = client
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()
        self.data: asyncio.Queue[bytes] = asyncio.Queue()

    def on_answer(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        self.answers.put_nowait(bytes(data))

    def on_data(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        self.data.put_nowait(bytes(data))

    async def indications_on(self) -> None:
        await self.client.start_notify(CONTROL_POINT_UUID, self.on_answer)

    async def procedure(self, hex_request: str) -> tuple[int, int]:
        """Write ``hex_request`` and wait for its ``80 op result`` answer."""
        await self.client.write_gatt_char(CONTROL_POINT_UUID, bytes.fromhex(hex_request), response=True)
        async with asyncio.timeout(5):
            answer = decode_control_response(await self.answers.get())
        return int(answer.request), int(answer.result)


@pytest.fixture
def make_peripheral() -> Callable[..., FtmsPeripheral]:
    def make(**machine: object) -> FtmsPeripheral:
        return FtmsPeripheral(SimMachine(**machine))  # type: ignore[arg-type]

    return make


@contextlib.asynccontextmanager
async def central(peripheral: FtmsPeripheral) -> AsyncIterator[Central]:
    await peripheral.power_on()
    client = BleakClient(peripheral.address, backend=SimFtmsBackend, peripheral=peripheral)
    try:
        await client.connect()
        yield Central(client)
    finally:
        await client.disconnect()
        await peripheral.power_off()


@pytest.fixture
async def machine(make_peripheral: Callable[..., FtmsPeripheral]) -> AsyncIterator[Central]:
    async with central(make_peripheral(rate_hz=20)) as c:
        yield c


async def test_reads_feature_and_ranges_through_bleak(machine: Central) -> None:
    feature = decode_feature(await machine.client.read_gatt_char(FEATURE_UUID))
    assert TargetSetting.SPEED in feature.targets
    speed = decode_speed_range(await machine.client.read_gatt_char(SUPPORTED_SPEED_RANGE_UUID))
    assert (speed.min_raw, speed.max_raw, speed.increment_raw) == (50, 2000, 1)
    assert machine.client.services.get_characteristic(SUPPORTED_INCLINATION_RANGE_UUID) is not None
    assert "indicate" in machine.client.services.get_characteristic(CONTROL_POINT_UUID).properties  # type: ignore[union-attr]


async def test_control_point_write_needs_indications_first(machine: Central) -> None:
    with pytest.raises(BleakGATTProtocolError) as info:
        await machine.client.write_gatt_char(CONTROL_POINT_UUID, b"\x00", response=True)
    assert info.value.code == 0xFD  # CCCD improperly configured (ftms.md)


async def test_every_procedure_but_request_control_needs_control(machine: Central) -> None:
    await machine.indications_on()
    assert await machine.procedure("07") == (ControlOpcode.START_OR_RESUME, ResultCode.CONTROL_NOT_PERMITTED)
    assert await machine.procedure("00") == (ControlOpcode.REQUEST_CONTROL, ResultCode.SUCCESS)
    assert await machine.procedure("07") == (ControlOpcode.START_OR_RESUME, ResultCode.SUCCESS)
    assert await machine.procedure("07") == (ControlOpcode.START_OR_RESUME, ResultCode.OPERATION_FAILED)
    assert await machine.procedure("0801") == (ControlOpcode.STOP_OR_PAUSE, ResultCode.SUCCESS)


async def test_one_procedure_at_a_time(machine: Central) -> None:
    await machine.indications_on()
    await machine.client.write_gatt_char(CONTROL_POINT_UUID, b"\x00", response=True)
    with pytest.raises(BleakGATTProtocolError) as info:
        await machine.client.write_gatt_char(CONTROL_POINT_UUID, b"\x07", response=True)
    assert info.value.code == 0xFE  # procedure already in progress
    async with asyncio.timeout(5):
        assert decode_control_response(await machine.answers.get()).ok


async def test_speeds_off_the_grid_or_range_are_invalid_parameters(
    make_peripheral: Callable[..., FtmsPeripheral],
) -> None:
    async with central(make_peripheral(speed_increment_raw=10)) as m:
        await m.indications_on()
        await m.procedure("00")
        assert (await m.procedure("02c100"))[1] == ResultCode.INVALID_PARAMETER  # 193: not a multiple of 10
        assert (await m.procedure("02be00"))[1] == ResultCode.SUCCESS  # 190
        assert (await m.procedure("020a00"))[1] == ResultCode.INVALID_PARAMETER  # 0.1 km/h: below 0.5
        assert (await m.procedure("0a"))[1] == ResultCode.OP_CODE_NOT_SUPPORTED


async def test_a_machine_without_speed_control(make_peripheral: Callable[..., FtmsPeripheral]) -> None:
    async with central(make_peripheral(speed_control=SpeedControl.NO)) as m:
        assert m.client.services.get_characteristic(SUPPORTED_SPEED_RANGE_UUID) is None
        feature = decode_feature(await m.client.read_gatt_char(FEATURE_UUID))
        assert TargetSetting.SPEED not in feature.targets
        await m.indications_on()
        await m.procedure("00")
        assert (await m.procedure("02a000"))[1] == ResultCode.OP_CODE_NOT_SUPPORTED


async def test_control_and_subscriptions_belong_to_the_connection(
    make_peripheral: Callable[..., FtmsPeripheral],
) -> None:
    peripheral = make_peripheral()
    async with central(peripheral) as m:
        await m.indications_on()
        await m.procedure("00")
        assert peripheral.in_control
        await m.client.disconnect()
        await m.client.connect()
        assert not peripheral.subscribed(CONTROL_POINT_UUID)
        await m.indications_on()
        assert await m.procedure("0801") == (ControlOpcode.STOP_OR_PAUSE, ResultCode.CONTROL_NOT_PERMITTED)
        assert [w.conn for w in peripheral.writes] == [1, 2]


async def test_treadmill_data_notifications_decode(make_peripheral: Callable[..., FtmsPeripheral]) -> None:
    for split in (False, True):
        async with central(make_peripheral(rate_hz=50, split=split)) as m:
            await m.client.start_notify(TREADMILL_DATA_UUID, m.on_data)
            assembler = TreadmillDataAssembler()
            records = []
            async with asyncio.timeout(5):
                while len(records) < 3:
                    packet = await m.data.get()
                    assert len(packet) <= 20  # the default ATT MTU of 23
                    if (record := assembler.feed(packet)) is not None:
                        records.append(record)
            assert all(r.speed_kmh == 0.0 and r.distance_m == 0 for r in records)
            assert all((r.average_speed_kmh is not None) == split for r in records)


async def test_unplugged_machine_cannot_be_connected_until_it_is_back(
    make_peripheral: Callable[..., FtmsPeripheral],
) -> None:
    peripheral = make_peripheral(unplug_s=60.0)
    async with central(peripheral) as m:
        peripheral.strike(FaultKind.UNPLUG)
        assert not m.client.is_connected
        with pytest.raises(BleakDeviceNotFoundError):
            await m.client.connect()


async def test_trace_has_one_json_line_per_control_point_write(
    tmp_path: Path, make_peripheral: Callable[..., FtmsPeripheral]
) -> None:
    trace = tmp_path / "cp.jsonl"
    async with central(make_peripheral(trace_path=str(trace))) as m:
        await m.indications_on()
        await m.procedure("00")
        await m.procedure("02c100")
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [(x["hex"], x["op"], x["result"], x["conn"]) for x in lines] == [
        ("00", "request_control", "success", 1),
        ("02c100", "set_target_speed", "success", 1),
    ]
    assert lines[1]["speed_kmh"] == 1.93 and lines[0]["t"] <= lines[1]["t"]


def test_url_options_build_the_machine() -> None:
    m = machine_from_options(
        {"increment": "0.1", "max_kmh": "16", "split": "1", "no_speed_control": "claimed", "fault": "key@3"}
    )
    assert (m.speed_increment_raw, m.speed_max_raw, m.split) == (10, 1600, True)
    assert m.speed_control is SpeedControl.CLAIMED
    assert m.faults == (Fault(FaultKind.KEY, 3.0),)
    for bad in ({"split": "yes"}, {"no_speed_control": "2"}, {"min_kmh": "9", "max_kmh": "8"}, {"colour": "red"}):
        with pytest.raises(ConfigError):
            machine_from_options(bad)
    with pytest.raises(ConfigError, match="no address"):
        SimFtmsDriver.from_url(urlsplit("ftms+sim://AA:BB:CC:DD:EE:FF"), {})
    assert open_driver("ftms+sim://?response_timeout=0.5").response_timeout == 0.5  # type: ignore[attr-defined]


# -- faults through the one engine (sims.faults) -----------------------------------------------------


async def test_s10_console_stop_fault_stops_the_belt_and_notifies_stopped_by_user() -> None:
    """``fault=console-stop@T`` on the FTMS machine too: belt stopped, status 0x02 stop (issue 11)."""
    async with open_driver("ftms+sim://?rate_hz=20&fault=console-stop@9999") as driver:
        assert isinstance(driver, SimFtmsDriver)
        peripheral = driver.peripheral
        await driver.start(Speed.from_mph(1.0))
        async with asyncio.timeout(10):
            async for item in driver.samples():
                if isinstance(item, BeltSample) and item.speed.mph > 0.9:
                    break
            # What SIGUSR1 does to a pty device: the next scheduled fault, now.
            assert peripheral.schedule.strike_next() is FaultKind.CONSOLE_STOP
            async for item in driver.samples():
                if isinstance(item, DeviceEvent):
                    assert item.kind is DeviceEventKind.STOPPED_BY_USER, item
                    break
        assert not peripheral.running and peripheral.belt.command_mps == 0.0
        assert ("fault", "console-stop") in [(what, detail) for _, what, detail in peripheral.log]
        assert [s.phase for s in peripheral.schedule.states] == [Phase.STRUCK]


async def test_a_runaway_is_cleared_by_a_stop_and_a_stall_only_silences_treadmill_data() -> None:
    async with open_driver("ftms+sim://?rate_hz=20") as driver:
        assert isinstance(driver, SimFtmsDriver)
        schedule = driver.peripheral.schedule
        await driver.start(Speed.from_mph(1.0))
        driver.peripheral.strike(FaultKind.RUNAWAY)
        assert schedule.active(FaultKind.RUNAWAY)
        await driver.stop()
        assert not schedule.active(FaultKind.RUNAWAY)
        assert [s.phase for s in schedule.states] == [Phase.CLEARED]
        driver.peripheral.strike(FaultKind.STALL)
        assert driver.peripheral.data_link.write([b"\x00\x00"]) == 0
        assert schedule.struck == frozenset({FaultKind.STALL})
