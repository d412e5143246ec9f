"""A simulated roller pulse-sensor board on a pseudo-terminal (docs/pulse.md), for ``pulse://``.

A manual belt (``sims.belt``, pushed by a walker following a push profile) turns a roller that
closes a reed switch every ``m_per_pulse`` metres of belt (0.25 m by default, as measured on one
machine). The board writes ``P <board_ms> <total_pulses>\\n`` on every pulse and at least
``line_hz`` times a second (5 by default, pulse.md's minimum), and a ``# retrotread-sim pulse board``
comment line when it starts. Lines are built with ``drivers.pulse.codec.encode_reading``.

Faults that make sense for a board (``fault=KIND@SECONDS``, or ``strike()`` now):

- ``unplug``: the cable is out for ``UNPLUG_S``; the board is powered on its own and keeps counting,
  so no pulse is lost (cumulative counts, pulse.md).
- ``stall``: the board stops writing lines while the belt keeps moving (a hung sketch).
- ``garbage``: a corrupt line follows every good one (noise, a wrong baud rate, a half line).
- ``reboot``: the link drops for ``REBOOT_OFFLINE_S``; the board comes back with both counters
  restarted from 0 and writes its comment line again.

``runaway``, ``key`` and ``ignore`` mean nothing to a sensor with no motor and no commands: they are
refused at construction.

This module must not read anything the host writes (the board ignores its input) and must not keep
time by summing sleeps: every line's ``board_ms`` comes from the monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

from retrotread.drivers.pulse.codec import encode_reading
from retrotread.drivers.units import Speed
from retrotread.sims.belt import Belt, PushSegment
from retrotread.sims.faults import Fault, FaultKind, Recovery
from retrotread.sims.link import cycle, suffix
from retrotread.sims.pty import PtyDevice, TraceSink

DEFAULT_PUSH = (PushSegment(0.0, Speed.from_mph(1.5)),)
COMMENT = b"# retrotread-sim pulse board"
_GARBAGE = (b"P 12 zz\n", b"\x00\xff\xfe noise\n", b"Q 1 2\n", b"P 1\n")
_MIN_WAIT_S = 0.0005


class PulseBoard(PtyDevice):
    """The simulated board. ``async with PulseBoard(link) as board:`` serves it at ``link``."""

    kind = "pulse board"
    fault_kinds = frozenset({FaultKind.UNPLUG, FaultKind.STALL, FaultKind.GARBAGE, FaultKind.REBOOT})

    def __init__(
        self,
        link: Path,
        *,
        push: Sequence[PushSegment] = DEFAULT_PUSH,
        faults: Sequence[Fault] = (),
        m_per_pulse: float = 0.25,
        line_hz: float = 5.0,
        trace: TraceSink | None = None,
    ) -> None:
        super().__init__(link, faults=faults, trace=trace, garbage=cycle(*(suffix(g) for g in _GARBAGE)))
        if not (m_per_pulse > 0 and line_hz >= 1):
            raise ValueError(f"m_per_pulse must be > 0 and line_hz >= 1, got {m_per_pulse}, {line_hz}")
        self.push = tuple(push)
        self.m_per_pulse = m_per_pulse
        self.line_hz = line_hz
        self.belt = Belt(motorized=False, t=time.monotonic(), push=self.push)
        self.pulses = 0
        """Pulses since the board (re)started: what it writes."""
        self.lines_written = 0
        self._boot_t = 0.0
        self._base_m = 0.0
        self._runner: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self._runner is not None:
            return
        now = time.monotonic()
        self.belt = Belt(motorized=False, t=now, push=self.push, push_started_at=now)
        await super().open()
        self._boot(now)
        self._runner = asyncio.create_task(self._run(), name=f"pulse board {self.link}")

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        await super().close()

    def push_now(self, mph: float | None) -> None:
        """The walker pushes at ``mph`` from now on (``None``: back to the profile)."""
        self.belt.advance_to(time.monotonic())
        self.belt.push_now(None if mph is None else Speed.from_mph(mph))

    @property
    def distance_m(self) -> float:
        """Belt travelled since the simulation started (not since the last reboot)."""
        self.belt.advance_to(time.monotonic())
        return self.belt.distance_m

    # -- faults --------------------------------------------------------------------------------

    def _on_fault(self, kind: FaultKind, now: float) -> None:
        self.belt.advance_to(now)
        if kind is FaultKind.REBOOT:
            self.unplug("board rebooting")
        # stall, garbage and unplug are the link's (sims.link): the board keeps counting behind it.

    def _on_recovery(self, step: Recovery, now: float) -> None:
        if step is Recovery.BACK:
            self.replug("board back after reboot")
            self._boot(now)

    # -- the board -----------------------------------------------------------------------------

    def _boot(self, now: float) -> None:
        self.belt.advance_to(now)
        self._boot_t = now
        self._base_m = self.belt.distance_m
        self.pulses = 0
        self.wire.write([COMMENT + b", m_per_pulse=%g\n" % self.m_per_pulse])

    async def _run(self) -> None:
        period = 1.0 / self.line_hz
        next_line = time.monotonic()
        while True:
            now = time.monotonic()
            belt = self.belt
            belt.advance_to(now)
            total = int((belt.distance_m - self._base_m) / self.m_per_pulse + 1e-9)
            if total > self.pulses or now >= next_line:
                self.pulses = max(self.pulses, total)
                self._line(now)
                next_line = now + period
            wait = next_line - now
            if belt.speed_mps > 0:
                # Wake at the next pulse too: pulse.md wants a line on every pulse.
                to_pulse = ((self.pulses + 1) * self.m_per_pulse + self._base_m - belt.distance_m) / belt.speed_mps
                wait = min(wait, to_pulse)
            await asyncio.sleep(max(wait, _MIN_WAIT_S))

    def _line(self, now: float) -> None:
        if self.wire.write([encode_reading(int((now - self._boot_t) * 1000), self.pulses)]):
            self.lines_written += 1


__all__ = ["COMMENT", "DEFAULT_PUSH", "PulseBoard"]
