"""The pulse line protocol (docs/pulse.md) and the speedometer on the board's clock: lines split
anywhere, bad lines counted and survived, counters that wrap, a board that resets, a belt that
stops, and properties over random bytes and random counters."""

from __future__ import annotations

import logging
import math
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrotread.drivers.errors import ConfigError
from retrotread.drivers.pulse.codec import (
    COUNTER_MODULUS,
    MAX_LINE_BYTES,
    BadLine,
    Comment,
    LineDecoder,
    PulseMeasurement,
    PulseReading,
    PulseSpeedometer,
    PulseStream,
    encode_reading,
    parse_line,
)
from retrotread.drivers.pulse.meter import PulseMeter
from retrotread.drivers.types import BeltSample, DeviceEvent, DeviceEventKind, Update

PROPERTY = settings(max_examples=300, deadline=None)

# pulse.md, measured on one machine: about 250 mm of belt per pulse, 900 ms between pulses at
# 1 km/h, 40.8 ms at 22 km/h.
M_PER_PULSE = 0.25


def board(
    pulse_every_ms: float,
    until_ms: int,
    *,
    start_ms: int = 0,
    start_pulses: int = 0,
    line_every_ms: int = 200,
) -> list[PulseReading]:
    """What a board writes: a line every ``line_every_ms`` and one on every pulse, counters
    wrapped at 2**32 like the board's."""
    pulse_times = [round(k * pulse_every_ms) for k in range(1, int(until_ms / pulse_every_ms) + 1)]
    times = sorted(set(range(0, until_ms + 1, line_every_ms)) | set(pulse_times))
    readings = []
    done = 0
    for t in times:
        while done < len(pulse_times) and pulse_times[done] <= t:
            done += 1
        readings.append(PulseReading((start_ms + t) % COUNTER_MODULUS, (start_pulses + done) % COUNTER_MODULUS))
    return readings


def run(speedometer: PulseSpeedometer, readings: list[PulseReading]) -> list[PulseMeasurement]:
    return [speedometer.update(reading) for reading in readings]


# --- lines ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        (b"P 1234 56", PulseReading(1234, 56)),
        (b"P 0 0", PulseReading(0, 0)),
        (b"P 4294967295 4294967295", PulseReading(2**32 - 1, 2**32 - 1)),
        (b"P  12\t34 ", PulseReading(12, 34)),
        (b"# retrotread-pulse 1.2, debounce 5 ms", Comment("retrotread-pulse 1.2, debounce 5 ms")),
        (b"#", Comment("")),
    ],
)
def test_good_lines_parse(line: bytes, parsed: object) -> None:
    assert parse_line(line) == parsed


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"p 1 2", "not a reading"),
        (b"S 1 2", "not a reading"),
        (b"P 1", "2 numbers"),
        (b"P 1 2 3", "2 numbers"),
        (b"P -1 2", "board_ms is not a decimal"),
        (b"P 1 +2", "total_pulses is not a decimal"),
        (b"P 1_000 2", "not a decimal"),
        (b"P 1 0x10", "not a decimal"),
        (b"P 4294967296 1", "past the 32-bit counter"),
        (b"P 1 99999999999999999999", "past the 32-bit counter"),
        (b"\xff\xfe P 1 2", "not a reading"),
    ],
)
def test_bad_lines_are_values_with_a_reason(line: bytes, reason: str) -> None:
    parsed = parse_line(line)
    assert isinstance(parsed, BadLine)
    assert reason in parsed.reason
    assert parsed.line == line


def test_lines_split_one_byte_at_a_time_come_out_whole() -> None:
    stream = b"# fw 1.0\r\nP 100 1\nP 200 2\r\n"
    decoder = LineDecoder()
    lines = []
    for i in range(len(stream)):
        lines.extend(decoder.feed(stream[i : i + 1]))
    assert lines == [b"# fw 1.0", b"P 100 1", b"P 200 2"]
    assert decoder.pending == 0


def test_partial_line_waits_for_its_newline() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b"P 100 1\nP 2") == [b"P 100 1"]
    assert decoder.pending == 3
    assert decoder.feed(b"00 2\n") == [b"P 200 2"]


def test_overlong_line_is_dropped_counted_and_the_next_line_read() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b"x" * (MAX_LINE_BYTES + 10)) == []
    assert decoder.overlong_lines == 1
    assert decoder.pending == 0
    # The rest of the overlong line is dropped too, up to its newline.
    assert decoder.feed(b"yyyy\nP 1 2\n") == [b"P 1 2"]
    assert decoder.feed(b"z" * (MAX_LINE_BYTES + 1) + b"\nP 3 4\n") == [b"P 3 4"]
    assert decoder.overlong_lines == 2


