"""The ``ftms://`` driver's behaviour over the simulated treadmill, through the real bleak client.

Every assertion on what went over the air reads the peripheral's record of control point writes.
Waiting is on the driver's own update stream or on futures, with timeouts; never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from contract import WITHIN, wait_speed

from retrotread.drivers import (
    CommandRejected,
    ConfigError,
    DeviceEvent,
    DeviceEventKind,
    Driver,
    NotConnected,
    Speed,
    Unsupported,
    open_driver,
)
from retrotread.drivers.ftms.codec import CONTROL_POINT_UUID, StopAction
from retrotread.drivers.ftms.driver import RESPONSE_TIMEOUT_S, FtmsDriver, _ProcedureSlot
from retrotread.drivers.units import SpeedUnit
from retrotread.safety.envelope import Envelope, Grid
from retrotread.sims.faults import FaultKind
from retrotread.sims.ftms import SimFtmsDriver
from retrotread.sims.ftms_peripheral import ControlPointWrite, FtmsPeripheral, SimMachine


def sim(**machine: Any) -> SimFtmsDriver:
    """A driver on a simulated treadmill built from ``SimMachine`` fields (rate 20 Hz unless given)."""
    machine.setdefault("rate_hz", 20.0)
    driver_options = {k: machine.pop(k) for k in ("response_timeout", "reconnect_first_s") if k in machine}
    return SimFtmsDriver(FtmsPeripheral(SimMachine(**machine)), **driver_options)


@contextlib.asynccontextmanager
async def opened(driver: SimFtmsDriver) -> AsyncIterator[SimFtmsDriver]:
    async with driver:
        yield driver


def writes(driver: SimFtmsDriver) -> list[str]:
    return [w.hex for w in driver.peripheral.writes]


async def next_event(driver: Driver, *kinds: DeviceEventKind, within: float = WITHIN) -> DeviceEvent:
    async with asyncio.timeout(within):
        async for item in driver.samples():
            if isinstance(item, DeviceEvent) and item.kind in kinds:
                return item
    raise AssertionError("update stream ended")


def on_write(driver: SimFtmsDriver, hex_prefix: str) -> asyncio.Future[ControlPointWrite]:
    """A future for the next control point write starting with ``hex_prefix``."""
    future: asyncio.Future[ControlPointWrite] = asyncio.get_running_loop().create_future()
    peripheral = driver.peripheral
    original = peripheral._record

    def record(write: ControlPointWrite) -> None:
        original(write)
        if write.hex.startswith(hex_prefix) and not future.done():
            future.set_result(write)

    peripheral._record = record  # type: ignore[method-assign]
    return future


# -- URLs ------------------------------------------------------------------------------------


def test_urls_and_defaults() -> None:
    driver = FtmsDriver.from_url(urlsplit("ftms://AA:BB:CC:DD:EE:FF"), {})
    assert driver.address == "AA:BB:CC:DD:EE:FF"
    assert driver.response_timeout == RESPONSE_TIMEOUT_S == 2.0  # ftms.md: time out after 2 s
    assert driver.connect_timeout == 10.0
    assert driver.capabilities.nominal_period_s == 1.0  # FTMS machines notify at about 1 Hz
    by_name = FtmsDriver.from_url(urlsplit("ftms://?name=URE"), {"name": "URE", "timeout": "3", "rate_hz": "4"})
    assert (by_name.name_prefix, by_name.connect_timeout, by_name.nominal_period_s) == ("URE", 3.0, 0.25)
    for url, options in (
        ("ftms://", {}),
        ("ftms://treadmill", {}),
        ("ftms://AA:BB:CC:DD:EE:FF", {"name": "X"}),
        ("ftms://?name=", {"name": ""}),
        ("ftms://AA:BB:CC:DD:EE:FF", {"speed": "1"}),
    ):
        with pytest.raises(ConfigError):
            FtmsDriver.from_url(urlsplit(url), options)
    assert isinstance(open_driver("ftms://AA:BB:CC:DD:EE:FF?timeout=5"), FtmsDriver)


# -- opening ---------------------------------------------------------------------------------


async def test_indications_are_enabled_before_the_first_control_point_write() -> None:
    async with opened(sim()) as driver:
        log = driver.peripheral.log
        subscribed = next(i for i, (_, what, detail) in enumerate(log) if what == "subscribe" and detail == "2ad9")
        first_write = next(i for i, (_, what, _) in enumerate(log) if what == "write")
        assert subscribed < first_write
        assert all(w.refused is None for w in driver.peripheral.writes)


async def test_request_control_first_then_start_then_set_target_speed() -> None:
    async with opened(sim()) as driver:
        assert writes(driver) == ["00"]
        assert driver.capabilities.can_drive
        await driver.start(Speed.from_mph(1.0))
        assert writes(driver) == ["00", "07", "02a100"]  # 1.0 mph = 1.609 km/h: 161
        await wait_speed(driver, lambda mph: mph > 0.9)
        await driver.stop()
        assert writes(driver)[-1] == "0801"


async def test_capabilities_come_from_the_ranges() -> None:
    async with opened(sim(speed_min_raw=80, speed_max_raw=1600, speed_increment_raw=10)) as driver:
        caps = driver.capabilities
    assert caps.speed_min.kmh == pytest.approx(0.8)
    assert caps.speed_max.kmh == pytest.approx(16.0)
    assert caps.speed_grid.step.kmh == pytest.approx(0.1)
    assert (caps.speed_grid.unit, caps.speed_grid.increment) == (SpeedUnit.KMH_HUNDREDTHS, 10)
    assert (caps.incline_min_pct, caps.incline_max_pct, caps.incline_increment_pct) == (0.0, 15.0, 0.5)
    assert caps.nominal_period_s == pytest.approx(0.05)


# -- rule S2 on the wire ---------------------------------------------------------------------


async def test_s2_envelope_ends_on_a_001_kmh_machine() -> None:
    async with opened(sim()) as driver:
        grid = Grid.inside(Envelope.reverse(), driver.capabilities)
        assert grid is not None
        await driver.start(grid.lowest)
        await driver.set_speed(grid.highest)
        await driver.set_speed(Speed.from_mph(1.2))  # unsnapped, as a direct caller might
        await driver.set_speed(Speed.from_mph(0.8))
        await driver.stop()
    assert writes(driver)[2:6] == ["028100", "02c100", "02c100", "028100"]  # 129 and 193 (ftms.md)


async def test_s2_envelope_ends_on_a_01_kmh_machine() -> None:
    async with opened(sim(speed_increment_raw=10)) as driver:
        grid = Grid.inside(Envelope.reverse(), driver.capabilities)
        assert grid is not None
        await driver.start(grid.lowest)
        await driver.set_speed(grid.highest)
        await driver.set_speed(Speed.from_mph(1.2))
        await driver.set_speed(Speed.from_mph(1.0))  # 1.609 km/h: the driver sends a whole step, 160
        await driver.stop()
    assert writes(driver)[2:6] == ["028200", "02be00", "02be00", "02a000"]  # 130, 190, 190, 160
    assert all(w.result is not None and w.result.name == "SUCCESS" for w in driver.peripheral.writes)


# -- refusals and timeouts -------------------------------------------------------------------


async def test_a_procedure_with_no_answer_is_rejected_at_the_timeout() -> None:
    async with opened(sim(response_timeout=0.2)) as driver:
        driver.peripheral.strike(FaultKind.IGNORE)
        with pytest.raises(CommandRejected, match=r"no answer to start_or_resume within 0\.2 s"):
            await driver.start(Speed.from_mph(1.0))
        with pytest.raises(CommandRejected, match="no answer to stop_or_pause"):
            await driver.emergency_stop()
        assert writes(driver) == ["00", "07", "0801"]  # written once each, never retried


async def test_a_refusal_names_the_result() -> None:
    async with opened(sim(speed_max_raw=150)) as driver:
        await driver.start(Speed.from_kmh(1.0))
        with pytest.raises(CommandRejected, match="invalid_parameter"):
            await driver.set_speed(Speed.from_kmh(1.9))
        await driver.stop()


async def test_no_speed_control_is_a_capability_not_a_retry() -> None:
    async with opened(SimFtmsDriver.from_url(urlsplit("ftms+sim://"), {"no_speed_control": "1"})) as driver:
        assert not driver.capabilities.can_drive
        for _ in range(3):
            with pytest.raises(Unsupported, match="does not offer speed control"):
                await driver.start(Speed.from_mph(1.0))
            with pytest.raises(Unsupported):
                await driver.set_speed(Speed.from_mph(1.0))
        await driver.emergency_stop()  # a stop is still a stop
        assert writes(driver) == ["00", "0801"]


async def test_a_machine_that_claims_speed_control_but_refuses_it() -> None:
    async with opened(SimFtmsDriver.from_url(urlsplit("ftms+sim://"), {"no_speed_control": "claimed"})) as driver:
        assert driver.capabilities.can_drive  # it says it can
        with pytest.raises(Unsupported, match="op_code_not_supported"):
            await driver.start(Speed.from_mph(1.0))
        assert writes(driver) == ["00", "07", "02a100", "0801"]  # the belt it started is stopped at once
        assert not driver.capabilities.can_drive  # now we know
        with pytest.raises(Unsupported):
            await driver.start(Speed.from_mph(1.0))
        assert len(writes(driver)) == 4  # never retried
        assert not driver.peripheral.running


async def test_refused_control_is_a_capability() -> None:
    peripheral = FtmsPeripheral(SimMachine(rate_hz=20))
    original = peripheral._procedure

    def busy_elsewhere(link: Any, data: bytes) -> Any:
        op, result, request, statuses = original(link, data)
        if data == b"\x00":
            peripheral._control = None
            return op, type(result).CONTROL_NOT_PERMITTED, request, statuses
        return op, result, request, statuses

    peripheral._procedure = busy_elsewhere  # type: ignore[method-assign]
    async with opened(SimFtmsDriver(peripheral)) as driver:
        assert not driver.capabilities.can_drive
        assert "refused control (control_not_permitted)" in (driver.drive_refusal or "")
        with pytest.raises(Unsupported):
            await driver.start(Speed.from_mph(1.0))
        assert writes(driver) == ["00"]


# -- stops -----------------------------------------------------------------------------------


async def test_a_stop_does_not_wait_for_a_procedure_that_gets_no_answer() -> None:
    """S5: the machine loses the answer to a speed change; the stop is written after a short grace,
    not after the procedure's own (here long) timeout."""
    async with opened(sim(response_timeout=30.0)) as driver:
        await driver.start(Speed.from_mph(1.0))
        peripheral = driver.peripheral
        original = peripheral._send

        def lose_speed_answers(uuid: str, data: bytes) -> None:
            if not (uuid == CONTROL_POINT_UUID and data[:2] == b"\x80\x02"):
                original(uuid, data)

        peripheral._send = lose_speed_answers  # type: ignore[method-assign]
        written = on_write(driver, "02")
        speed_change = asyncio.create_task(driver.set_speed(Speed.from_mph(1.1)))
        async with asyncio.timeout(WITHIN):
            await written
            await driver.emergency_stop()
        with pytest.raises(CommandRejected, match="for a stop"):
            await speed_change
        assert writes(driver)[-2:] == ["02b100", "0801"]
        assert driver.peripheral.writes[-1].result is not None
        await wait_speed(driver, lambda mph: mph < 0.05)


