"""The simulated serial devices on real pseudo-terminals, spoken to with raw bytes (no driver).

What a host sees on the wire is what these tests read: frames built and parsed with the codecs,
through a pty opened the way pyserial opens a port. Nothing here sleeps to synchronize: every wait is
on a frame, a line or a device event, with a timeout.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import os
import signal
import subprocess
import sys
import termios
import tty
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from retrotread.drivers import ConfigError, Speed
from retrotread.drivers.csafe import codec
from retrotread.drivers.csafe.codec import Command, CommandCode, MachineState, PreviousFrame, Response
from retrotread.drivers.pulse.codec import Comment, LineDecoder, PulseReading, parse_line
from retrotread.drivers.scan import PortInfo, serial_ports
from retrotread.sims.csafe_device import CsafeDevice
from retrotread.sims.faults import FaultKind, parse_faults
from retrotread.sims.pty import PtyEndpoint
from retrotread.sims.pulse_board import COMMENT, PulseBoard
from retrotread.sims.serial_serve import TRACE_ENV, run_device, serve_csafe, serve_pulse

RETROTREAD = Path(sys.executable).with_name("retrotread")


class Host:
    """The host end of a pty, opened as pyserial would: raw, non-blocking, read by a callback."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd, termios.TCSANOW)  # TCSANOW: keep what the device wrote before we came
        self.decoder = codec.FrameDecoder()
        self.lines = LineDecoder()
        self.data = bytearray()
        self._lines: deque[bytes] = deque()
        self.eof = asyncio.Event()
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            chunk = b""  # the console end went away: what a pulled cable looks like
        if not chunk:
            self.eof.set()
            asyncio.get_running_loop().remove_reader(self.fd)
        self.data += chunk
        self._changed.set()

    async def response(self, within: float = 5.0) -> Response:
        """The next whole frame from the console, skipping what the decoder drops."""
        async with asyncio.timeout(within):
            while True:
                if self.data:
                    self.decoder.feed(bytes(self.data))
                    self.data.clear()
                for frame in self.decoder:
                    if isinstance(frame, codec.Frame):
                        return codec.parse_response(frame.contents)
                self._changed.clear()
                await self._changed.wait()

    async def exchange(self, *commands: Command) -> Response:
        os.write(self.fd, codec.encode_frame(commands))
        return await self.response()

    async def line(self, within: float = 5.0) -> bytes:
        """The next line from the board."""
        async with asyncio.timeout(within):
            while not self._lines:
                if self.data:
                    self._lines.extend(self.lines.feed(bytes(self.data)))
                    self.data.clear()
                    continue
                self._changed.clear()
                await self._changed.wait()
            return self._lines.popleft()

    def close(self) -> None:
        if self.fd >= 0:
            if not self.eof.is_set():
                asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


@pytest.fixture
async def host(console: CsafeDevice) -> AsyncIterator[Host]:
    h = Host(console.link)
    yield h
    h.close()


# -- the pty endpoint --------------------------------------------------------------------------


async def test_pty_endpoint_links_carries_bytes_both_ways_and_unplugs(tmp_path: Path) -> None:
    got: list[bytes] = []
    arrived = asyncio.Event()

    def on_data(data: bytes, t: float) -> None:
        got.append(data)
        arrived.set()

    link = tmp_path / "ttyX"
    async with PtyEndpoint(link, on_data) as endpoint:
        assert link.is_symlink() and os.readlink(link) == endpoint.host_name
        assert endpoint.host_name is not None and endpoint.host_name.startswith("/dev/pts/")
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            # Raw mode: bytes pass untouched, nothing is echoed back to the host.
            assert not termios.tcgetattr(fd)[3] & termios.ECHO
            os.write(fd, b"\xf1\x80\x80\xf2")
            async with asyncio.timeout(5):
                await arrived.wait()
            assert b"".join(got) == b"\xf1\x80\x80\xf2"
            assert endpoint.write(b"\x00\xff") == 2
            assert os.read(fd, 16) == b"\x00\xff"
            endpoint.unplug()
            assert not link.exists() and not link.is_symlink()
            # What a driver sees when the cable is pulled: end of file (a hung-up tty) or EIO.
            try:
                gone = os.read(fd, 16)
            except OSError as exc:
                assert exc.errno == errno.EIO  # noqa: PT017
            else:
                assert gone == b""
        finally:
            os.close(fd)
        endpoint.plug()
        assert link.is_symlink() and os.readlink(link) == endpoint.host_name
    assert not link.is_symlink()
    await endpoint.close()  # twice: harmless


