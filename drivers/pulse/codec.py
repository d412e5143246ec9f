"""The roller pulse sensor's line protocol as values, and belt speed from its counters.

The sans-IO half of the ``pulse://`` driver and of the pulse simulator (``docs/pulse.md``):

- ``LineDecoder`` cuts the serial stream into lines (``\\n``, ``\\r\\n`` accepted), keeps a partial
  line for the next ``feed``, and drops lines that run past ``MAX_LINE_BYTES`` without a newline;
- ``parse_line`` reads one line as a ``PulseReading`` (``P <board_ms> <total_pulses>``), a
  ``Comment`` (``#``) or a ``BadLine`` with its reason: protocol errors are values, never fatal;
- ``PulseStream`` is the two together, with the counts the driver logs;
- ``PulseSpeedometer`` turns readings into speed and distance on the board's own clock;
- ``encode_reading`` writes a line, for the simulator.

This module must not do I/O, read a clock or import asyncio, pyserial or anything of ours beyond
``drivers.errors``, ``drivers.units`` and ``drivers.plausible`` (what no belt can do: the same
bound every driver applies). Time is the board's millisecond counter, and optionally the host's
arrival time of each line, passed in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final, TypeAlias

from retrotread.drivers.errors import ConfigError
from retrotread.drivers.plausible import LATE_S, max_distance_m
from retrotread.drivers.units import Speed

__all__ = [
    "CLOCK_TOLERANCE",
    "COUNTER_MODULUS",
    "MAX_LINE_BYTES",
    "BadLine",
    "Comment",
    "LineDecoder",
    "PulseLine",
    "PulseMeasurement",
    "PulseReading",
    "PulseSpeedometer",
    "PulseStream",
    "encode_reading",
    "parse_line",
]

COUNTER_MODULUS: Final = 2**32
"""Both board counters wrap here (pulse.md)."""

MAX_LINE_BYTES: Final = 256
"""The longest line we wait for. A reading is at most 24 bytes (``P`` and two 10-digit counters);
anything that runs on this long without a newline is noise or a wrong baud rate."""

CLOCK_TOLERANCE: Final = 0.02
"""How much faster than the host's a board's clock may run: a ceramic resonator is off by 0.5 % at
most, so 2 % never refuses a real board, and a board clock that runs 50 times fast is still refused."""

_MAX_DIGITS = len(str(COUNTER_MODULUS - 1))


# --- lines ------------------------------------------------------------------------------------


class LineDecoder:
    """Cuts a byte stream into lines. ``feed()`` returns the lines the new bytes completed.

    Lines come back without their ``\\n`` (and without a ``\\r`` before it). A line longer than
    ``MAX_LINE_BYTES`` is dropped whole, counted in ``overlong_lines``, and the stream resyncs at
    the next newline; it never raises.
    """

    def __init__(self) -> None:
        self._partial = bytearray()
        self._discarding = False
        self.overlong_lines = 0

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            piece = data[start:newline]
            start = newline + 1
            if self._discarding:
                # The tail of a line already counted as overlong.
                self._discarding = False
                continue
            if self._partial:
                self._partial += piece
                line = bytes(self._partial)
                self._partial.clear()
            else:
                line = bytes(piece)
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_LINE_BYTES:
                self.overlong_lines += 1
                continue
            lines.append(line)
        if not self._discarding:
            self._partial += data[start:]
            if len(self._partial) > MAX_LINE_BYTES + 1:  # + 1: room for a "\r" before "\n"
                self.overlong_lines += 1
                self._partial.clear()
                self._discarding = True
        return lines

    @property
    def pending(self) -> int:
        """Bytes of a line still waiting for its newline."""
        return len(self._partial)


@dataclass(frozen=True, slots=True)
class PulseReading:
    """``P <board_ms> <total_pulses>``: both counters as the board sent them (mod 2**32)."""

    board_ms: int
    total_pulses: int


@dataclass(frozen=True, slots=True)
class Comment:
    """A ``#`` line (firmware version, calibration): logged, never interpreted."""

    text: str


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is neither a reading nor a comment (pulse.md: counted, never fatal)."""

    line: bytes
    reason: str


PulseLine: TypeAlias = PulseReading | Comment | BadLine


def _counter(token: bytes, name: str, line: bytes) -> int | BadLine:
    # bytes.isdigit() is ASCII-only, so "+5", "1_000", "٣" and " 5" are refused here, which int()
    # alone would accept.
    if not token.isdigit():
        return BadLine(line, f"{name} is not a decimal number: {token!r}")
    if len(token) > _MAX_DIGITS or int(token) >= COUNTER_MODULUS:
        return BadLine(line, f"{name} {token.decode()} is past the 32-bit counter")
    return int(token)


def parse_line(line: bytes) -> PulseLine:
    """One line (without its newline) as a reading, a comment or a bad line; never raises."""
    if line.startswith(b"#"):
        return Comment(line[1:].strip().decode("utf-8", errors="replace"))
    fields = line.split()
    if not fields:
        return BadLine(line, "empty line")
    if fields[0] != b"P":
        return BadLine(line, "not a reading (P <board_ms> <total_pulses>) nor a # comment")
    if len(fields) != 3:
        return BadLine(line, f"a reading has 2 numbers after P, this line has {len(fields) - 1}")
    board_ms = _counter(fields[1], "board_ms", line)
    if isinstance(board_ms, BadLine):
        return board_ms
    total_pulses = _counter(fields[2], "total_pulses", line)
    if isinstance(total_pulses, BadLine):
        return total_pulses
    return PulseReading(board_ms, total_pulses)


def encode_reading(board_ms: int, total_pulses: int) -> bytes:
    """The line a board writes, counters wrapped mod 2**32 like the board's (for the simulator)."""
    return b"P %d %d\n" % (board_ms % COUNTER_MODULUS, total_pulses % COUNTER_MODULUS)


