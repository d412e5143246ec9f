"""The driver contract: one test class every driver runs (python-can's back2back_test habit).

Subclass ``DriverContract`` and give it a ``driver_url`` fixture; the fixture may start a simulated
device first (a pseudo-terminal, a simulated BLE peripheral) and tear it down after. Real hardware
runs the same class when RETROTREAD_HW_URL is set (see tests/test_driver_contract.py).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import pytest

from retrotread.drivers import BeltSample, DeviceEvent, Driver, Speed, Unsupported, Update, open_driver

WITHIN = 10.0


async def until(driver: Driver, ok: Callable[[Update], bool], within: float = WITHIN) -> list[Update]:
    """A driver's updates up to and including the first that ``ok`` accepts (samples and events alike)."""
    seen: list[Update] = []
    async with asyncio.timeout(within):
        async for update in driver.samples():
            seen.append(update)
            if ok(update):
                return seen
    raise AssertionError(f"sample stream ended; saw {seen[-5:]}")


async def next_samples(driver: Driver, n: int, within: float = WITHIN) -> list[BeltSample]:
    got: list[BeltSample] = []
    async with asyncio.timeout(within):
        async for item in driver.samples():
            if isinstance(item, BeltSample):
                got.append(item)
                if len(got) >= n:
                    break
    return got


async def wait_speed(
    driver: Driver, ok: Callable[[float], object] = lambda _: True, within: float = WITHIN
) -> BeltSample:
    """The first sample whose speed satisfies ``ok(mph)`` (by default the next sample)."""
    async with asyncio.timeout(within):
        async for item in driver.samples():
            if isinstance(item, BeltSample) and ok(item.speed.mph):
                return item
    raise AssertionError("update stream ended")


class DriverContract:
    """Behaviour every driver shares. ``driver_url`` is a fixture the subclass provides."""

    async def test_open_close_twice_is_harmless(self, driver_url: str) -> None:
        driver = open_driver(driver_url)
        await driver.open()
        assert driver.connected
        await driver.close()
        await driver.close()
        assert not driver.connected

    async def test_samples_are_ordered_and_believable(self, driver_url: str) -> None:
        async with open_driver(driver_url) as driver:
            samples = await next_samples(driver, 4)
        times = [s.t for s in samples]
        assert times == sorted(times)
        assert all(math.isfinite(s.speed.mph) and s.speed.mph >= 0 for s in samples)

    async def test_capabilities_are_consistent(self, driver_url: str) -> None:
        async with open_driver(driver_url) as driver:
            caps = driver.capabilities
        assert caps.nominal_period_s > 0
        if caps.can_drive:
            assert Speed.zero() <= caps.speed_min <= caps.speed_max
            assert caps.speed_grid.step.mps > 0

    async def test_drives_or_refuses_to(self, driver_url: str) -> None:
        async with open_driver(driver_url) as driver:
            if not driver.capabilities.can_drive:
                with pytest.raises(Unsupported):
                    await driver.start(Speed.from_mph(1.0))
                return
            await driver.start(Speed.from_mph(1.0))
            await wait_speed(driver, lambda mph: mph > 0.5)
            await driver.set_speed(Speed.from_mph(0.9))
            await driver.stop()
            await wait_speed(driver, lambda mph: mph < 0.05)

    async def test_emergency_stop_stops_a_running_belt(self, driver_url: str) -> None:
        async with open_driver(driver_url) as driver:
            if not driver.capabilities.can_drive:
                await driver.emergency_stop()  # harmless on a belt with no motor
                return
            await driver.start(Speed.from_mph(1.1))
            await wait_speed(driver, lambda mph: mph > 0.5)
            await driver.emergency_stop()
            await wait_speed(driver, lambda mph: mph < 0.05)

    async def test_updates_are_samples_or_device_events(self, driver_url: str) -> None:
        async with open_driver(driver_url) as driver:
            async with asyncio.timeout(WITHIN):
                n = 0
                async for item in driver.samples():
                    assert isinstance(item, BeltSample | DeviceEvent)
                    n += 1
                    if n >= 3:
                        break