async def test_pty_endpoint_replaces_a_stale_link_but_never_a_file(tmp_path: Path) -> None:
    stale = tmp_path / "ttyStale"
    stale.symlink_to("/dev/pts/does-not-exist")
    async with PtyEndpoint(stale, lambda data, t: None) as endpoint:
        assert os.readlink(stale) == endpoint.host_name
    regular = tmp_path / "ttyFile"
    regular.write_text("not a tty")
    with pytest.raises(ConfigError, match="not a symlink"):
        async with PtyEndpoint(regular, lambda data, t: None):
            pass
    assert regular.read_text() == "not a tty"


# -- the CSAFE console -------------------------------------------------------------------------


async def test_console_answers_what_a_host_asks(console: CsafeDevice, host: Host) -> None:
    answer = await host.exchange(
        codec.get_status(), codec.get_version(), codec.get_units(), codec.get_twork(), codec.get_error_code()
    )
    assert answer.status.state is MachineState.READY
    assert answer.status.previous is PreviousFrame.OK
    assert answer.status.toggle == 1  # flips on every accepted frame
    version = answer.answer(CommandCode.GetVersion)
    units = answer.answer(CommandCode.GetUnits)
    twork = answer.answer(CommandCode.GetTWork)
    error = answer.answer(CommandCode.GetErrorCode)
    assert version is not None and units is not None and twork is not None and error is not None
    assert codec.decode_version(version).class_id == 3
    assert codec.decode_units(units) is codec.UnitSystem.ENGLISH
    assert codec.decode_twork(twork).total_s == 0
    assert codec.decode_error_code(error) == 0
    frame = await console.next_frame()
    assert frame.names == ("GetStatus", "GetVersion", "GetUnits", "GetTWork", "GetErrorCode")
    assert frame.is_poll and not frame.is_stop


async def test_console_obeys_start_speed_grade_and_stop(console: CsafeDevice, host: Host) -> None:
    unit = codec.Unit.MPH_TENTHS
    started = await host.exchange(codec.go_in_use(), codec.set_speed(Speed.from_mph(1.0), unit))
    assert started.status.state is MachineState.IN_USE
    assert started.status.previous is PreviousFrame.OK
    await host.exchange(codec.set_grade(2.5, codec.Unit.GRADE_TENTHS_PERCENT))
    async with asyncio.timeout(10):
        while True:
            polled = await host.exchange(codec.get_speed(), codec.get_grade(), codec.get_horizontal())
            speed_answer = polled.answer(CommandCode.GetSpeed)
            assert speed_answer is not None
            if codec.decode_speed(speed_answer).mph >= 0.99:
                break
    grade = polled.answer(CommandCode.GetGrade)
    assert grade is not None and codec.decode_grade(grade) == 2.5
    stopped = await host.exchange(*codec.stop_commands(unit))
    assert stopped.status.state is MachineState.FINISHED
    assert console.belt.command_mps == 0
    frames = console.received
    assert [f.names for f in frames[:2]] == [("GoInUse", "SetSpeed"), ("SetGrade",)]
    assert frames[0].speed is not None and abs(frames[0].speed.mph - 1.0) < 1e-9
    assert frames[-1].is_stop
    assert [f.t for f in frames] == sorted(f.t for f in frames)


async def test_console_answers_unsupported_commands_with_the_status_byte_alone(host: Host) -> None:
    # csafe.md "Quirks": F1 89 89 F2 style answers; 0x9A is a short command we do not simulate.
    answer = await host.exchange(Command(0x9A))
    assert answer.answers == ()
    assert answer.status.previous is PreviousFrame.OK


async def test_console_says_bad_to_contents_that_do_not_split(console: CsafeDevice, host: Host) -> None:
    first = await host.exchange(codec.get_status())
    os.write(host.fd, codec.encode_contents(b"\x25"))  # a long command with no length byte
    bad = await host.response()
    assert bad.status.previous is PreviousFrame.BAD
    assert bad.status.toggle == first.status.toggle  # a refused frame does not flip the toggle
    frame = await console.next_frame(lambda f: f.error is not None)
    assert "length" in (frame.error or "")


