"""The csafe:// and pulse:// drivers against the simulated devices on real pseudo-terminals.

Both drivers run the driver contract; then what is particular to each: the frames on the wire
(read from the console's received-frame log), S2 rounding, S5 stop ahead of a poll in flight, S9
reconnects whose first frame is a stop, S10/S11 device-reported state, every simulated fault, and
the errors a user meets (missing port, no permission). No sleeps: waits are on updates and frames,
with timeouts; timing is measured in bench/, not here.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from contract import WITHIN, DriverContract, next_samples, until, wait_speed

from retrotread.drivers import (
    BeltSample,
    CommandRejected,
    ConfigError,
    DeviceAccessError,
    DeviceEvent,
    DeviceEventKind,
    Driver,
    NotConnected,
    Speed,
    Unsupported,
    open_driver,
)
from retrotread.drivers.csafe import codec
from retrotread.drivers.csafe.codec import CommandCode
from retrotread.drivers.csafe.driver import CsafeDriver
from retrotread.drivers.pulse.driver import PulseDriver
from retrotread.drivers.types import Update
from retrotread.drivers.units import Rounding, SpeedUnit
from retrotread.safety.envelope import Envelope, Grid
from retrotread.sims.csafe_device import CsafeDevice, ReceivedFrame
from retrotread.sims.faults import FaultKind
from retrotread.sims.pulse_board import PulseBoard
from retrotread.sims.serial_serve import serve_csafe, serve_pulse

# -- helpers -----------------------------------------------------------------------------------


def event(kind: DeviceEventKind) -> Callable[[Update], bool]:
    return lambda u: isinstance(u, DeviceEvent) and u.kind is kind


def kinds(updates: list[Update]) -> list[DeviceEventKind]:
    return [u.kind for u in updates if isinstance(u, DeviceEvent)]


def is_stop(frame: ReceivedFrame) -> bool:
    return frame.is_stop


@pytest.fixture
async def driver(console: CsafeDevice) -> AsyncIterator[Driver]:
    async with open_driver(f"csafe://{console.link}?poll_hz=20") as drv:
        yield drv


@pytest.fixture
async def board(tmp_path: Path) -> AsyncIterator[PulseBoard]:
    async with serve_pulse(tmp_path / "ttyPULSE", push="2.0", line_hz=10) as device:
        yield device


@pytest.fixture
async def pulse(board: PulseBoard) -> AsyncIterator[Driver]:
    async with open_driver(f"pulse://{board.link}?m_per_pulse=0.25") as drv:
        yield drv


# -- the contract ------------------------------------------------------------------------------


class TestCsafeOnPty(DriverContract):
    @pytest.fixture
    async def driver_url(self, tmp_path: Path) -> AsyncIterator[str]:
        async with serve_csafe(tmp_path / "ttyTREAD") as device:
            yield f"csafe://{device.link}?poll_hz=20"


class TestCsafeOnPtyKmhGrid(DriverContract):
    @pytest.fixture
    async def driver_url(self, tmp_path: Path) -> AsyncIterator[str]:
        async with serve_csafe(tmp_path / "ttyTREAD", speed_unit=codec.Unit.KMH_TENTHS) as device:
            yield f"csafe://{device.link}?poll_hz=20&unit=kmh&res=0.01"


class TestPulseOnPty(DriverContract):
    @pytest.fixture
    async def driver_url(self, tmp_path: Path) -> AsyncIterator[str]:
        async with serve_pulse(tmp_path / "ttyPULSE", push="1.5") as device:
            yield f"pulse://{device.link}?m_per_pulse=0.25"


# -- URLs --------------------------------------------------------------------------------------


def test_csafe_url_options_pick_the_grid_and_range() -> None:
    drv = open_driver("csafe:///dev/ttyUSB9?unit=kmh&res=0.01&min_mph=0.6&max_mph=10&poll_hz=5")
    assert isinstance(drv, CsafeDriver)
    caps = drv.capabilities
    assert caps.can_drive
    assert caps.speed_grid.unit is SpeedUnit.KMH_HUNDREDTHS and caps.speed_grid.increment == 1
    assert caps.speed_min.mph == pytest.approx(0.6) and caps.speed_max.mph == pytest.approx(10)
    assert caps.nominal_period_s == pytest.approx(0.2)
    default = open_driver("csafe:///dev/ttyUSB9").capabilities
    assert default.speed_grid.unit is SpeedUnit.MPH_TENTHS
    assert default.speed_min.mph == pytest.approx(0.5) and default.speed_max.mph == pytest.approx(12)
    assert default.nominal_period_s == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("csafe://dev/ttyUSB0", "absolute path"),
        ("csafe:///dev/ttyUSB0?res=0.05", "res"),
        ("csafe:///dev/ttyUSB0?unit=furlongs", "unit"),
        ("csafe:///dev/ttyUSB0?baud=9601", "baud"),
        ("csafe:///dev/ttyUSB0?speed=3", "no option 'speed'"),
        ("csafe:///dev/ttyUSB0?min_mph=5&max_mph=2", "min_mph"),
        ("pulse:///dev/ttyACM0?m_per_pulse=-1", "m_per_pulse"),
        ("pulse:///dev/ttyACM0?m_per_pulse=x", "m_per_pulse"),
        ("pulse://ttyACM0", "absolute path"),
        # One check serves both serial schemes (serial_driver.port_and_baud); each says its own name.
        ("csafe://ttyUSB0", "after csafe://, e.g. csafe:///dev/ttyUSB0"),
        ("pulse://ttyACM0", "after pulse://, e.g. pulse:///dev/ttyACM0"),
        ("pulse:///dev/ttyACM0?baud=9601", "pulse:// option baud='9601': allowed 9600, 19200"),
        ("pulse:///dev/ttyACM0?speed=3", "pulse:// has no option 'speed'; known: baud, m_per_pulse, window_s"),
    ],
)
def test_bad_serial_urls_name_the_option(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        open_driver(url)


def test_pulse_url_options() -> None:
    drv = open_driver("pulse:///dev/ttyACM0?m_per_pulse=0.3&window_s=2")
    assert isinstance(drv, PulseDriver)
    assert drv.m_per_pulse == 0.3 and drv.window_s == 2
    assert not drv.capabilities.can_drive
    assert drv.capabilities.nominal_period_s == pytest.approx(0.2)


# -- errors a user meets -----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["csafe", "pulse"])
async def test_a_missing_port_is_a_clear_error_naming_it(tmp_path: Path, scheme: str) -> None:
    path = tmp_path / "ttyNOTHERE"
    drv = open_driver(f"{scheme}://{path}")
    with pytest.raises(NotConnected, match=str(path)) as caught:
        await drv.open()
    assert "does not exist" in str(caught.value)
    assert not drv.connected
    await drv.close()


async def test_a_path_that_is_no_serial_port_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "plainfile"
    path.write_text("")
    with pytest.raises(ConfigError, match="not a serial port"):
        await open_driver(f"csafe://{path}").open()


_OPEN_AS_NOBODY = """
import asyncio, concurrent.futures.thread, os, sys
import serial, serial_asyncio_fast  # imported while still root: the interpreter lives under /root
from retrotread.drivers import DeviceAccessError, open_driver
import retrotread.drivers.csafe.driver

