"""The driver contract against the in-process simulators (and real hardware, opt-in)."""

from __future__ import annotations

import os

import pytest
from contract import DriverContract


class TestSimMotorized(DriverContract):
    @pytest.fixture
    def driver_url(self) -> str:
        return "sim://motorized?rate_hz=50"


class TestSimMotorizedImperialGrid(DriverContract):
    @pytest.fixture
    def driver_url(self) -> str:
        return "sim://motorized?rate_hz=50&unit=mph&noise_mph=0.01&seed=3"


class TestSimManual(DriverContract):
    @pytest.fixture
    def driver_url(self) -> str:
        return "sim://manual?rate_hz=50"


@pytest.mark.skipif("RETROTREAD_HW_URL" not in os.environ, reason="set RETROTREAD_HW_URL to test real hardware")
class TestHardware(DriverContract):
    """Runs only against a real treadmill: RETROTREAD_HW_URL=csafe:///dev/ttyUSB0 scripts/test -k Hardware.
    The belt WILL move (1.1 mph at most): stand beside it, safety key attached."""

    @pytest.fixture
    def driver_url(self) -> str:
        return os.environ["RETROTREAD_HW_URL"]
