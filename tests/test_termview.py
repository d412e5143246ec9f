"""The terminal views render what a person needs to see (rendered to text, no terminal needed)."""

from __future__ import annotations

from rich.console import Console

from retrotread.api.termview import render_live, render_summary


def text(renderable: object) -> str:
    console = Console(width=90, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_live_view_shows_phase_set_countdown_and_belt_on_their_own_lines() -> None:
    out = text(
        render_live(
            {
                "id": "t",
                "mode": "reverse",
                "connected": True,
                "envelope_mph": [0.8, 1.2],
                "belt": {"speed_mph": 1.05, "distance_m": 12.0},
                "stop": {"latched": False},
            },
            {"phase": "work", "set": 2, "sets": 3, "remaining_s": 41.3, "elapsed_s": 18.7},
            "hint",
        )
    )
    lines = out.splitlines()
    assert any("WORK" in line and "set 2 of 3" in line and "0:42" in line for line in lines)
    assert any(line.strip("│ ").startswith("belt 1.05 mph") for line in lines)
    assert "envelope 0.8–1.2 mph" in out


def test_live_view_shows_a_latched_stop_and_a_lost_device() -> None:
    out = text(
        render_live(
            {
                "id": "t",
                "mode": "reverse",
                "connected": False,
                "stop": {"latched": True, "reason": "overspeed", "rule": "S7"},
            },
            None,
            "",
        )
    )
    assert "STOPPED: overspeed (S7)" in out and "DEVICE DISCONNECTED" in out and "no session running" in out


def test_summary_has_a_row_per_set() -> None:
    row = {"set": 1, "work_s": 60.0, "distance_m": 41.5, "avg_mph": 1.55, "max_mph": 1.8, "outcome": "completed"}
    out = text(render_summary([row, {**row, "set": 2, "outcome": "aborted"}], "deadmill"))
    assert "41.5" in out and "completed" in out and "aborted" in out


def test_one_key_map_space_stops_only_where_there_is_a_motor() -> None:
    from retrotread.api.termview import key_action, key_hint

    assert key_action("watch", " ") == key_action("watch", "S") == "estop"
    assert key_action("watch", "q") == "quit"
    assert key_action("deadmill", " ") is None  # no motor (S13): space never means "just pause"
    assert key_action("deadmill", "s") is None
    assert key_action("deadmill", "P") == "pause" and key_action("deadmill", "q") == "end"
    assert "EMERGENCY STOP" in key_hint("watch") and "EMERGENCY" not in key_hint("deadmill")


def test_cue_lines_and_the_bell() -> None:
    from retrotread.api.termview import cue_line

    assert cue_line({"kind": "countdown", "text": "3", "set": 1, "remaining_s": 3.0}) == (
        "cue: 3 (set 1, 0:03 left)",
        True,
    )
    assert cue_line({"kind": "set_done", "text": "Set 2 done", "set": 2, "remaining_s": None})[1] is True
    assert cue_line({"kind": "halfway", "text": "Halfway", "set": 1, "remaining_s": 30}) == (
        "cue: Halfway (set 1, 0:30 left)",
        False,
    )
    assert cue_line({}) == ("cue: cue", False)  # a malformed cue is still one line, never a traceback


def test_summary_of_a_timer_only_set_shows_dashes_not_zero() -> None:
    row = {"set": 1, "work_s": 60.0, "distance_m": None, "avg_mph": None, "max_mph": None, "outcome": "completed"}
    out = text(render_summary([row], "t"))
    assert "–" in out and "None" not in out