os.setgroups([])
os.setgid(65534)
os.setuid(65534)

async def main() -> int:
    try:
        await open_driver(sys.argv[1]).open()
    except DeviceAccessError as exc:
        print(exc)
        return 0
    print("opened without permission?!")
    return 1

sys.exit(asyncio.run(main()))
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may enter, so the permission that fails is the port's own (mode 0600)."""
    where = Path(tempfile.mkdtemp(prefix="retrotread-perm-"))
    where.chmod(0o755)
    yield where
    shutil.rmtree(where, ignore_errors=True)


async def test_a_port_without_permission_names_the_dialout_group(open_dir: Path) -> None:
    async with serve_csafe(open_dir / "ttyTREAD") as device:
        url = f"csafe://{device.link}"
        if os.geteuid() != 0:
            assert device.host_name is not None
            os.chmod(device.host_name, 0)
            with pytest.raises(DeviceAccessError) as caught:
                await open_driver(url).open()
            message = str(caught.value)
        else:
            # Root opens anything: drop to nobody in a child, after the imports.
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _OPEN_AS_NOBODY,
                url,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd="/",
            )
            out, _ = await proc.communicate()
            message = out.decode()
            assert proc.returncode == 0, message
    assert str(open_dir / "ttyTREAD") in message
    assert "dialout" in message and "sudo usermod -aG dialout $USER" in message


