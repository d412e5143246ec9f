"""Terminal views with rich: the live set timer and belt, and the per-set summary.

Rendering only: it reads snapshots (as the JSON dicts of interfaces.md, so the same view serves the
standalone deadmill timer and ``status --watch`` over SSE) and never decides anything. ``Keys``
puts a terminal in cbreak mode and feeds single key presses to a callback on the event loop.

One key map serves both views (``KEYMAP``) and each view shows its own keys from it, so what the
screen says is what the keys do. Space and ``s`` mean EMERGENCY STOP wherever there is a motor
(``status --watch``); the standalone deadmill view has no motor to stop (S13), so there space does
nothing and pause is ``p``: a key that stops the belt in one view never merely pauses a timer in
the other (issue 12).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from retrotread.api.keys import KEYMAP, Binding, key_action, key_hint
from retrotread.daemon.events import CueKind, Phase

__all__ = ["KEYMAP", "Binding", "key_action", "key_hint"]

PHASE_STYLE: dict[str, str] = {
    Phase.COUNTDOWN: "yellow",
    Phase.WORK: "bold green",
    Phase.REST: "cyan",
    Phase.DONE: "bold",
    Phase.ABORTED: "red",
}


BELL_CUES = frozenset(
    {CueKind.COUNTDOWN, CueKind.GO, CueKind.SET_DONE, CueKind.REST_ENDING, CueKind.SESSION_DONE, CueKind.STOP}
)
"""Cues that ring the terminal bell: the countdown and each change of set (cues.md), and a stop."""


def cue_line(cue: Mapping[str, Any]) -> tuple[str, bool]:
    """A cue (``{kind, text, set, remaining_s}``) as one line of its own, and whether it rings the bell."""
    kind = str(cue.get("kind") or "")
    text = str(cue.get("text") or kind or "cue")
    where = f"set {cue['set']}" if cue.get("set") else ""
    remaining = cue.get("remaining_s")
    if isinstance(remaining, int | float) and not isinstance(remaining, bool):
        where = f"{where}, {_fmt_time(float(remaining))} left" if where else f"{_fmt_time(float(remaining))} left"
    return (f"cue: {text}" + (f" ({where})" if where else ""), kind in BELL_CUES)


def _fmt_time(seconds: float) -> str:
    seconds = max(0.0, seconds)
    m, s = divmod(int(seconds + 0.999), 60)  # a countdown shows 0:01 until it really is over
    return f"{m}:{s:02d}"


def render_live(state: Mapping[str, Any], timer: Mapping[str, Any] | None, hint: str) -> RenderableType:
    """One screen: phase, set n of N, a bar counting down, the belt, the stop state."""
    parts: list[RenderableType] = []
    stop = state.get("stop") or {}
    if stop.get("latched"):
        parts.append(Text(f" STOPPED: {stop.get('reason')} ({stop.get('rule')}) ", style="bold white on red"))
    if not state.get("connected", True):
        parts.append(Text(" DEVICE DISCONNECTED ", style="bold black on yellow"))
    if timer:
        phase = str(timer.get("phase", ""))
        total = float(timer.get("remaining_s", 0)) + float(timer.get("elapsed_s", 0))
        head = Text.assemble(
            (phase.upper(), PHASE_STYLE.get(phase, "")),
            "  ",
            (f"set {timer.get('set')} of {timer.get('sets')}", "bold"),
            "  ",
            (_fmt_time(float(timer.get("remaining_s", 0))), "bold"),
            ("  (paused)" if timer.get("paused") else "", "yellow"),
        )
        bar = Table.grid()  # a ProgressBar alone in a Group ends without a line break
        bar.add_row(ProgressBar(total=max(total, 0.001), completed=float(timer.get("elapsed_s", 0)), width=50))
        parts += [head, bar]
    else:
        parts.append(Text("no session running", style="dim"))
    belt = state.get("belt") or {}
    speed = belt.get("speed_mph")
    line = Text.assemble(
        ("belt ", "dim"),
        (f"{speed:.2f} mph" if isinstance(speed, int | float) else "–", "bold"),
        ("  distance ", "dim"),
        (f"{belt.get('distance_m') or 0:.0f} m", ""),
    )
    env = state.get("envelope_mph")
    if env:
        line.append(f"  envelope {env[0]:g}–{env[1]:g} mph", style="dim")
    parts.append(line)
    parts.append(Text(hint, style="dim"))
    title = f"retrotread · {state.get('id', '')} · {state.get('mode', '')}"
    return Panel(Group(*parts), title=title, expand=False)


def _num(value: Any, fmt: str) -> str:
    return f"{value:{fmt}}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def render_summary(sets: Sequence[Mapping[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col in ("set", "work s", "distance m", "avg mph", "max mph", "outcome"):
        table.add_column(col, justify="right" if col != "outcome" else "left")
    for s in sets:
        table.add_row(
            str(s["set"]),
            f"{s['work_s']:.1f}",
            _num(s.get("distance_m"), ".1f"),  # None: a timer-only set measured nothing; a dash, never 0
            _num(s.get("avg_mph"), ".2f"),
            _num(s.get("max_mph"), ".2f"),
            str(s["outcome"]),
        )
    return table


@contextlib.contextmanager
def keys(on_key: Callable[[str], None]) -> Iterator[bool]:
    """Single key presses to ``on_key`` while inside; yields False when stdin is not a terminal."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        yield False
        return
    loop = asyncio.get_running_loop()
    saved = termios.tcgetattr(fd)

    def readable() -> None:
        data = os.read(fd, 32).decode(errors="ignore")
        for ch in data:
            on_key(ch)

    tty.setcbreak(fd)
    loop.add_reader(fd, readable)
    try:
        yield True
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
