"""The simulated belt's physics: advancing a steady motor in one step (the fast path) ends where
the 10 ms steps would, whatever happens to the belt in between."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from retrotread.sims.belt import Belt


class SteppedBelt(Belt):
    """The same belt without the fast path: every interval in 10 ms steps."""

    def _steady(self) -> bool:
        return False


# What can happen to a motorized belt between two readings: a new command (0 to 2 m/s), a stop,
# the safety key pulled or put back, a runaway.
EVENTS = st.one_of(
    st.tuples(st.just("command"), st.floats(0.0, 2.0)),
    st.tuples(st.just("stop"), st.just(0.0)),
    st.tuples(st.just("power"), st.booleans()),
    st.tuples(st.just("runaway"), st.just(0.0)),
)


def _apply(belt: Belt, event: tuple[str, object]) -> None:
    kind, value = event
    if kind == "command":
        belt.command_mps = float(value)  # type: ignore[arg-type]
    elif kind == "stop":
        belt.stop_motor()
    elif kind == "power":
        belt.powered = bool(value)
    else:
        belt.run_away()


@given(st.lists(st.tuples(EVENTS, st.floats(0.001, 2.0)), min_size=1, max_size=15))
def test_the_fast_path_ends_where_the_steps_do(script: list[tuple[tuple[str, object], float]]) -> None:
    fast = Belt(motorized=True, t=0.0)
    slow = SteppedBelt(motorized=True, t=0.0)
    for event, gap in script:
        _apply(fast, event)
        _apply(slow, event)
        fast.advance_to(fast.t + gap)
        slow.advance_to(slow.t + gap)
        # The two clocks may differ by rounding (one step against many), so a ramp may end a
        # rounding later: equal within that, not bit for bit.
        assert abs(fast.speed_mps - slow.speed_mps) <= 1e-9
        assert abs(fast.distance_m - slow.distance_m) <= 1e-9 * max(1.0, slow.distance_m)
        assert abs(fast.t - slow.t) <= 1e-9 * max(1.0, slow.t)


def test_a_steady_motor_takes_one_step_and_a_ramp_does_not() -> None:
    belt = Belt(motorized=True, t=0.0, speed_mps=1.0, command_mps=1.0)
    belt.advance_to(30.0)
    assert belt.distance_m == 30.0  # exactly speed x time: one step, no 3,000 sums of 0.01 s
    ramping = replace(belt, command_mps=0.5)
    ramping.advance_to(30.1)
    assert 0.5 < ramping.speed_mps < 1.0  # still slowing down (2 mph/s): stepped, not jumped