async def test_a_stop_overtakes_queued_motion_commands() -> None:
    async with opened(sim()) as driver:
        await driver.start(Speed.from_mph(0.8))
        written = on_write(driver, "02")
        first = asyncio.create_task(driver.set_speed(Speed.from_mph(0.9)))
        await written  # in flight, waiting for its answer
        queued = asyncio.create_task(driver.set_speed(Speed.from_mph(1.0)))
        await asyncio.sleep(0)  # let it queue behind the first (ordering, not timing)
        await driver.emergency_stop()
        await first
        with pytest.raises(CommandRejected, match="a stop was asked for meanwhile"):
            await queued
        assert writes(driver)[-2:] == ["029100", "0801"]  # 0.9 mph (145); 1.0 mph never went out


async def test_procedure_slot_serves_stops_first() -> None:
    slot = _ProcedureSlot()
    order: list[str] = []

    async def use(name: str, stop: bool) -> None:
        await slot.acquire(stop=stop)
        order.append(name)
        slot.release()

    await slot.acquire(stop=False)
    tasks = [asyncio.create_task(use(n, n.startswith("stop"))) for n in ("a", "b", "stop1", "c", "stop2")]
    await asyncio.sleep(0)  # all five queue up
    cancelled = tasks[1]
    cancelled.cancel()
    slot.release()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == ["stop1", "stop2", "a", "c"]
    await slot.acquire(stop=False)  # nothing lost: the slot is free again
    slot.release()


