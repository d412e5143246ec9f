"""Cues from the set timer, on an injected clock (docs/cues.md): no real waiting anywhere here."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retrotread.daemon.config import load_settings
from retrotread.daemon.cues import CueSettings, TimerCue, session_done_text
from retrotread.daemon.events import CueKind
from retrotread.daemon.plans import Plan, parse_plan
from retrotread.daemon.timer import SetTimer
from retrotread.drivers.errors import ConfigError

K = CueKind


def run(timer: SetTimer, now: float, until: float) -> list[tuple[float, float, CueKind, str]]:
    """Follow the timer's own ``next_wake`` up to ``until``: (woke at, cue's time, kind, text)."""
    out: list[tuple[float, float, CueKind, str]] = []
    while not timer.finished:
        wake = timer.next_wake(now)
        if wake is None or wake > until:
            break
        now = wake
        timer.advance(now)
        out += [(now, c.t, c.kind, c.text) for c in timer.take_cues()]
    return out


def said(cues: list[TimerCue]) -> list[tuple[float, CueKind, str]]:
    return [(c.t, c.kind, c.text) for c in cues]


DEADMILL = [
    (2.0, K.COUNTDOWN, "3"),
    (3.0, K.COUNTDOWN, "2"),
    (4.0, K.COUNTDOWN, "1"),
    (5.0, K.GO, "Set 1 of 3. Push."),
    (35.0, K.HALFWAY, "Halfway."),
    (55.0, K.REMAINING, "10 seconds."),
    (65.0, K.SET_DONE, "Set 1 done. Rest 60 seconds."),
    (120.0, K.REST_ENDING, "Next set in 5."),
    (122.0, K.COUNTDOWN, "3"),
    (123.0, K.COUNTDOWN, "2"),
    (124.0, K.COUNTDOWN, "1"),
    (125.0, K.GO, "Set 2 of 3. Push."),
    (155.0, K.HALFWAY, "Halfway."),
    (175.0, K.REMAINING, "10 seconds."),
    (185.0, K.SET_DONE, "Set 2 done. Rest 60 seconds."),
    (240.0, K.REST_ENDING, "Next set in 5."),
    (242.0, K.COUNTDOWN, "3"),
    (243.0, K.COUNTDOWN, "2"),
    (244.0, K.COUNTDOWN, "1"),
    (245.0, K.GO, "Set 3 of 3. Push."),
    (275.0, K.HALFWAY, "Halfway."),
    (295.0, K.REMAINING, "10 seconds."),
    (305.0, K.SESSION_DONE, "Session complete. 3 sets."),
]


def test_every_cue_kind_of_the_timer_at_its_moment_for_3x60s_60s() -> None:
    timer = SetTimer(parse_plan("3x60s/60s"), 0.0)
    got = run(timer, 0.0, 1000.0)
    assert [(t, k, text) for _, t, k, text in got] == DEADMILL
    # next_wake woke the loop at each cue's own moment, not at the next whole second after it.
    assert all(woke == t for woke, t, *_ in got)
    assert timer.finished


def test_next_wake_wakes_for_a_cue_between_whole_seconds() -> None:
    """A 61 s set's halfway is at 30.5 s: the 1 Hz ticks alone would say it half a second late."""
    timer = SetTimer(parse_plan("1x61s,countdown=0s"), 0.0)
    got = run(timer, 0.0, 40.0)
    assert (30.5, 30.5, K.HALFWAY, "Halfway.") in got


def test_the_cues_carry_the_set_they_are_about_and_what_is_left() -> None:
    timer = SetTimer(parse_plan("3x60s/60s"), 0.0)
    timer.advance(125.0)
    cues = {(c.kind, c.t): c for c in timer.take_cues()}
    assert (cues[K.REST_ENDING, 120.0].set_no, cues[K.REST_ENDING, 120.0].remaining_s) == (2, 5.0)
    assert (cues[K.COUNTDOWN, 123.0].set_no, cues[K.COUNTDOWN, 123.0].remaining_s) == (2, 2.0)
    assert (cues[K.GO, 125.0].set_no, cues[K.GO, 125.0].remaining_s) == (2, 60.0)
    assert (cues[K.SET_DONE, 65.0].set_no, cues[K.SET_DONE, 65.0].remaining_s) == (1, 60.0)


