"""``gpio://PIN``: a reed switch on the board's own GPIO, on gpiozero's mock pin factory.

The mock pins are gpiozero's own (``MockFactory``): the driver builds a real ``gpiozero.Button`` on
them and the test closes the switch with ``drive_low()``, as the magnet would.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from contract import DriverContract, next_samples, wait_speed
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from retrotread.drivers import BeltSample, ConfigError, NotConnected, Unsupported, open_driver
from retrotread.drivers.base import Driver
from retrotread.drivers.units import Speed


@pytest.fixture
def mock_pins() -> Iterator[MockFactory]:
    previous = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    yield factory
    factory.reset()
    Device.pin_factory = previous


class TestGpioContract(DriverContract):
    @pytest.fixture
    def driver_url(self, mock_pins: MockFactory) -> str:
        return "gpio://17?m_per_pulse=0.25"


async def press(driver: Driver, pin: object, bounces: int = 0) -> BeltSample:
    """Close and open the switch once, bouncing ``bounces`` times each way; the sample it made."""
    drive_low, drive_high = pin.drive_low, pin.drive_high  # type: ignore[attr-defined]
    drive_low()
    for _ in range(bounces):
        drive_high()
        drive_low()
    drive_high()
    for _ in range(bounces):
        drive_low()
        drive_high()
    # The press's own sample comes first; the next one (a tick, PERIOD_S later) spaces the presses
    # well apart of the debounce interval.
    first, _ = await next_samples(driver, 2)
    return first


async def test_presses_become_distance_and_bounces_are_not_counted(mock_pins: MockFactory) -> None:
    pin = mock_pins.pin(17)
    async with open_driver("gpio://17?m_per_pulse=0.5&bounce_ms=100") as driver:
        assert driver.connected
        await next_samples(driver, 1)
        pressed = [await press(driver, pin, bounces=3) for _ in range(6)]
        assert [s.distance_m for s in pressed] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
        assert driver.pulses == 6  # type: ignore[attr-defined]
        assert driver.bounces == 6 * 6  # type: ignore[attr-defined]  # 3 on closing, 3 on opening
        assert all(s.speed.mps > 0 for s in pressed[1:])
        # No more pulses: the belt has stopped, and reads 0 within pulse.md's 2 s.
        stopped = await wait_speed(driver, lambda mph: mph == 0)
        assert stopped.distance_m == 3.0


async def test_measures_only(mock_pins: MockFactory) -> None:
    async with open_driver("gpio://GPIO17") as driver:
        assert not driver.capabilities.can_drive
        with pytest.raises(Unsupported):
            await driver.set_speed(Speed.from_mph(1.0))
        await driver.stop()  # no motor: harmless
        await driver.emergency_stop()


async def test_a_pin_in_use_is_a_clear_error(mock_pins: MockFactory) -> None:
    async with open_driver("gpio://17"):
        second = open_driver("gpio://17")
        with pytest.raises(NotConnected, match=r"gpio://17: cannot open the pin"):
            await second.open()
        assert not second.connected
        await second.close()  # never opened: harmless


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("gpio://", "give the pin after gpio://"),
        ("gpio://seventeen", "give the pin after gpio://"),
        ("gpio://17/dev", "give the pin after gpio://"),
        ("gpio://17?speed=3", "gpio:// has no option 'speed'"),
        ("gpio://17?m_per_pulse=0", "m_per_pulse=0 is outside"),
        ("gpio://17?m_per_pulse=x", "m_per_pulse='x' is not a number"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        open_driver(url)