async def test_a_stop_without_control_takes_control_and_stops_again() -> None:
    async with opened(sim()) as driver:
        await driver.start(Speed.from_mph(1.0))
        driver.peripheral.revoke_control()
        await next_event(driver, DeviceEventKind.CONTROL_LOST)
        await driver.stop()
        assert writes(driver)[-3:] == ["0801", "00", "0801"]
        assert not driver.peripheral.running


async def test_commands_after_control_lost_take_control_once() -> None:
    async with opened(sim()) as driver:
        driver.peripheral.revoke_control()
        await next_event(driver, DeviceEventKind.CONTROL_LOST)
        await driver.start(Speed.from_mph(0.9))
        assert writes(driver) == ["00", "00", "07", "029100"]
        await driver.stop()


# -- device events (rules S10, S11) ----------------------------------------------------------


async def test_s10_status_notifications_become_device_events() -> None:
    async with opened(sim()) as driver:
        p = driver.peripheral
        await driver.start(Speed.from_mph(1.0))
        p.console_stop(StopAction.PAUSE)
        assert (await next_event(driver, *DeviceEventKind)).kind is DeviceEventKind.PAUSED_BY_USER
        p.console_start()
        assert (await next_event(driver, *DeviceEventKind)).kind is DeviceEventKind.STARTED_BY_USER
        p.console_stop()
        assert (await next_event(driver, *DeviceEventKind)).kind is DeviceEventKind.STOPPED_BY_USER
        p.pull_key()
        assert (await next_event(driver, *DeviceEventKind)).kind is DeviceEventKind.SAFETY_KEY
        p.revoke_control()
        assert (await next_event(driver, *DeviceEventKind)).kind is DeviceEventKind.CONTROL_LOST


