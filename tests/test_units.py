"""Speed conversions are exact and grid rounding forgives float noise (groundwork for S2)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retrotread.drivers.units import KMH_PER_MPH, Rounding, Speed, SpeedUnit, steps


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