def test_line_of_exactly_the_limit_is_kept() -> None:
    decoder = LineDecoder()
    line = b"#" + b"c" * (MAX_LINE_BYTES - 1)
    assert decoder.feed(line + b"\r") == []
    assert decoder.feed(b"\n") == [line]
    assert decoder.overlong_lines == 0


def test_bad_lines_are_counted_not_fatal() -> None:
    stream = PulseStream()
    parsed = stream.feed(b"P 100 1\ngarbage\n# fw 2\nP 1\nP 200 2\n")
    readings = [item for item in parsed if isinstance(item, PulseReading)]
    assert readings == [PulseReading(100, 1), PulseReading(200, 2)]
    assert (stream.readings, stream.comments, stream.bad_lines) == (2, 1, 2)
    assert stream.feed(b"P 300 3\n") == [PulseReading(300, 3)]


def test_encode_reading_writes_a_line_that_parses_back() -> None:
    assert encode_reading(1234, 56) == b"P 1234 56\n"
    assert parse_line(encode_reading(1234, 56)[:-1]) == PulseReading(1234, 56)


def test_encode_reading_wraps_like_the_board() -> None:
    assert encode_reading(2**32 + 5, 2**32) == b"P 5 0\n"
    assert encode_reading(-1, 0) == b"P 4294967295 0\n"


# --- speed -------------------------------------------------------------------------------------


def test_pulse_every_900_ms_reads_1_kmh() -> None:
    results = run(PulseSpeedometer(M_PER_PULSE), board(900, 10_000))
    # From the second pulse on, every reading says 1 km/h: edges, not readings, set the time.
    settled = results[10:]
    assert all(r.speed.kmh == pytest.approx(1.0) for r in settled)
    assert results[-1].pulses == 11
    assert results[-1].distance_m == pytest.approx(11 * M_PER_PULSE)


def test_pulse_every_40_8_ms_reads_22_kmh() -> None:
    results = run(PulseSpeedometer(M_PER_PULSE), board(40.8, 5_000, line_every_ms=200))
    assert results[-1].speed.kmh == pytest.approx(0.25 / 0.0408 * 3.6, rel=0.01)


def test_first_reading_is_the_base_and_reads_nothing() -> None:
    speedometer = PulseSpeedometer(M_PER_PULSE)
    first = speedometer.update(PulseReading(500_000, 12_345))
    assert first == PulseMeasurement(speed=first.speed, distance_m=0.0, pulses=0, reset=False)
    assert first.speed.mps == 0


def test_board_ms_wrap_is_not_a_reset() -> None:
    readings = board(900, 6_000, start_ms=COUNTER_MODULUS - 2_000, start_pulses=40)
    assert any(r.board_ms < 5_000 for r in readings)  # the counter did wrap
    results = run(PulseSpeedometer(M_PER_PULSE), readings)
    assert not any(r.reset for r in results)
    assert results[-1].speed.kmh == pytest.approx(1.0)
    assert results[-1].pulses == 6


def test_pulse_counter_wrap_is_not_a_reset() -> None:
    readings = board(900, 6_000, start_ms=1_000, start_pulses=COUNTER_MODULUS - 3)
    assert readings[-1].total_pulses < 10  # the counter did wrap
    results = run(PulseSpeedometer(M_PER_PULSE), readings)
    assert not any(r.reset for r in results)
    assert results[-1].speed.kmh == pytest.approx(1.0)
    assert results[-1].pulses == 6


def test_board_reset_starts_a_new_base_and_keeps_the_distance() -> None:
    speedometer = PulseSpeedometer(M_PER_PULSE)
    before = run(speedometer, board(900, 5_000, start_ms=80_000, start_pulses=500))
    # The board restarts: both counters start again from zero.
    after = run(speedometer, board(900, 5_000))
    assert after[0].reset
    assert after[0].speed.mps == 0
    assert after[0].distance_m == before[-1].distance_m
    assert not any(r.reset for r in after[1:])
    assert after[-1].distance_m == pytest.approx(before[-1].distance_m + 5 * M_PER_PULSE)
    assert after[-1].speed.kmh == pytest.approx(1.0)
    assert speedometer.resets == 1


def test_pulses_going_back_alone_is_a_reset() -> None:
    speedometer = PulseSpeedometer(M_PER_PULSE)
    speedometer.update(PulseReading(1_000, 100))
    result = speedometer.update(PulseReading(1_200, 90))
    assert result.reset
    assert result.distance_m == 0.0


