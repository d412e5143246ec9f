"""``retrotread calibrate``: m_per_pulse from pulses counted while the belt is pushed by hand.

A real process (``python -m retrotread.api.cli.calibrate``) reads the simulated pulse board
(sims/pulse_board.py) on a real pseudo-terminal; its prompts are answered through a pipe.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from contract import WITHIN

from retrotread.drivers.units import Speed
from retrotread.sims.belt import PushSegment
from retrotread.sims.pulse_board import PulseBoard

# The walker pushes for 1.5 s and lets go; the belt coasts to a stop, the count stays put.
PUSH = (PushSegment(0.0, Speed.from_mph(1.5)), PushSegment(1.5, Speed.zero()))


async def _line(stream: asyncio.StreamReader) -> str:
    raw = await asyncio.wait_for(stream.readline(), WITHIN)
    assert raw, "calibrate exited"
    return raw.decode().rstrip("\n")


async def _calibrate(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "retrotread.api.cli.calibrate",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_calibrate_counts_the_pulses_and_asks_the_belt_length(tmp_path: Path) -> None:
    link = tmp_path / "ttyPULSE"
    async with PulseBoard(link, push=PUSH, m_per_pulse=0.25) as board:
        proc = await _calibrate("--driver", f"pulse://{link}?window_s=1", "--turns", "2")
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        assert "Push the belt 2 full turns" in await _line(proc.stdout)
        # Enter once the belt has stopped and the command has counted every pulse the board made.
        counted = 0

        async def read_counts() -> None:
            nonlocal counted
            while True:
                line = await _line(proc.stdout)
                assert line.startswith("pulses: "), line
                counted = int(line.split()[1])

        reader = asyncio.create_task(read_counts())
        async with asyncio.timeout(WITHIN):
            while not (board.belt.speed_mps == 0 and counted == board.pulses > 0):
                await asyncio.wait({reader}, timeout=0.05)  # a condition polled within a bound
                assert not reader.done(), reader
        reader.cancel()
        pulses = board.pulses
        assert pulses > 0
        proc.stdin.write(b"\n")
        proc.stdin.write(b"two metres\n")  # a typo: said, and asked again; the count is kept
        proc.stdin.write(b"3.0\n")
        await proc.stdin.drain()
        out, err = await asyncio.wait_for(proc.communicate(), WITHIN)
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert "'two metres' is not a length in metres" in text
    expected = float(f"{3.0 * 2 / pulses:.5g}")
    assert f"{pulses} pulses in 2 turns of a 3 m belt: m_per_pulse = {expected:g}" in text
    assert f"driver URL: pulse://{link}?window_s=1&m_per_pulse={expected:g}" in text
    assert f'config: [daemon] driver = "pulse://{link}?window_s=1&m_per_pulse={expected:g}"' in text


async def test_calibrate_refuses_what_it_cannot_count(tmp_path: Path) -> None:
    proc = await _calibrate("--driver", "sim://manual")
    _, err = await asyncio.wait_for(proc.communicate(b""), WITHIN)
    assert proc.returncode == 1 and "give a pulse:// or gpio:// driver URL" in err.decode()
    proc = await _calibrate("--driver", "gpio://17", "--belt-m", "-1")
    _, err = await asyncio.wait_for(proc.communicate(b""), WITHIN)
    assert proc.returncode == 1 and "a belt length must be above 0" in err.decode()
    assert "Traceback" not in err.decode()


async def test_calibrate_with_no_pulse_says_so(tmp_path: Path) -> None:
    link = tmp_path / "ttyPULSE"
    async with PulseBoard(link, push=(PushSegment(0.0, Speed.zero()),)):
        proc = await _calibrate("--driver", f"pulse://{link}", "--belt-m", "2.8")
        assert proc.stdout is not None
        assert "Push the belt 1 full turn" in await _line(proc.stdout)
        out, err = await asyncio.wait_for(proc.communicate(b"\n"), WITHIN)
    assert proc.returncode == 1, out
    assert "no pulse counted" in err.decode() and "Traceback" not in err.decode()