async def test_console_key_fault_refuses_motion_but_takes_stops(console: CsafeDevice, host: Host) -> None:
    unit = codec.Unit.MPH_TENTHS
    await host.exchange(codec.go_in_use(), codec.set_speed(Speed.from_mph(1.0), unit))
    console.strike(FaultKind.KEY)
    refused = await host.exchange(codec.go_in_use(), codec.set_speed(Speed.from_mph(1.0), unit))
    assert refused.status.state is MachineState.ERROR
    assert refused.status.previous is PreviousFrame.REJECTED
    stopped = await host.exchange(*codec.stop_commands(unit))
    assert stopped.status.previous is PreviousFrame.OK
    assert stopped.status.state is MachineState.ERROR  # the key is still out
    assert not console.belt.powered


async def test_console_ignore_fault_answers_polls_only(console: CsafeDevice, host: Host) -> None:
    console.strike(FaultKind.IGNORE)
    os.write(host.fd, codec.encode_frame([codec.set_speed(Speed.from_mph(1.0), codec.Unit.MPH_TENTHS)]))
    await console.next_frame(lambda f: f.names == ("SetSpeed",))
    polled = await host.exchange(codec.get_speed())  # the only answer that comes is the poll's
    assert polled.answer(CommandCode.GetSpeed) is not None
    assert console.answers_sent == 1


async def test_console_garbage_fault_wraps_and_corrupts_answers(console: CsafeDevice, host: Host) -> None:
    console.strike(FaultKind.GARBAGE)
    first = await host.exchange(codec.get_speed())  # noise first, then the answer: the decoder resyncs
    assert first.answer(CommandCode.GetSpeed) is not None
    assert host.decoder.bad_frames == 1  # the stray start flag in the noise
    os.write(host.fd, codec.encode_frame([codec.get_speed()]))  # this answer's checksum fails
    third = await host.exchange(codec.get_speed())  # then a good one with junk after it
    assert third.answer(CommandCode.GetSpeed) is not None
    assert host.decoder.bad_frames == 2
    assert [f.names for f in console.received] == [("GetSpeed",)] * 3


async def test_console_pause_holds_answers_until_resumed(console: CsafeDevice, host: Host) -> None:
    console.pause_answers()
    os.write(host.fd, codec.encode_frame([codec.get_status()]))
    await console.next_frame()
    assert not host.data and console.answers_sent == 0
    console.resume_answers()
    answer = await host.response()
    assert answer.status.state is MachineState.READY


async def test_console_unplug_and_reboot_drop_the_link_and_come_back(console: CsafeDevice) -> None:
    h = Host(console.link)
    await h.exchange(codec.go_in_use(), codec.set_speed(Speed.from_mph(1.0), codec.Unit.MPH_TENTHS))
    console.strike(FaultKind.REBOOT)
    async with asyncio.timeout(5):
        await h.eof.wait()  # the host reads EIO at once
    h.close()
    back = await console.wait_for("replugged")
    resumed = await console.wait_for("resumed", after=back)
    assert resumed > back
    h = Host(console.link)
    try:
        answer = await h.exchange(codec.get_status())
        # It resumed the belt on its own after the reboot: the uncommanded motion of S11.
        assert answer.status.state is MachineState.IN_USE
        assert console.belt.command_mps == pytest.approx(Speed.from_mph(1.0).mps)
    finally:
        h.close()


async def test_console_stall_records_frames_but_answers_nothing(console: CsafeDevice, host: Host) -> None:
    console.strike(FaultKind.STALL)
    os.write(host.fd, codec.encode_frame([codec.get_status()]))
    frame = await console.next_frame()
    assert frame.names == ("GetStatus",)
    assert console.answers_sent == 0


async def test_console_refuses_no_fault_kind_and_the_board_refuses_motor_faults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="runaway"):
        PulseBoard(tmp_path / "ttyP", faults=parse_faults("runaway@1"))
    async with serve_csafe(tmp_path / "ttyC", faults="runaway@100,key@200") as device:
        assert [f.kind for f in device.faults] == [FaultKind.RUNAWAY, FaultKind.KEY]
        assert device.strike_next() is FaultKind.RUNAWAY
        assert device.belt.runaway_mps2 > 0


# -- the pulse board ---------------------------------------------------------------------------