async def test_commands_on_a_closed_driver_are_not_connected(console: CsafeDevice) -> None:
    drv = open_driver(f"csafe://{console.link}")
    with pytest.raises(NotConnected):
        await drv.set_speed(Speed.from_mph(1.0))
    with pytest.raises(NotConnected):
        await drv.emergency_stop()


# -- CSAFE: the wire ---------------------------------------------------------------------------


async def test_csafe_frames_on_the_wire_decode_to_what_was_asked(console: CsafeDevice, driver: Driver) -> None:
    first = console.received[0]
    assert first.is_stop and first.names == ("SetSpeed", "GoFinished")  # S9: a stop before anything
    # hardware.md "CSAFE state machine": at connect GetStatus, GetVersion, GetUnits (and the error
    # code), then SetTimeout, each its own frame, before the first poll.
    assert console.received[1].names == ("GetStatus", "GetVersion", "GetUnits", "GetErrorCode")
    assert console.received[2].names == ("GetUtilization", "GetOdometer", "GetServiceCode")
    assert console.received[3].contents == bytes([0x13, 0x01, 10])  # SetTimeout 10 s
    poll = await console.next_frame(lambda f: "GetSpeed" in f.names)
    assert poll.names == ("GetStatus", "GetSpeed", "GetGrade", "GetHorizontal")

    mark = len(console.received)
    await driver.start(Speed.from_mph(1.0))
    # The walk from Finished (our stop) to InUse, each state confirmed by the answer's status byte,
    # then SetSpeed alone (hardware.md: strict consoles take it only in InUse).
    walk = [f for f in console.received[mark:] if not f.is_poll]
    assert [f.names for f in walk] == [("GoIdle",), ("GoHaveID",), ("GoInUse",), ("SetSpeed",)]
    assert walk[-1].contents == bytes([0x25, 0x03, 10, 0, 17])  # 10 x 0.1 mph, unit 17
    assert walk[-1].speed is not None and walk[-1].speed.mph == pytest.approx(1.0)

    mark = len(console.received)
    await driver.set_incline(2.5)
    grade = await console.next_frame(lambda f: not f.is_poll, after=mark)
    assert grade.contents == bytes([0x28, 0x03, 25, 0, 76])  # 25 x 0.1 %, unit 76
    assert codec.decode_grade(grade.commands[0]) == 2.5

    # 0.01 mph counts: 0.99 is one count short of the command, not yet there.
    sample = await wait_speed(driver, lambda mph: mph >= 0.995)
    assert sample.speed.mph == pytest.approx(1.0, abs=0.01)
    later = await next_samples(driver, 1)
    assert later[0].incline_pct == 2.5 and later[0].distance_m is not None

    mark = len(console.received)
    await driver.stop()
    stop = await console.next_frame(lambda f: not f.is_poll, after=mark)
    assert stop.contents == bytes([0x25, 0x03, 0, 0, 17, 0x86])
    await wait_speed(driver, lambda mph: mph < 0.05)
    updates = await until(driver, lambda u: isinstance(u, BeltSample))
    assert DeviceEventKind.IDLE not in kinds(updates)  # our own stop is no device-reported stop


@pytest.mark.parametrize(("unit", "res"), [("mph", "0.1"), ("mph", "0.01"), ("kmh", "0.1"), ("kmh", "0.01")])
async def test_S2_frames_written_for_the_envelope_top_decode_to_at_most_1_2_mph(
    console: CsafeDevice, unit: str, res: str
) -> None:
    async with open_driver(f"csafe://{console.link}?unit={unit}&res={res}") as drv:
        # What the supervisor hands the driver: the envelope's top on this device's grid (S2).
        grid = Grid.inside(Envelope.reverse(), drv.capabilities)
        assert grid is not None
        top = grid.snap(Speed.from_mph(1.2), Rounding.DOWN)
        mark = len(console.received)
        await drv.start(Speed.from_mph(1.2) if unit == "mph" else top)
        await drv.set_speed(top)
        frames = [f for f in console.received[mark:] if f.speed is not None]
    assert len(frames) == 2
    for frame in frames:
        assert frame.speed is not None
        assert frame.speed.mph <= 1.2 + 1e-12
    if unit == "mph":
        # 1.2 mph is 12 steps of 0.1 mph (unit 17) or 120 of 0.01 mph (unit 18), never 1.21.
        for frame in frames:
            count, code = struct.unpack("<HB", frame.commands[-1].data)
            assert (count, code) == ((12, 17) if res == "0.1" else (120, 18))