def test_pulse_jump_no_belt_explains_is_implausible_and_credits_nothing() -> None:
    # Line noise that still parses: a million pulses in 200 ms is not a belt.
    speedometer = PulseSpeedometer(M_PER_PULSE)
    speedometer.update(PulseReading(1_000, 100))
    result = speedometer.update(PulseReading(1_200, 1_000_100))
    assert result.implausible and not result.reset
    assert result.pulses == 0
    # One bogus line costs one reading: the next, in step with the one before it, counts.
    after = speedometer.update(PulseReading(1_400, 104))
    assert not after.implausible and not after.reset
    assert after.pulses == 4


def test_counters_that_jump_by_1e9_together_are_implausible_on_the_host_clock() -> None:
    # issue 10: both counters jumped by 1e9 in one line that arrived 0.2 s after the last one.
    # On the board's clock that is 0.25 m/s; on the host's, 1e9 ms cannot have passed.
    speedometer = PulseSpeedometer(M_PER_PULSE)
    speedometer.update(PulseReading(1_000, 100), 10.0)
    result = speedometer.update(PulseReading(1_000_001_200, 1_000_000_100), 10.2)
    assert result.implausible
    assert result.distance_m == 0.0


def test_counters_that_jump_and_stay_start_a_new_base() -> None:
    speedometer = PulseSpeedometer(M_PER_PULSE)
    speedometer.update(PulseReading(1_000, 100))
    assert speedometer.update(PulseReading(1_200, 1_000_100)).implausible
    again = speedometer.update(PulseReading(1_400, 1_000_104))
    assert again.reset and again.pulses == 0
    assert speedometer.update(PulseReading(1_600, 1_000_105)).pulses == 1


def test_speed_is_zero_after_2_s_of_board_time_without_a_pulse() -> None:
    speedometer = PulseSpeedometer(M_PER_PULSE)
    run(speedometer, board(900, 9_000))  # last pulse at 9000 ms
    assert speedometer.update(PulseReading(10_500, 10)).speed.mps == pytest.approx(M_PER_PULSE / 1.5)
    assert speedometer.update(PulseReading(10_999, 10)).speed.mps > 0
    stopped = speedometer.update(PulseReading(11_000, 10))
    assert stopped.speed.mps == 0
    assert stopped.distance_m == pytest.approx(10 * M_PER_PULSE)


def test_speed_between_pulses_decays_and_never_rises() -> None:
    speedometer = PulseSpeedometer(M_PER_PULSE)
    run(speedometer, board(450, 4_500))  # 2 km/h, last pulse at 4500 ms
    speeds = [speedometer.update(PulseReading(t, 10)).speed.mps for t in range(4_600, 6_600, 100)]
    assert all(later <= earlier for earlier, later in pairwise(speeds))
    assert speeds[0] == pytest.approx(M_PER_PULSE / 0.45)
    assert speeds[-1] == 0


def test_first_pulses_after_standing_still_do_not_average_the_standstill() -> None:
    speedometer = PulseSpeedometer(M_PER_PULSE)
    run(speedometer, board(900, 2_700))
    run(speedometer, [PulseReading(t, 3) for t in range(2_800, 20_000, 200)])
    resumed = run(speedometer, board(900, 3_600, start_ms=20_000, start_pulses=3))
    assert resumed[-1].speed.kmh == pytest.approx(1.0)


def test_window_is_a_constructor_argument() -> None:
    speedometer = PulseSpeedometer(M_PER_PULSE, window_s=3.0, zero_after_s=5.0)
    results = run(speedometer, board(900, 9_000))
    assert results[-1].speed.kmh == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [0, -0.25, math.nan, math.inf, "0.25", True])
def test_m_per_pulse_must_be_a_positive_number(bad: object) -> None:
    with pytest.raises(ConfigError, match="m_per_pulse") as caught:
        PulseSpeedometer(bad)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("name", "value"), [("window_s", 0.0), ("zero_after_s", -1.0)])
def test_window_and_zero_after_must_be_positive(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=name):
        PulseSpeedometer(M_PER_PULSE, **{name: value})


# --- properties ----------------------------------------------------------------------------------


@PROPERTY
@given(noise=st.binary(max_size=700), chunk=st.integers(1, 40))
def test_random_bytes_never_raise_from_the_line_decoder(noise: bytes, chunk: int) -> None:
    stream = PulseStream()
    for at in range(0, len(noise), chunk):
        for item in stream.feed(noise[at : at + chunk]):
            assert isinstance(item, PulseReading | Comment | BadLine)
    for line in noise.split(b"\n"):
        parse_line(line)
    assert stream.feed(b"\nP 1 2\n")[-1] == PulseReading(1, 2)


