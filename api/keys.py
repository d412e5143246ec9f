"""The terminal views' one key map (``KEYMAP``), kept apart from the rich views that show it.

``retrotread --help`` prints each view's keys, and a ``run`` imports the CLI's parser, so the map
lives where importing it costs no rich (issue 16: 1.9 MB of a daemon's footprint). Space and ``s``
mean EMERGENCY STOP wherever there is a motor (``status --watch``); the standalone deadmill view has
no motor to stop (S13), so there space does nothing and pause is ``p``: a key that stops the belt in
one view never merely pauses a timer in the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Binding:
    keys: str  # each character is a key; letters match either case
    action: str
    label: str


KEYMAP: dict[str, tuple[Binding, ...]] = {
    # A daemon with a motor: space, the biggest key, is the stop (S5).
    "watch": (Binding(" s", "estop", "space/s EMERGENCY STOP"), Binding("q", "quit", "q quit view")),
    # No motor (S13): nothing to stop, and space is left unbound so it is never "just pause" here.
    "deadmill": (Binding("p", "pause", "p pause/resume"), Binding("q", "end", "q end session")),
}


def key_action(view: str, ch: str) -> str | None:
    """The action ``ch`` means in ``view`` (``KEYMAP``), or None."""
    for b in KEYMAP[view]:
        if ch in b.keys or ch.lower() in b.keys:
            return b.action
    return None


def key_hint(view: str) -> str:
    """The keys of ``view`` as the screen shows them."""
    return " · ".join(b.label for b in KEYMAP[view])