async def test_S5_emergency_stop_overtakes_a_poll_in_flight(console: CsafeDevice, driver: Driver) -> None:
    assert isinstance(driver, CsafeDriver)
    await driver.start(Speed.from_mph(1.0))
    await wait_speed(driver, lambda mph: mph > 0.5)
    console.pause_answers()  # a slow console: the next poll stays in flight
    poll = await console.next_frame(lambda f: f.is_poll, after=len(console.received))
    dropped = driver.dropped_answers
    await driver.emergency_stop()
    following = await console.next_frame(after=poll.index + 1)
    assert following.is_stop  # the stop went out with the poll still unanswered
    resumed_at = time.monotonic()
    console.resume_answers()  # the poll's answer comes first, late, then the stop's
    await until(driver, lambda u: isinstance(u, BeltSample) and u.t >= resumed_at)
    assert driver.dropped_answers == dropped + 1  # the late answer was matched and dropped
    await wait_speed(driver, lambda mph: mph < 0.05)


async def test_S5_stops_drop_queued_motion_commands(console: CsafeDevice, driver: Driver) -> None:
    console.pause_answers()
    poll = await console.next_frame(lambda f: f.is_poll, after=len(console.received))
    assert isinstance(driver, CsafeDriver)
    queued = asyncio.ensure_future(driver.start(Speed.from_mph(1.0)))  # waits behind the poll
    async with asyncio.timeout(WITHIN):
        while not driver.queued:  # noqa: ASYNC110 (a count, not an event; the task queues on its first turn)
            await asyncio.sleep(0)
    await driver.emergency_stop()
    console.resume_answers()
    await queued  # dropped, never sent after the stop
    await next_samples(driver, 3)
    after = console.received[poll.index + 1 :]
    assert after[0].is_stop
    assert not any(CommandCode.GoInUse in {c.code for c in f.commands} for f in after)


async def test_S9_unplug_yields_disconnected_then_connected_and_a_stop_first(
    console: CsafeDevice, driver: Driver
) -> None:
    assert isinstance(driver, CsafeDriver)
    await driver.start(Speed.from_mph(1.0))
    await wait_speed(driver, lambda mph: mph > 0.5)
    timeouts = driver.counters.timeouts
    console.strike(FaultKind.UNPLUG)
    lost = await until(driver, event(DeviceEventKind.DISCONNECTED))
    assert driver.counters.timeouts == timeouts  # from the transport at once, not a poll timeout
    assert not driver.connected
    assert isinstance(lost[-1], DeviceEvent) and "dropped" in lost[-1].detail
    with pytest.raises(NotConnected):
        await driver.set_speed(Speed.from_mph(0.9))
    with pytest.raises(NotConnected):
        await driver.emergency_stop()
    mark = len(console.received)
    back = await until(driver, event(DeviceEventKind.CONNECTED))
    assert not any(isinstance(u, BeltSample) for u in back[:-1])
    assert console.received[mark].is_stop  # the first frame after the reconnect (S9)
    assert driver.connected
    await wait_speed(driver, lambda mph: mph < 0.05)  # and the belt that kept running stops


# -- CSAFE: device-reported state (S10, S11) ---------------------------------------------------


async def test_S10_console_stop_key_yields_idle(console: CsafeDevice, driver: Driver) -> None:
    await driver.start(Speed.from_mph(1.0))
    await wait_speed(driver, lambda mph: mph > 0.5)
    console.press_stop()
    await until(driver, event(DeviceEventKind.IDLE))