async def test_our_own_start_and_stop_are_not_reported_as_the_users() -> None:
    async with opened(sim()) as driver:
        await driver.start(Speed.from_mph(1.0))  # the machine notifies 0x04 ...
        await driver.stop()  # ... and 0x02
        driver.peripheral.revoke_control()  # a marker sent after both
        assert (await next_event(driver, *DeviceEventKind)).kind is DeviceEventKind.CONTROL_LOST


# -- the link (rule S9) ----------------------------------------------------------------------


async def test_s9_disconnect_then_connected_and_the_first_write_after_is_a_stop() -> None:
    async with opened(sim(unplug_s=0.2, reconnect_first_s=0.05)) as driver:
        await driver.start(Speed.from_mph(1.0))
        await wait_speed(driver, lambda mph: mph > 0.9)
        driver.peripheral.strike(FaultKind.UNPLUG)
        await next_event(driver, DeviceEventKind.DISCONNECTED)
        assert not driver.connected
        with pytest.raises(NotConnected):
            await driver.set_speed(Speed.from_mph(1.1))
        with pytest.raises(NotConnected):
            await driver.emergency_stop()
        await next_event(driver, DeviceEventKind.CONNECTED)
        assert driver.connected
        after = [w for w in driver.peripheral.writes if w.conn == 2]
        assert after[0].hex == "0801"  # before Request Control, whatever the machine answers
        assert [w.hex for w in after] == ["0801", "00", "0801"]
        assert not driver.peripheral.running
        await wait_speed(driver, lambda mph: mph < 0.05)
        await driver.start(Speed.from_mph(0.9))  # and it can be driven again


async def test_reboot_reconnects_and_the_belt_resumes_on_its_own() -> None:
    """The machine restarts and resumes the belt by itself (S11 is the supervisor's to catch)."""
    async with opened(sim(reboot_offline_s=0.1, reboot_resume_s=0.3, reconnect_first_s=0.05)) as driver:
        await driver.start(Speed.from_mph(1.0))
        await wait_speed(driver, lambda mph: mph > 0.9)
        driver.peripheral.strike(FaultKind.REBOOT)
        await next_event(driver, DeviceEventKind.DISCONNECTED)
        await next_event(driver, DeviceEventKind.CONNECTED)
        assert next(w.hex for w in driver.peripheral.writes if w.conn == 2) == "0801"
        await wait_speed(driver, lambda mph: mph > 0.3)  # nobody asked it to


async def test_a_machine_that_is_gone_fails_open_with_a_clear_error() -> None:
    driver = sim(unplug_s=60.0)
    await driver.peripheral.power_on()
    driver.peripheral.strike(FaultKind.UNPLUG)
    with pytest.raises(NotConnected, match="device not found"):
        await driver.open()  # and it powers the simulated machine off again
    assert not driver.peripheral.powered
    await driver.close()
    with pytest.raises(NotConnected):
        await driver.stop()


async def test_close_is_harmless_twice_and_before_open() -> None:
    driver = sim()
    await driver.close()
    await driver.open()
    await driver.close()
    await driver.close()
    assert not driver.connected
    with pytest.raises(NotConnected):
        await driver.start(Speed.from_mph(1.0))


async def test_samples_carry_incline_and_distance_from_split_records() -> None:
    async with opened(sim(split=True)) as driver:
        await driver.set_incline(1.0)
        await driver.start(Speed.from_mph(1.2))
        sample = await wait_speed(driver, lambda mph: mph > 1.1)
        assert sample.incline_pct == 1.0
        sample = await wait_speed(driver)
        assert sample.distance_m is not None
        await driver.stop()
    assert writes(driver)[1] == "030a00"  # 1.0 %: a whole step of the 0.5 % machine