class PulseStream:
    """``LineDecoder`` and ``parse_line`` together, with the counts the driver logs."""

    def __init__(self) -> None:
        self._lines = LineDecoder()
        self.bad_lines = 0
        self.comments = 0
        self.readings = 0

    @property
    def overlong_lines(self) -> int:
        return self._lines.overlong_lines

    def feed(self, data: bytes) -> list[PulseLine]:
        parsed = [parse_line(line) for line in self._lines.feed(data)]
        for item in parsed:
            if isinstance(item, PulseReading):
                self.readings += 1
            elif isinstance(item, Comment):
                self.comments += 1
            else:
                self.bad_lines += 1
        return parsed


# --- speed ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PulseMeasurement:
    """What the belt did, as of one reading.

    ``pulses`` and ``distance_m`` count from the first reading this speedometer saw and carry on
    across board resets: they never go backwards. ``reset`` is True on the reading that started a
    new base (the board restarted). ``implausible`` is True on a reading no belt can produce (its
    counters jumped ahead of what the belt could do since the last one): nothing is credited for
    it, and the driver refuses it as a bad sample rather than emit it.
    """

    speed: Speed
    distance_m: float
    pulses: int
    reset: bool = False
    implausible: bool = False
    span_s: float | None = None
    """Board time since the reading before (None: a first reading or a new base)."""


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