async def test_S11_console_start_key_yields_started_by_user(console: CsafeDevice, driver: Driver) -> None:
    await next_samples(driver, 2)
    console.press_start(Speed.from_mph(1.0))
    await until(driver, event(DeviceEventKind.STARTED_BY_USER))
    await wait_speed(driver, lambda mph: mph > 0.5)


# -- CSAFE: every fault of the simulator -------------------------------------------------------


async def test_fault_runaway_belt_passes_its_command_until_stopped(console: CsafeDevice, driver: Driver) -> None:
    await driver.start(Speed.from_mph(1.0))
    await wait_speed(driver, lambda mph: mph > 0.9)
    console.strike(FaultKind.RUNAWAY)
    await wait_speed(driver, lambda mph: mph > 1.3)
    await driver.emergency_stop()
    await wait_speed(driver, lambda mph: mph < 0.05)


async def test_fault_stall_is_a_lost_link_after_three_timeouts(console: CsafeDevice, driver: Driver) -> None:
    assert isinstance(driver, CsafeDriver)
    await driver.start(Speed.from_mph(1.0))
    await wait_speed(driver, lambda mph: mph > 0.5)
    console.strike(FaultKind.STALL)
    updates = await until(driver, event(DeviceEventKind.DISCONNECTED))
    assert driver.counters.timeouts >= 3
    lost = updates[-1]
    assert isinstance(lost, DeviceEvent) and "in a row" in lost.detail
    mark = len(console.received)
    reopened = await console.next_frame(after=mark)  # the port reopened: the first frame is a stop
    assert reopened.is_stop
    assert console.speed.mph > 0.5  # a stalled console obeys nothing: the belt runs on


async def test_fault_unplug_at_the_driver(console: CsafeDevice, driver: Driver) -> None:
    console.strike(FaultKind.UNPLUG)
    updates = await until(driver, event(DeviceEventKind.CONNECTED))
    assert kinds(updates) == [DeviceEventKind.DISCONNECTED, DeviceEventKind.CONNECTED]


async def test_fault_reboot_reconnects_with_a_stop_and_the_console_resumes_by_itself(
    console: CsafeDevice, driver: Driver
) -> None:
    await driver.start(Speed.from_mph(1.0))
    await wait_speed(driver, lambda mph: mph > 0.9)
    console.strike(FaultKind.REBOOT)
    await until(driver, event(DeviceEventKind.DISCONNECTED))
    mark = len(console.received)
    await until(driver, event(DeviceEventKind.CONNECTED))
    assert console.received[mark].is_stop
    await console.wait_for("resumed")  # uncommanded motion (S11): the daemon's rules catch it
    await driver.emergency_stop()
    await wait_speed(driver, lambda mph: mph < 0.05)


async def test_fault_key_is_an_error_state_and_motion_is_rejected(console: CsafeDevice, driver: Driver) -> None:
    await driver.start(Speed.from_mph(1.0))
    await wait_speed(driver, lambda mph: mph > 0.5)
    console.strike(FaultKind.KEY)
    await until(driver, event(DeviceEventKind.ERROR))
    await wait_speed(driver, lambda mph: mph < 0.05)  # the motor lost power: the belt coasts to 0
    # The walk does not ask a console in Error to move: refused here, reported like a refusal (S10).
    with pytest.raises(CommandRejected, match="in ERROR: no start from there"):
        await driver.start(Speed.from_mph(1.0))
    await until(driver, event(DeviceEventKind.REJECTED))
    mark = len(console.received)
    await driver.stop()  # stops are still taken
    await console.next_frame(is_stop, after=mark)
    assert console.state is codec.MachineState.ERROR  # the key is still out


async def test_fault_garbage_never_raises_and_good_frames_still_decode(console: CsafeDevice, driver: Driver) -> None:
    assert isinstance(driver, CsafeDriver)
    await driver.start(Speed.from_mph(1.0))
    console.strike(FaultKind.GARBAGE)
    bad = driver.counters.bad_frames
    samples = await next_samples(driver, 9)
    assert all(math.isfinite(s.speed.mph) for s in samples)
    assert driver.counters.bad_frames > bad
    assert driver.connected
    await wait_speed(driver, lambda mph: mph > 0.9)  # and it still drives through the noise