def test_in_reverse_mode_go_says_the_belt_starts() -> None:
    timer = SetTimer(parse_plan("3x60s/60s"), 0.0, CueSettings(reverse=True))
    timer.advance(125.0)
    assert [c.text for c in timer.take_cues() if c.kind is K.GO] == [
        "Set 1 of 3. Belt starting.",
        "Set 2 of 3. Belt starting.",
    ]


def test_a_late_wake_says_every_due_cue_once_in_order_at_its_scheduled_time() -> None:
    timer = SetTimer(parse_plan("3x60s/60s"), 0.0)
    timer.advance(130.0)  # the loop slept through two phases
    assert said(timer.take_cues()) == DEADMILL[:12]
    timer.advance(130.0)
    assert timer.take_cues() == []
    timer.advance(1000.0)
    assert said(timer.take_cues()) == DEADMILL[12:]


def test_a_pause_says_so_and_shifts_every_later_cue() -> None:
    timer = SetTimer(parse_plan("3x60s/60s"), 0.0)
    timer.advance(20.0)
    timer.take_cues()
    timer.pause(20.0, cue=True)
    timer.advance(100.0)
    assert timer.next_wake(100.0) is None
    timer.resume(120.0, cue=True)  # 100 s paused
    timer.advance(170.0)
    assert said(timer.take_cues()) == [
        (20.0, K.PAUSED, "Paused."),
        (120.0, K.RESUMED, "Resumed."),
        (135.0, K.HALFWAY, "Halfway."),
        (155.0, K.REMAINING, "10 seconds."),
        (165.0, K.SET_DONE, "Set 1 done. Rest 60 seconds."),
    ]


def test_a_hold_of_the_controllers_own_says_nothing() -> None:
    """start=push holds the clock until the first push: "Set 1 of 3. Push." is what is said."""
    timer = SetTimer(parse_plan("3x60s/60s,countdown=0s"), 0.0)
    timer.pause(0.0)
    timer.resume(4.0)
    assert said(timer.take_cues()) == [(0.0, K.GO, "Set 1 of 3. Push.")]


def test_a_skip_says_the_boundary_and_never_the_skipped_moments() -> None:
    timer = SetTimer(parse_plan("3x60s/60s"), 0.0)
    timer.advance(30.0)
    timer.take_cues()
    timer.skip(30.0)  # set 1 ends before its halfway: no "Halfway.", no "10 seconds."
    timer.advance(86.0)
    timer.skip(86.0)  # the rest ends 4 s early: after "Next set in 5.", its "3", "2", "1" never come
    timer.advance(90.0)
    assert said(timer.take_cues()) == [
        (30.0, K.SET_DONE, "Set 1 done. Rest 60 seconds."),
        (85.0, K.REST_ENDING, "Next set in 5."),
        (86.0, K.GO, "Set 2 of 3. Push."),
    ]
    timer.advance(1000.0)
    later = said(timer.take_cues())
    assert later[0] == (116.0, K.HALFWAY, "Halfway.")  # set 2's moments follow its own start
    assert [k for _, k, _ in later].count(K.GO) == 1


def test_what_was_due_before_a_skip_is_said_before_it() -> None:
    timer = SetTimer(parse_plan("3x60s/60s"), 0.0)
    timer.skip(3.5)  # nobody called advance since 2.0: "3" was due, "2" was
    assert said(timer.take_cues()) == [
        (2.0, K.COUNTDOWN, "3"),
        (3.0, K.COUNTDOWN, "2"),
        (3.5, K.GO, "Set 1 of 3. Push."),
    ]


def test_an_abort_says_what_was_due_and_nothing_after() -> None:
    timer = SetTimer(parse_plan("3x60s/60s"), 0.0)
    timer.advance(30.0)
    timer.take_cues()
    timer.abort(40.0)
    assert said(timer.take_cues()) == [(35.0, K.HALFWAY, "Halfway.")]
    timer.advance(1000.0)
    assert timer.take_cues() == []
    assert timer.next_wake(41.0) is None


def test_a_short_plan_where_cues_meet() -> None:
    """``2x5s/2s``: no halfway (under 60 s), no "10 seconds." (the set is shorter), no "Next set
    in 5." (the rest is shorter); the rest of 2 s counts "2", "1" only, and at the instant set 1
    ends its "set done" comes before the "2"."""
    timer = SetTimer(parse_plan("2x5s/2s"), 0.0)
    got = run(timer, 0.0, 100.0)
    assert [(t, k, text) for _, t, k, text in got] == [
        (2.0, K.COUNTDOWN, "3"),
        (3.0, K.COUNTDOWN, "2"),
        (4.0, K.COUNTDOWN, "1"),
        (5.0, K.GO, "Set 1 of 2. Push."),
        (10.0, K.SET_DONE, "Set 1 done. Rest 2 seconds."),
        (10.0, K.COUNTDOWN, "2"),
        (11.0, K.COUNTDOWN, "1"),
        (12.0, K.GO, "Set 2 of 2. Push."),
        (17.0, K.SESSION_DONE, "Session complete. 2 sets."),
    ]