counters = st.integers(0, COUNTER_MODULUS - 1)
steps = st.one_of(
    st.tuples(st.integers(0, 1_000), st.integers(0, 40)),  # a board running normally
    st.tuples(counters, counters),  # anything at all: a reset, a jump, noise
)


@PROPERTY
@given(start=st.tuples(counters, counters), moves=st.lists(steps, max_size=60))
def test_distance_never_decreases_and_speed_stays_sane(start: tuple[int, int], moves: list[tuple[int, int]]) -> None:
    speedometer = PulseSpeedometer(M_PER_PULSE)
    board_ms, pulses = start
    last = speedometer.update(PulseReading(board_ms, pulses))
    for d_ms, d_pulses in moves:
        board_ms = (board_ms + d_ms) % COUNTER_MODULUS
        pulses = (pulses + d_pulses) % COUNTER_MODULUS
        result = speedometer.update(PulseReading(board_ms, pulses))
        assert result.distance_m >= last.distance_m
        assert result.pulses >= last.pulses
        assert math.isfinite(result.speed.mps)
        assert result.speed.mps >= 0
        # At most one pulse per board millisecond is ever credited.
        assert result.speed.mps <= M_PER_PULSE * 1000 * 2
        last = result


# --- the meter both pulse drivers share (pulse://, gpio://) ---------------------------------------


def meter() -> PulseMeter:
    return PulseMeter(M_PER_PULSE, 1.0, name="pulse:///dev/test", logger=logging.getLogger("test.pulse"))


def feed(pulse_meter: PulseMeter, readings: list[PulseReading], t0: float = 100.0) -> list[Update]:
    """Every reading, arrived on the host 1:1 with the board's clock from ``t0``."""
    first = readings[0].board_ms
    return [u for r in readings for u in pulse_meter.read(r, t0 + (r.board_ms - first) / 1000)]


def test_meter_samples_a_belt_and_says_a_board_restart_once() -> None:
    pulse_meter = meter()
    before = feed(pulse_meter, board(900, 5_000, start_ms=80_000, start_pulses=500))
    after = feed(pulse_meter, board(900, 5_000), t0=106.0)
    assert all(isinstance(u, BeltSample) for u in before)
    resets = [u for u in after if isinstance(u, DeviceEvent)]
    assert [e.kind for e in resets] == [DeviceEventKind.DEVICE_RESET]
    samples = [u for u in before + after if isinstance(u, BeltSample)]
    distances = [s.distance_m for s in samples if s.distance_m is not None]
    assert len(distances) == len(samples)  # a pulse count always has a distance
    assert distances == sorted(distances)  # the restart took nothing back
    assert distances[-1] == pytest.approx(10 * M_PER_PULSE)
    assert samples[-1].speed.kmh == pytest.approx(1.0)
    assert pulse_meter.bad_samples == 0


def test_meter_refuses_a_reading_no_belt_makes_counts_it_and_logs_it_once(caplog: pytest.LogCaptureFixture) -> None:
    pulse_meter = meter()
    feed(pulse_meter, board(900, 2_000))
    caplog.set_level(logging.WARNING, logger="test.pulse")
    # Line noise that still parses, twice in a row but not agreeing: a million pulses in 200 ms.
    assert pulse_meter.read(PulseReading(2_200, 1_000_000), 102.2) == []
    assert pulse_meter.read(PulseReading(2_400, 3_000_000), 102.4) == []
    assert pulse_meter.bad_samples == 2
    refused = [r.getMessage() for r in caplog.records if "no belt makes" in r.getMessage()]
    assert len(refused) == 1 and refused[0].startswith("pulse:///dev/test: ")
    # One bogus line costs one reading: the next one in step with the belt counts.
    (sample,) = pulse_meter.read(PulseReading(2_600, 3), 102.6)
    assert isinstance(sample, BeltSample) and sample.distance_m == pytest.approx(3 * M_PER_PULSE)


def test_a_count_the_host_keeps_reads_like_the_board_line_it_stands_for() -> None:
    # gpio:// plays the board: its time since the pin opened and its count, wrapped like the board's
    # counters (here the host has been up past the 49.7 days of a 32-bit millisecond counter).
    host, line = meter(), meter()
    t0 = 5_000.0
    host.base(t0)
    line.read(PulseReading(0, 0), t0)
    start_s = (COUNTER_MODULUS - 500) / 1000
    for k in range(1, 30):
        elapsed, pulses = start_s + 0.2 * k, k // 2
        from_host = host.count(elapsed, pulses, t0 + elapsed)
        from_line = line.read(
            PulseReading(int(elapsed * 1000) % COUNTER_MODULUS, pulses % COUNTER_MODULUS), t0 + elapsed
        )
        assert from_host == from_line