async def test_fault_ignore_commands_are_never_acknowledged(console: CsafeDevice, driver: Driver) -> None:
    console.strike(FaultKind.IGNORE)
    with pytest.raises(CommandRejected, match="no answer"):
        await driver.start(Speed.from_mph(1.0))
    assert console.speed.mph == 0
    await next_samples(driver, 3)  # polls are still answered
    assert driver.connected


# -- pulse -------------------------------------------------------------------------------------


async def test_pulse_speed_and_distance_follow_the_pushed_belt(board: PulseBoard, pulse: Driver) -> None:
    steady = await wait_speed(pulse, lambda mph: mph > 1.8)
    samples = await next_samples(pulse, 20)
    mean = sum(s.speed.mph for s in samples) / len(samples)
    assert mean == pytest.approx(2.0, rel=0.08)  # the walker's steps surge the belt by 6 %
    board.push_now(0.0)
    stopped = await wait_speed(pulse, lambda mph: mph == 0)
    assert stopped.distance_m is not None and steady.distance_m is not None
    assert stopped.distance_m > steady.distance_m
    # Cumulative pulses: the driver's distance is the board's, to within the pulse in progress.
    assert 0 <= board.distance_m - stopped.distance_m < 0.25 + 1e-6
    distances = [s.distance_m for s in samples]
    assert distances == sorted(distances)


async def test_pulse_board_reboot_is_a_device_reset_and_distance_carries_on(board: PulseBoard, pulse: Driver) -> None:
    before = await wait_speed(pulse, lambda mph: mph > 1.0)
    board.strike(FaultKind.REBOOT)
    updates = await until(pulse, event(DeviceEventKind.DEVICE_RESET))
    assert kinds(updates) == [DeviceEventKind.DISCONNECTED, DeviceEventKind.CONNECTED, DeviceEventKind.DEVICE_RESET]
    after = await next_samples(pulse, 5)
    assert before.distance_m is not None
    assert all(s.distance_m is not None and s.distance_m >= before.distance_m for s in after)


async def test_pulse_unplug_loses_no_distance(board: PulseBoard, pulse: Driver) -> None:
    await wait_speed(pulse, lambda mph: mph > 1.0)
    board.strike(FaultKind.UNPLUG)
    updates = await until(pulse, event(DeviceEventKind.CONNECTED))
    assert kinds(updates) == [DeviceEventKind.DISCONNECTED, DeviceEventKind.CONNECTED]
    board.push_now(0.0)
    stopped = await wait_speed(pulse, lambda mph: mph == 0, within=15)
    assert stopped.distance_m is not None
    assert 0 <= board.distance_m - stopped.distance_m < 0.25 + 1e-6  # pulses while unplugged counted


async def test_pulse_bad_lines_do_not_kill_the_stream(board: PulseBoard, pulse: Driver) -> None:
    assert isinstance(pulse, PulseDriver)
    board.strike(FaultKind.GARBAGE)
    samples = await next_samples(pulse, 10)
    assert all(math.isfinite(s.speed.mph) for s in samples)
    assert pulse.bad_lines >= 3
    assert pulse.connected


async def test_pulse_stalled_board_is_a_lost_link(board: PulseBoard, pulse: Driver) -> None:
    board.strike(FaultKind.STALL)
    updates = await until(pulse, event(DeviceEventKind.DISCONNECTED))
    assert isinstance(updates[-1], DeviceEvent) and "no line" in updates[-1].detail


async def test_pulse_cannot_drive(pulse: Driver) -> None:
    for command in (pulse.start(Speed.from_mph(1)), pulse.set_speed(Speed.from_mph(1)), pulse.set_incline(1.0)):
        with pytest.raises(Unsupported):
            await command
    await pulse.stop()
    await pulse.emergency_stop()


@pytest.mark.parametrize("scheme", ["csafe", "pulse"])
async def test_a_driver_is_reusable_after_close(tmp_path: Path, scheme: str) -> None:
    serve = serve_csafe(tmp_path / "ttyX") if scheme == "csafe" else serve_pulse(tmp_path / "ttyX", push="1.5")
    async with serve as device:
        drv = open_driver(f"{scheme}://{device.link}")
        async with drv:
            await next_samples(drv, 2)
        assert not drv.connected
        async with drv:
            assert drv.connected
            await next_samples(drv, 2)
