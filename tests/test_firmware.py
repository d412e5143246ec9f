"""The pulse-board firmware itself (firmware/pulse/pulse.ino), run on an emulated ATmega328P.

The set-up builds the sketch with Debian's gcc-avr over arduino-core-avr and the simavr harness
(firmware/harness, libsimavr-dev) with ``make -C firmware``; the harness runs the ELF at 16 MHz,
closes the sensor switch on pin 2 on a schedule (bouncing contacts included) and bridges the UART
to a pseudo-terminal. The real ``pulse://`` driver, and a real ``retrotread deadmill`` process,
read that pty: what they measure must be the presses the harness made, not its bounces.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from contract import WITHIN

from retrotread.drivers import BeltSample, open_driver

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BUILD = ROOT / "build" / "firmware"  # build/ is ignored by git
PACKAGES = {"avr-g++": "gcc-avr", "avr-objcopy": "binutils-avr", "make": "make", "cc": "gcc"}
M_PER_PULSE = 0.25


@pytest.fixture(scope="session")
def firmware() -> tuple[Path, Path]:
    """(pulse.elf, simavr-pulse), built once per test run (make keeps what is up to date)."""
    missing = [f"{pkg} ({cmd})" for cmd, pkg in PACKAGES.items() if shutil.which(cmd) is None]
    headers = {
        "avr-libc": Path("/usr/lib/avr/include/avr/io.h"),
        "arduino-core-avr": Path("/usr/share/arduino/hardware/arduino/avr/cores/arduino/Arduino.h"),
        "libsimavr-dev": Path("/usr/include/simavr/sim_avr.h"),
    }
    missing += [pkg for pkg, path in headers.items() if not path.exists()]
    if missing:
        pytest.skip(f"the firmware toolchain is not installed: apt-get install {' '.join(missing)}")
    built = subprocess.run(
        ["make", "-s", "-C", str(FIRMWARE), f"BUILD={BUILD}"], capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return BUILD / "pulse.elf", BUILD / "simavr-pulse"


class Harness:
    def __init__(self, proc: asyncio.subprocess.Process, pty: str) -> None:
        self.proc = proc
        self.pty = pty

    async def line(self, starts: str) -> str:
        """The harness's next stdout line that starts with ``starts``."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(WITHIN * 3):
            while True:
                raw = await self.proc.stdout.readline()
                assert raw, "the harness exited"
                text = raw.decode().strip()
                if text.startswith(starts):
                    return text


@asynccontextmanager
async def harness(firmware: tuple[Path, Path], schedule: str) -> AsyncIterator[Harness]:
    elf, binary = firmware
    proc = await asyncio.create_subprocess_exec(
        str(binary), str(elf), schedule, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), WITHIN)).decode().split()
        assert first[:1] == ["pty"], first
        yield Harness(proc, first[1])
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), WITHIN)
        assert proc.returncode == 0, err.decode()


async def test_driver_counts_the_firmware_pulses_not_the_bounces(
    firmware: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="retrotread.drivers.pulse.driver")
    # 12 presses 150 ms apart from 1 s on, each bouncing 3 times on closing and 3 on opening.
    async with harness(firmware, "1000:150:12b3") as board:
        async with open_driver(f"pulse://{board.pty}?m_per_pulse={M_PER_PULSE}") as driver:
            assert await board.line("board started")
            done = (await board.line("presses")).split()
            presses, edges = int(done[1]), int(done[3])
            assert presses == 12 and edges == 12 * 7  # the bounces really reached the pin
            last: BeltSample | None = None
            moving = False
            async with asyncio.timeout(WITHIN):
                async for item in driver.samples():
                    if isinstance(item, BeltSample):
                        last = item
                        moving = moving or item.speed.mps > 0
                        if item.distance_m is not None and item.distance_m >= presses * M_PER_PULSE:
                            break
            assert last is not None and moving
            assert last.distance_m == presses * M_PER_PULSE
            assert driver.bad_lines == 0 and driver.bad_samples == 0  # type: ignore[attr-defined]
    said = [r.getMessage() for r in caplog.records if "board says" in r.getMessage()]
    assert any("retrotread-pulse 1.0.0" in m for m in said), said


def test_a_deadmill_session_measures_the_firmware_pulses(firmware: tuple[Path, Path], tmp_path: Path) -> None:
    elf, binary = firmware
    # 10 presses 200 ms apart from 2 s after the port opens (the board starts then, like an Uno
    # reset by DTR), each bouncing twice each way; the set runs 8 s from the start.
    board = subprocess.Popen(
        [str(binary), str(elf), "2000:200:10b2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert board.stdout is not None
        pty = board.stdout.readline().split()[1]
        env = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
        env |= {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
        session = subprocess.run(
            [
                str(Path(sys.executable).with_name("retrotread")),
                "deadmill",
                "--driver",
                f"pulse://{pty}?m_per_pulse={M_PER_PULSE}",
                "--plan",
                "1x8s/1s,countdown=0s",
                "--plain",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=45,
            env=env,
            cwd=tmp_path,
        )
    finally:
        board.terminate()
        out, _ = board.communicate(timeout=WITHIN)
    assert session.returncode == 0, session.stdout + session.stderr
    assert "presses 10 edges 50" in out, out
    record = json.loads(session.stdout.strip().splitlines()[-1])
    assert record["outcome"] == "completed", record
    assert record["driver"].startswith("pulse://")
    assert record["sets"][0]["distance_m"] == pytest.approx(10 * M_PER_PULSE, abs=1e-9), record["sets"]
    assert "board says: retrotread-pulse 1.0.0" in session.stderr, session.stderr
