"""The CSAFE state walk (issue 14 point 2) against a strict simulated console on a real pty.

Source: ../shared/docs/hardware.md "CSAFE state machine": strict consoles take SetSpeed only in
InUse, reached through Ready -> GoIdle -> Idle -> GoHaveID -> HaveID -> GoInUse -> InUse, and after
GoFinished back through GoIdle (CSAFE state diagram; Concept2 PM3 code walks it; qdomyos-zwift's
Life Fitness path). At connect: GetStatus, GetVersion, GetUnits; SetTimeout; one frame outstanding at
a time except the stop (S5).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from contract import DriverContract, until, wait_speed
from helpers import start_until_latched

from retrotread.daemon.controller import Controller
from retrotread.drivers import BeltSample, Speed, open_driver
from retrotread.drivers.csafe import codec
from retrotread.drivers.csafe.codec import MachineState
from retrotread.drivers.csafe.driver import CsafeDriver
from retrotread.safety import Mode, Rule, SafetyConfig
from retrotread.sims.belt import Lie
from retrotread.sims.csafe_device import CsafeDevice, ReceivedFrame
from retrotread.sims.serial_serve import serve_csafe


def moves(frame: ReceivedFrame) -> bool:
    """A frame that could set the belt going: GoInUse, GoHaveID, or SetSpeed above 0."""
    names = set(frame.names)
    speed = frame.speed
    return bool(names & {"GoInUse", "GoHaveID"}) or (speed is not None and speed.mps > 0)


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[CsafeDevice]:
    async with serve_csafe(tmp_path / "ttyTREAD", strict=True) as device:
        yield device


class TestCsafeOnPtyStrict(DriverContract):
    """The whole driver contract against a console that enforces the walk."""

    @pytest.fixture
    async def driver_url(self, strict: CsafeDevice) -> AsyncIterator[str]:
        yield f"csafe://{strict.link}?poll_hz=20"
        assert strict.refused_walk == [], "the driver skipped a step of the walk"


async def test_a_strict_console_refuses_the_old_start_frame(strict: CsafeDevice) -> None:
    # What the driver sent before the walk (GoInUse + SetSpeed from any state) does not start a
    # strict console: this is the bug of issue 14, seen at the console.
    async with open_driver(f"csafe://{strict.link}?poll_hz=20") as drv:
        assert isinstance(drv, CsafeDriver)
        await until(drv, lambda u: isinstance(u, BeltSample))
        assert strict.state is MachineState.READY  # a strict console has nothing to finish at connect
        drv._state = None  # the one-frame start the driver keeps for consoles that never say a state
        with pytest.raises(Exception, match="refused start"):
            await drv.start(Speed.from_mph(1.0))
        assert strict.refused_walk == ["GoInUse in READY", "SetSpeed in READY"]
        assert strict.speed.mps == 0


async def test_every_set_walks_back_through_idle_after_a_stop(strict: CsafeDevice) -> None:
    async with open_driver(f"csafe://{strict.link}?poll_hz=20") as drv:
        for _ in range(2):
            mark = len(strict.received)
            await drv.start(Speed.from_mph(1.0))
            await wait_speed(drv, lambda mph: mph > 0.9)
            walk = [f.names for f in strict.received[mark:] if "GetSpeed" not in f.names]
            assert walk[0] == ("GoIdle",) and ("GoHaveID",) in walk and walk[-1] == ("SetSpeed",)
            await drv.stop()
            await wait_speed(drv, lambda mph: mph < 0.05)
            assert strict.state in (MachineState.READY, MachineState.FINISHED)
        assert strict.refused_walk == []


async def test_connect_asks_status_version_units_and_sets_a_timeout(strict: CsafeDevice) -> None:
    async with open_driver(f"csafe://{strict.link}?poll_hz=20") as drv:
        await until(drv, lambda u: isinstance(u, BeltSample))
        names = [f.names for f in strict.received[:5]]
        assert names[1] == ("GetStatus", "GetVersion", "GetUnits", "GetErrorCode")
        assert strict.received[3].names == ("SetTimeout",)
        device = drv.device
        assert device is not None
        # sims.csafe_device.VERSION: manufacturer 0x52, class 3, model 1, version 1.0
        assert (device.maker, device.model, device.firmware) == ("CSAFE manufacturer 82", "class 3 model 1", "1.0")
        assert device.units == "mph" and device.units_warning is None and device.error_code == 0
        # hardware.md "What a gym operator reads from CSAFE": in a frame of their own.
        assert strict.received[2].names == ("GetUtilization", "GetOdometer", "GetServiceCode")
        assert (device.hours_of_use, device.odometer_m, device.service_code) == (0.0, 0.0, 0)


async def test_a_console_in_other_units_than_the_url_is_warned_about(tmp_path: Path) -> None:
    async with (
        serve_csafe(tmp_path / "ttyTREAD", speed_unit=codec.Unit.KMH_TENTHS) as console,
        open_driver(f"csafe://{console.link}?poll_hz=20&unit=mph") as drv,
    ):
        await until(drv, lambda u: isinstance(u, BeltSample))
        assert drv.device is not None and drv.device.units == "km/h"
        assert drv.device.units_warning == "the console says its units are km/h; the URL says unit=mph"


async def test_s5_a_stop_during_the_walk_ends_it_and_nothing_moves_after(strict: CsafeDevice) -> None:
    async with open_driver(f"csafe://{strict.link}?poll_hz=20") as drv:
        assert isinstance(drv, CsafeDriver)
        await until(drv, lambda u: isinstance(u, BeltSample))
        strict.pause_answers()  # the console is slow: the walk's first step is in flight
        mark = len(strict.received)
        start = asyncio.create_task(drv.start(Speed.from_mph(1.0)))
        first = await strict.next_frame(lambda f: "GoIdle" in f.names, after=mark)
        await drv.emergency_stop()  # goes out at once, ahead of the answer in flight (S5)
        stop = await strict.next_frame(lambda f: f.is_stop, after=first.index + 1)
        strict.resume_answers()
        await start
        await until(drv, lambda u: isinstance(u, BeltSample))
        await until(drv, lambda u: isinstance(u, BeltSample))
        after = strict.received[stop.index + 1 :]
        assert not any(moves(f) for f in after), [f.names for f in after]
        assert strict.speed.mps == 0


async def test_one_frame_outstanding_while_the_walk_runs(strict: CsafeDevice) -> None:
    async with open_driver(f"csafe://{strict.link}?poll_hz=50") as drv:
        assert isinstance(drv, CsafeDriver)
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(drv._in_flight))
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        try:
            await drv.start(Speed.from_mph(1.0))
            await wait_speed(drv, lambda mph: mph > 0.9)
        finally:
            watcher.cancel()
        assert peak == 1


async def test_s7_a_csafe_console_reporting_kmh_as_mph_latches_unit_mismatch(tmp_path: Path) -> None:
    # hardware.md "Units that lie", the CSAFE way round: the console answers GetSpeed in km/h counts
    # under an mph unit code; the daemon reads 1.609 x its command and latches (S7).
    async with serve_csafe(tmp_path / "ttyTREAD", strict=True, lie=Lie.KMH_OUT) as console:
        drv = open_driver(f"csafe://{console.link}?poll_hz=20")
        async with Controller(drv, treadmill_id="t", safety=SafetyConfig(mode=Mode.REVERSE)) as c:
            latch = await start_until_latched(c, Speed.from_mph(0.8))
            assert (latch.reason, latch.rule) == ("unit-mismatch", Rule.S7)
            assert console.refused_walk == []