def test_with_no_countdown_and_no_rest_the_sets_follow_each_other() -> None:
    timer = SetTimer(parse_plan("2x5s/0s,countdown=0s"), 0.0)
    timer.advance(100.0)
    assert said(timer.take_cues()) == [
        (0.0, K.GO, "Set 1 of 2. Push."),
        (5.0, K.SET_DONE, "Set 1 done."),
        (5.0, K.GO, "Set 2 of 2. Push."),
        (10.0, K.SESSION_DONE, "Session complete. 2 sets."),
    ]


def test_settings_choose_the_cues_and_the_lead_times() -> None:
    settings = CueSettings.of(["go", "remaining"], [10, 30, 10])
    assert settings.remaining_s == (30.0, 10.0)
    timer = SetTimer(parse_plan("1x60s,countdown=3s"), 0.0, settings)
    timer.advance(100.0)
    assert said(timer.take_cues()) == [
        (3.0, K.GO, "Set 1 of 1. Push."),
        (33.0, K.REMAINING, "30 seconds."),
        (53.0, K.REMAINING, "10 seconds."),
    ]


def test_an_extension_moves_the_cues_with_the_end_and_says_none_twice() -> None:
    timer = SetTimer(parse_plan("1x60s,countdown=0s"), 0.0)
    timer.advance(56.0)  # "Halfway." and "10 seconds." said
    timer.extend(56.0, 60.0)  # now 120 s: its halfway (60) and remaining (110) move, said once each
    timer.advance(1000.0)
    assert said(timer.take_cues()) == [
        (0.0, K.GO, "Set 1 of 1. Push."),
        (30.0, K.HALFWAY, "Halfway."),
        (50.0, K.REMAINING, "10 seconds."),
        (120.0, K.SESSION_DONE, "Session complete. 1 set."),
    ]


def test_session_done_says_a_distance_only_when_one_was_measured() -> None:
    assert session_done_text(3, 121.4) == "Session complete. 3 sets, 121 metres."
    assert session_done_text(3, None) == "Session complete. 3 sets."
    assert session_done_text(1, 0.0) == "Session complete. 1 set, 0 metres."


@given(
    sets=st.integers(1, 4),
    work=st.integers(1, 90),
    rest=st.integers(0, 12),
    countdown=st.integers(0, 6),
    wakes=st.lists(st.floats(0.0, 7.0), min_size=1, max_size=40),
)
def test_cues_are_never_said_twice_and_always_in_order(
    sets: int, work: int, rest: int, countdown: int, wakes: list[float]
) -> None:
    plan = Plan("p", sets, work, rest, countdown)
    every = SetTimer(plan, 0.0)
    every.advance(1e6)
    expected = said(every.take_cues())
    timer, now, got = SetTimer(plan, 0.0), 0.0, []
    while not timer.finished:
        for w in wakes:
            now += w + 0.01
            timer.advance(now)
            got += said(timer.take_cues())
    assert got == expected
    assert [t for t, *_ in got] == sorted(t for t, *_ in got)
    assert [k for _, k, _ in got].count(K.GO) == sets
    assert got[-1][1] is K.SESSION_DONE


def test_cues_settings_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "retrotread.toml"
    path.write_text("")
    assert load_settings(path).cues.settings() == CueSettings()  # all cues, "10 seconds."
    path.write_text('[cues]\nenabled = ["go", "set_done"]\nremaining_s = [30, 10]\n')
    settings = load_settings(path).cues.settings(reverse=True)
    assert settings == CueSettings(frozenset({K.GO, K.SET_DONE}), (30.0, 10.0), reverse=True)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[cues]\nenabled = ["gong"]\n', "cues.enabled.0"),
        ("[cues]\nremaining_s = [0]\n", "cues.remaining_s"),
        ("[cues]\nremaining_s = [-5]\n", "0 < seconds"),
        ("[cues]\nvolume = 3\n", "unknown key 'cues.volume'"),
    ],
)
def test_bad_cues_settings_are_one_clear_line(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "retrotread.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        load_settings(path)