class PulseSpeedometer:
    """Belt speed and distance from ``PulseReading`` values, on the board's clock; pure.

    Speed is Δpulses × ``m_per_pulse`` / Δtime over a sliding window of ``window_s`` (pulse.md).
    Δtime runs between pulse *edges*, not between readings: the board writes a line on every
    pulse, so the reading where the count grew carries that pulse's time. At a pulse every 900 ms
    (1 km/h on 0.25 m per pulse) a 1 s window of readings would hold 1 or 2 pulses by turns and
    read 0.9 or 1.8 km/h; between edges it reads 1.00 km/h. The window reaches back to the last
    edge at least ``window_s`` before the newest one, so a slow belt still has two edges.

    Between pulses the speed can only be what the last edges said or less: no pulse for ``gap``
    seconds means the belt moved less than ``m_per_pulse`` in that time, so the reading is capped
    at ``m_per_pulse / gap`` and decays smoothly as a belt stops. ``zero_after_s`` of board time
    without a pulse reads 0 (pulse.md), and the next pulse starts a fresh window.

    Counters wrap at 2**32 and are unwrapped with modular differences. A reading whose board_ms or
    total_pulses went back (a modular step of 2**31 or more) starts a new base: speed 0 on that
    reading, ``reset`` True, no distance credited for the jump.

    A reading that carries several pulses at once (lines were lost, or the belt was pushed off from
    a standstill between two lines) has no earlier edge in the window to time them from. Its
    pulses did not happen before the previous reading, so the belt covered at least
    ``n - 1`` pulses in the board time since it: that is the speed it reads (an edge stands at the
    previous reading for it), never 0 while ``n`` pulses are credited to the distance. One pulse
    alone is no speed (the belt may only have been nudged) and still reads 0.

    A reading that jumped *ahead* of what a belt can do is ``implausible`` (issue 10: one bogus
    line put 250,000 km in a set): more pulses than ``plausible.MAX_SPEED`` covers in its board
    time (plus one pulse, the count's own step), or more board time than the host can have seen
    pass (only when the caller passes arrival times). A line is written before it arrives and at
    most ``plausible.LATE_S`` before (lines that arrive bunched), and after the line before it
    plus the board time between them: so the earliest a line can have been written carries over
    from line to line (``CLOCK_TOLERANCE`` allows for a board clock that runs a little fast), and
    across board restarts, which come after the line before them. Checked line by line alone, a
    board clock that claims a second every 20 ms passed every check and bunches of "late" lines
    were credited again and again. Nothing is credited for an implausible reading and the
    speedometer keeps its state, so one bogus line costs one reading; if the next reading agrees
    with the bogus one instead (the counters really jumped, and stay), that one starts a new base.
    """

    def __init__(self, m_per_pulse: float, window_s: float = 1.0, zero_after_s: float = 2.0) -> None:
        self.m_per_pulse = _positive("m_per_pulse", m_per_pulse)
        self._window_ms = _positive("window_s", window_s) * 1000
        self._zero_after_ms = _positive("zero_after_s", zero_after_s) * 1000
        self._last: PulseReading | None = None
        self._written: float | None = None  # the earliest host time ``_last`` can have been written
        self._suspect: tuple[PulseReading, float | None] | None = None  # the last implausible one
        self._t_ms = 0  # board time since the base, unwrapped
        self._base_pulses = 0  # pulses since the base, unwrapped
        self._pulses = 0  # pulses since the first reading, across bases
        self._edges: deque[tuple[int, int]] = deque()  # (t_ms, pulses since base) at each edge
        self._edge_mps = 0.0
        self.resets = 0

    @property
    def distance_m(self) -> float:
        return self._pulses * self.m_per_pulse

    def update(self, reading: PulseReading, t_s: float | None = None) -> PulseMeasurement:
        """The belt as of ``reading``; ``t_s`` is the host's monotonic time it arrived, if known."""
        last = self._last
        if last is None:
            self._accept(reading, t_s, 0)
            return self._measure(0.0, reset=False)
        d_ms = (reading.board_ms - last.board_ms) % COUNTER_MODULUS
        d_pulses = (reading.total_pulses - last.total_pulses) % COUNTER_MODULUS
        half = COUNTER_MODULUS // 2
        if d_ms >= half or d_pulses >= half:
            self._accept(reading, t_s, 0)  # a restart: no board time relates the two lines
            return self._new_base()
        if self._impossible(d_ms, d_pulses, self._written, t_s):
            suspect = self._suspect
            if suspect is not None and self._agrees(suspect, reading, t_s):
                self._accept(reading, t_s, 0)
                return self._new_base()
            self._suspect = (reading, t_s)
            return PulseMeasurement(Speed(0.0), self.distance_m, self._pulses, implausible=True)
        self._accept(reading, t_s, d_ms)

        self._t_ms += d_ms
        if d_pulses:
            self._base_pulses += d_pulses
            self._pulses += d_pulses
            self._edge(self._t_ms, self._base_pulses, d_ms, d_pulses)

        span_s = d_ms / 1000
        if not self._edges:
            return self._measure(0.0, reset=False, span_s=span_s)
        gap_ms = self._t_ms - self._edges[-1][0]
        if gap_ms >= self._zero_after_ms:
            return self._measure(0.0, reset=False, span_s=span_s)
        mps = self._edge_mps
        if gap_ms > 0:
            mps = min(mps, self.m_per_pulse * 1000 / gap_ms)
        return self._measure(mps, reset=False, span_s=span_s)

    def _impossible(self, d_ms: int, d_pulses: int, written: float | None, t_s: float | None) -> bool:
        """``written``: the earliest host time the line before can have been written, if known."""
        if d_pulses * self.m_per_pulse > max_distance_m(d_ms / 1000, self.m_per_pulse):
            return True
        return written is not None and t_s is not None and written + d_ms / 1000 * (1 - CLOCK_TOLERANCE) > t_s

    def _agrees(self, suspect: tuple[PulseReading, float | None], reading: PulseReading, t_s: float | None) -> bool:
        before, before_t = suspect
        d_ms = (reading.board_ms - before.board_ms) % COUNTER_MODULUS
        d_pulses = (reading.total_pulses - before.total_pulses) % COUNTER_MODULUS
        half = COUNTER_MODULUS // 2
        written = None if before_t is None else before_t - LATE_S
        return d_ms < half and d_pulses < half and not self._impossible(d_ms, d_pulses, written, t_s)

    def _accept(self, reading: PulseReading, t_s: float | None, d_ms: int) -> None:
        """``reading`` is the last one now, ``d_ms`` of board time after the one before (0: a new base)."""
        self._last, self._suspect = reading, None
        if t_s is None:
            self._written = None
            return
        earliest = t_s - LATE_S
        if self._written is not None:
            earliest = max(earliest, self._written + d_ms / 1000 * (1 - CLOCK_TOLERANCE))
        self._written = earliest

    def _edge(self, t_ms: int, pulses: int, d_ms: int, d_pulses: int) -> None:
        """``d_pulses`` pulses came in the ``d_ms`` since the last reading, the last of them at ``t_ms``."""
        edges = self._edges
        if edges and t_ms - edges[-1][0] >= self._zero_after_ms:
            # The belt stood still in between: an edge from before the stop would average the
            # standstill into the new speed.
            edges.clear()
            self._edge_mps = 0.0
        if not edges and d_pulses > 1 and d_ms > 0:
            # No edge to time these pulses from: the first of them came after the last reading,
            # so the belt covered at least d_pulses - 1 of them in d_ms (see the class docstring).
            edges.append((t_ms - d_ms, pulses - d_pulses + 1))
        edges.append((t_ms, pulses))
        while len(edges) > 2 and edges[1][0] <= t_ms - self._window_ms:
            edges.popleft()
        first_t, first_pulses = edges[0]
        if t_ms > first_t:
            self._edge_mps = (pulses - first_pulses) * self.m_per_pulse * 1000 / (t_ms - first_t)

    def _new_base(self) -> PulseMeasurement:
        self.resets += 1
        self._t_ms = 0
        self._base_pulses = 0
        self._edges.clear()
        self._edge_mps = 0.0
        return self._measure(0.0, reset=True)

    def _measure(self, mps: float, *, reset: bool, span_s: float | None = None) -> PulseMeasurement:
        return PulseMeasurement(Speed(mps), self.distance_m, self._pulses, reset, span_s=span_s)
