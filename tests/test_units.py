"""Speed conversions are exact and grid rounding forgives float noise (groundwork for S2)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retrotread.drivers.units import KMH_PER_MPH, Rounding, Speed, SpeedGrid, SpeedUnit, steps


def test_one_mph_is_exactly_1_609344_kmh() -> None:
    assert Speed.from_mph(1.0).kmh == pytest.approx(KMH_PER_MPH, abs=1e-12)
    assert Speed.from_kmh(KMH_PER_MPH).mph == pytest.approx(1.0, abs=1e-12)
    assert Speed.from_mph(1.0).mps == pytest.approx(0.44704, abs=1e-12)


def test_s2_envelope_ends_on_device_grids() -> None:
    top, bottom = Speed.from_mph(1.2), Speed.from_mph(0.8)
    assert SpeedUnit.KMH_HUNDREDTHS.to_count(top, Rounding.DOWN) == 193
    assert SpeedUnit.KMH_HUNDREDTHS.to_count(bottom, Rounding.UP) == 129
    assert SpeedUnit.MPH_HUNDREDTHS.to_count(top, Rounding.DOWN) == 120
    assert SpeedUnit.MPH_TENTHS.to_count(top, Rounding.DOWN) == 12


def test_float_noise_is_not_a_grid_step() -> None:
    # 1.1 * 100 is 110.00000000000001 in binary floating point: still 110 steps, rounding up or down.
    assert steps(1.1, 0.01, Rounding.UP) == 110
    assert steps(1.1, 0.01, Rounding.DOWN) == 110


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_numbers_have_no_grid_step(bad: float) -> None:
    with pytest.raises(ValueError, match="grid"):
        steps(bad, 0.01, Rounding.NEAREST)


@given(st.floats(min_value=0, max_value=30, allow_nan=False))
def test_rounding_direction_is_respected(kmh: float) -> None:
    down = steps(kmh, 0.01, Rounding.DOWN)
    up = steps(kmh, 0.01, Rounding.UP)
    assert down <= up <= down + 1
    assert down / 100 <= kmh + 1e-6
    assert up / 100 >= kmh - 1e-6


@given(st.integers(min_value=0, max_value=3000))
def test_counts_round_trip_through_speed(count: int) -> None:
    for unit in SpeedUnit:
        assert unit.to_count(unit.from_count(count)) == count


# --- SpeedGrid: one value that knows its unit (issue 11 point 6) --------------------------------

ENVELOPE = (Speed.from_mph(0.8), Speed.from_mph(1.2))


@pytest.mark.parametrize(
    ("grid", "span"),
    [
        # S2's vectors: FTMS 0.01 km/h 129..193, CSAFE 0.01 mph 80..120, CSAFE 0.1 mph 8..12.
        (SpeedGrid(SpeedUnit.KMH_HUNDREDTHS, 1, Speed.from_kmh(0.5), Speed.from_kmh(20)), (129, 193)),
        (SpeedGrid(SpeedUnit.MPH_HUNDREDTHS, 1, Speed.from_mph(0.5), Speed.from_mph(12)), (80, 120)),
        (SpeedGrid(SpeedUnit.MPH_TENTHS, 1, Speed.from_mph(0.5), Speed.from_mph(12)), (8, 12)),
        # An FTMS machine with a 0.1 km/h increment (0x2AD4 = 10): counts stay in 0.01 km/h.
        (SpeedGrid(SpeedUnit.KMH_HUNDREDTHS, 10, Speed.from_kmh(0.8), Speed.from_kmh(16)), (130, 190)),
        # The device's own range narrows the envelope: a minimum of 1 mph.
        (SpeedGrid(SpeedUnit.MPH_TENTHS, 1, Speed.from_mph(1.0), Speed.from_mph(12)), (10, 12)),
    ],
)
def test_s2_grid_within_the_envelope_rounds_inward(grid: SpeedGrid, span: tuple[int, int]) -> None:
    assert grid.within(*ENVELOPE) == span
    first, last = span
    assert grid.decode(first) >= ENVELOPE[0]
    assert grid.decode(last) <= ENVELOPE[1]


def test_s3_no_step_inside_the_envelope() -> None:
    coarse = SpeedGrid(SpeedUnit.KMH, 1, Speed.from_kmh(1), Speed.from_kmh(20))  # 0.62 and 1.24 mph
    assert coarse.within(*ENVELOPE) is None


@given(
    st.sampled_from(list(SpeedUnit)),
    st.integers(1, 50),
    st.floats(min_value=0, max_value=30, allow_nan=False),
)
def test_grid_encode_is_a_multiple_of_the_increment_and_never_crosses_inward(
    unit: SpeedUnit, increment: int, mph: float
) -> None:
    grid = SpeedGrid(unit, increment, Speed.zero(), Speed.from_mph(30))
    speed = Speed.from_mph(mph)
    down, up = grid.encode(speed, Rounding.DOWN), grid.encode(speed, Rounding.UP)
    assert down % increment == 0 and up % increment == 0
    assert grid.decode(down) <= speed <= grid.decode(up)
    assert up - down in (0, increment)


def test_grid_refuses_a_zero_increment() -> None:
    with pytest.raises(ValueError, match="increment"):
        SpeedGrid(SpeedUnit.KMH_HUNDREDTHS, 0)


def test_grid_describes_itself_in_its_own_unit() -> None:
    grid = SpeedGrid(SpeedUnit.MPH_TENTHS, 1, Speed.from_mph(0.5), Speed.from_mph(12))
    assert str(grid) == "0.5..12 mph in steps of 0.1 mph"
