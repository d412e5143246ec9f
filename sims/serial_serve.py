"""Serving the simulated serial devices: ``retrotread sim-device`` and the async API tests use.

``serve_csafe(link, faults=...)`` and ``serve_pulse(link, faults=..., push=...)`` are async context
managers that put a device on a pseudo-terminal linked at ``link`` and take it away on exit::

    async with serve_csafe(tmp_path / "ttyTREAD", faults="unplug@5") as console:
        async with open_driver(f"csafe://{console.link}") as driver: ...

``run_device(kind, link, fault=..., push=...)`` runs one until SIGINT or SIGTERM, printing one line
that says where it is. While it runs, SIGUSR1 strikes the next scheduled fault at once (for scripts
and tests that need a fault at a moment of their choosing: give it e.g. ``unplug@9999``). If the
environment variable ``RETROTREAD_SIM_TRACE`` names a file, every frame the device receives and
every fault, unplug and replug is appended to it as one JSON line.

This module must not import anything above ``drivers`` and ``sims``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

from retrotread.drivers.csafe.codec import Unit
from retrotread.drivers.errors import ConfigError
from retrotread.sims.belt import Lie, PushSegment, parse_push
from retrotread.sims.csafe_device import CsafeDevice
from retrotread.sims.faults import Fault, parse_faults
from retrotread.sims.pty import PtyDevice, TraceSink
from retrotread.sims.pulse_board import DEFAULT_PUSH, PulseBoard

TRACE_ENV = "RETROTREAD_SIM_TRACE"


def _faults(faults: str | Sequence[Fault]) -> tuple[Fault, ...]:
    return parse_faults(faults) if isinstance(faults, str) else tuple(faults)


def _push(push: str | Sequence[PushSegment] | None) -> tuple[PushSegment, ...]:
    if push is None:
        return DEFAULT_PUSH
    if isinstance(push, str):
        try:
            return parse_push(push) or DEFAULT_PUSH
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return tuple(push)


@asynccontextmanager
async def serve_csafe(
    link: Path,
    *,
    faults: str | Sequence[Fault] = (),
    speed_unit: Unit = Unit.MPH_HUNDREDTHS,
    trace: TraceSink | None = None,
    strict: bool = False,
    lie: Lie = Lie.NONE,
) -> AsyncIterator[CsafeDevice]:
    """A simulated CSAFE console at ``link`` for the duration of the block (``strict``: it takes
    SetSpeed only in InUse, reached through the state walk; ``lie``: its unit is not its claim)."""
    device = CsafeDevice(Path(link), faults=_faults(faults), speed_unit=speed_unit, trace=trace, strict=strict, lie=lie)
    async with device:
        yield device


@asynccontextmanager
async def serve_pulse(
    link: Path,
    *,
    faults: str | Sequence[Fault] = (),
    push: str | Sequence[PushSegment] | None = None,
    m_per_pulse: float = 0.25,
    line_hz: float = 5.0,
    trace: TraceSink | None = None,
) -> AsyncIterator[PulseBoard]:
    """A simulated pulse board at ``link`` for the duration of the block."""
    board = PulseBoard(
        Path(link), faults=_faults(faults), push=_push(push), m_per_pulse=m_per_pulse, line_hz=line_hz, trace=trace
    )
    async with board:
        yield board


def run_device(kind: str, link: Path, *, fault: str, push: str | None) -> int:
    """``retrotread sim-device KIND --link PATH``: serve until SIGINT/SIGTERM; the exit code."""
    faults = parse_faults(fault)
    if kind not in ("csafe", "pulse"):
        raise ConfigError(f"sim-device {kind!r}: allowed csafe or pulse")
    if kind == "csafe" and push:
        raise ConfigError("--push is the walker's profile on a pulse board; a CSAFE console drives its own belt")
    return asyncio.run(_serve_until_signal(kind, Path(link), faults, push))


async def _serve_until_signal(kind: str, link: Path, faults: tuple[Fault, ...], push: str | None) -> int:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    trace_file: IO[str] | None = None
    trace: TraceSink | None = None
    if path := os.environ.get(TRACE_ENV):
        # Opened once, line-buffered: a debugging and test aid, not a hot path.
        trace_file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115, ASYNC230

        def trace(record: dict[str, Any]) -> None:
            assert trace_file is not None
            trace_file.write(json.dumps(record) + "\n")

    device: PtyDevice
    if kind == "csafe":
        device = CsafeDevice(link, faults=faults, trace=trace)
        what = "CSAFE treadmill console (9600 8N1)"
    else:
        device = PulseBoard(link, faults=faults, push=_push(push), trace=trace)
        what = "pulse board (115200 8N1, 0.25 m per pulse)"
    try:
        async with device:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, done.set)
            loop.add_signal_handler(signal.SIGUSR1, device.strike_next)
            spec = ",".join(f"{f.kind.value}@{f.at_s:g}" for f in faults) or "none"
            print(
                f"retrotread sim-device: simulated {what} on {device.host_name}, linked at {link}; "
                f"faults: {spec}; pid {os.getpid()} (SIGUSR1 = next fault now); Ctrl-C to stop",
                flush=True,
            )
            await done.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
        if trace_file is not None:
            trace_file.close()
    return 0


__all__ = ["TRACE_ENV", "run_device", "serve_csafe", "serve_pulse"]