async def test_pulse_board_writes_its_comment_then_readings(tmp_path: Path) -> None:
    async with serve_pulse(tmp_path / "ttyPULSE", push="0") as board:
        # The endpoint holds the pty open, so what the board wrote at boot waits for the first host.
        h = Host(board.link)
        try:
            first = await h.line()
            assert first.startswith(COMMENT)
            assert isinstance(parse_line(first), Comment)
            readings: list[PulseReading] = []
            while len(readings) < 3:
                parsed = parse_line(await h.line())
                assert isinstance(parsed, PulseReading), parsed
                readings.append(parsed)
            assert [r.total_pulses for r in readings] == [0, 0, 0]  # nobody pushes: no pulse
            assert [r.board_ms for r in readings] == sorted(r.board_ms for r in readings)
        finally:
            h.close()


async def test_pulse_board_counts_pulses_of_the_pushed_belt(tmp_path: Path) -> None:
    async with serve_pulse(tmp_path / "ttyPULSE", push="3.0", m_per_pulse=0.25) as board:
        h = Host(board.link)
        try:
            seen: list[PulseReading] = []
            while not seen or seen[-1].total_pulses < 8:
                parsed = parse_line(await h.line())
                if isinstance(parsed, PulseReading):
                    seen.append(parsed)
            totals = [r.total_pulses for r in seen]
            assert totals == sorted(totals)
            # A line on every pulse: the count never jumps by more than one between lines at 3 mph.
            assert all(b - a <= 1 for a, b in itertools.pairwise(totals))
            assert board.distance_m >= 8 * 0.25
        finally:
            h.close()


async def test_pulse_board_reboot_restarts_its_counters(tmp_path: Path) -> None:
    async with serve_pulse(tmp_path / "ttyPULSE", push="3.0") as board:
        h = Host(board.link)
        while board.pulses < 2:
            parse_line(await h.line())
        board.strike(FaultKind.REBOOT)
        async with asyncio.timeout(5):
            await h.eof.wait()
        h.close()
        await board.wait_for("replugged")
        h = Host(board.link)
        try:
            parsed = parse_line(await h.line())
            while not isinstance(parsed, PulseReading):
                parsed = parse_line(await h.line())
            assert parsed.board_ms < 1000 and parsed.total_pulses <= 2
        finally:
            h.close()


# -- sim-device, the command -------------------------------------------------------------------


def test_run_device_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="push"):
        run_device("csafe", tmp_path / "x", fault="", push="1.5")
    with pytest.raises(ConfigError, match="unknown kind"):
        run_device("csafe", tmp_path / "x", fault="meltdown@3", push=None)
    with pytest.raises(ConfigError, match="allowed csafe or pulse"):
        run_device("ftms", tmp_path / "x", fault="", push=None)


@pytest.mark.slow
def test_sim_device_command_serves_until_sigterm_and_sigusr1_strikes(tmp_path: Path) -> None:
    link = tmp_path / "ttyTREAD"
    trace = tmp_path / "trace.jsonl"
    env = {**os.environ, TRACE_ENV: str(trace)}
    with subprocess.Popen(
        [str(RETROTREAD), "sim-device", "csafe", "--link", str(link), "--fault", "unplug@9999"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline()
            assert str(link) in banner and "/dev/pts/" in banner and "unplug@9999" in banner
            assert link.is_symlink()
            proc.send_signal(signal.SIGUSR1)  # the unplug, now
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not link.is_symlink()
    events = [json.loads(line)["event"] for line in trace.read_text().splitlines()]
    assert events[:3] == ["plugged", "fault:unplug", "unplugged"]


# -- scan --------------------------------------------------------------------------------------


def test_serial_ports_name_the_by_id_link_vid_pid_and_description(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serial.tools import list_ports

    device = tmp_path / "ttyUSB0"
    device.write_text("")
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0").symlink_to(device)
    fake = [
        SimpleNamespace(
            device=str(device),
            vid=0x0403,
            pid=0x6001,
            description="FT232R USB UART",
            manufacturer="FTDI",
            serial_number="A10K1234",
        ),
        SimpleNamespace(
            device="/dev/ttyS0", vid=None, pid=None, description="ttyS0", manufacturer=None, serial_number=None
        ),
    ]
    monkeypatch.setattr(list_ports, "comports", lambda: fake)
    ports = serial_ports(by_id)
    assert [p.device for p in ports] == sorted([str(device), "/dev/ttyS0"])
    usb = next(p for p in ports if p.device == str(device))
    line = usb.describe()
    assert str(device) in line and "by-id/usb-FTDI_FT232R" in line and "0403:6001" in line and "FT232R" in line
    assert PortInfo("/dev/ttyS0", description="n/a").describe() == "/dev/ttyS0"
    assert all(p.by_id is None for p in serial_ports(tmp_path / "no-such-dir"))
