"""The closed set of event kinds and cue kinds, in one spelling (snake_case), and the phase names.

Every event on the hub, on ``GET /api/v1/events``, on MQTT ``event`` and in the history carries one
of these kinds. The supervisor (``safety/``) names its events in kebab-case (``overspeed-alert``,
``arm-refused``): the controller turns each into its kind here (``overspeed_alert``); a *reason*
keeps the kebab-case spelling of safety.md (reason ``overspeed-alert`` under kind
``overspeed_alert``). docs/http.md lists the mapping.

``Phase`` lives here (``daemon.timer`` re-exports it) so the timer can emit ``CueKind`` cues
without an import cycle.

``event_fields`` is the one place a supervisor event becomes the fields of our ``Event`` (kind in
our spelling, the rule as its name), and ``rule_name`` the one place a ``Rule`` becomes the string
every face shows: the controller used to spell ``rule.value if rule else None`` five times.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import TypedDict

from retrotread.safety.rules import Rule
from retrotread.safety.supervisor import SafetyEvent

__all__ = ["RUNNING_PHASES", "CueKind", "EventFields", "EventKind", "Phase", "event_fields", "rule_name"]

log = logging.getLogger(__name__)


class Phase(StrEnum):
    IDLE = "idle"  # no session: the timer published at start-up and after a session's end
    COUNTDOWN = "countdown"
    WORK = "work"
    REST = "rest"
    DONE = "done"
    ABORTED = "aborted"


class CueKind(StrEnum):
    """The moments of a session a person hears (docs/cues.md), in one spelling."""

    COUNTDOWN = "countdown"
    GO = "go"
    HALFWAY = "halfway"
    REMAINING = "remaining"
    SET_DONE = "set_done"
    REST_ENDING = "rest_ending"
    SESSION_DONE = "session_done"
    PAUSED = "paused"
    RESUMED = "resumed"
    STOP = "stop"


class EventKind(StrEnum):
    # from the supervisor (safety.md)
    BOOT = "boot"
    ARMED = "armed"
    ARM_REFUSED = "arm_refused"
    START = "start"
    START_HELD = "start_held"
    START_REFUSED = "start_refused"
    STOP = "stop"
    STOPPED = "stopped"
    ESTOP = "estop"
    RESET = "reset"
    RECONNECTED = "reconnected"
    DEVICE_RESET = "device_reset"
    FAULT = "fault"
    OVERSPEED_ALERT = "overspeed_alert"
    # from the controller
    FAULT_CLEARED = "fault_cleared"
    ESTOP_REASON = "estop_reason"
    VOLUME_CAP = "volume_cap"
    # from sessions
    SESSION_STARTED = "session_started"
    SESSION_PAUSED = "session_paused"
    SESSION_RESUMED = "session_resumed"
    SESSION_EXTENDED = "session_extended"
    SESSION_COMPLETED = "session_completed"
    SESSION_ENDED = "session_ended"
    SET_STARTED = "set_started"
    SET_COMPLETED = "set_completed"
    SET_ENDED = "set_ended"
    SET_REFUSED = "set_refused"

    @classmethod
    def spelled(cls, name: str) -> EventKind | None:
        """The kind a supervisor event (or a history row written before the one spelling) names,
        or None when it names none of ours."""
        try:
            return cls(name.strip().lower().replace("-", "_"))
        except ValueError:
            return None


RUNNING_PHASES: tuple[Phase, ...] = (Phase.COUNTDOWN, Phase.WORK, Phase.REST)
"""The phases of a session that is still going (``done`` and ``aborted`` end it)."""


class EventFields(TypedDict):
    """What a supervisor event says, as the keyword arguments of ``daemon.snapshot.Event``
    (which adds the time and the session: ``Event(**event_fields(ev), ts=...)``)."""

    kind: EventKind
    rule: str | None
    reason: str | None
    detail: str


def rule_name(rule: Rule | None) -> str | None:
    """A rule as every face and the history spell it (``"S7"``), None for an event of no rule."""
    return None if rule is None else rule.value


def event_fields(ev: SafetyEvent) -> EventFields:
    """The supervisor's event in our vocabulary. A kind the supervisor added that we do not know
    yet is published as a ``fault`` that names it, never dropped (tests/test_floors.py checks
    every kind the supervisor spells)."""
    kind = EventKind.spelled(ev.kind)
    if kind is None:
        log.error("unknown supervisor event kind %r", ev.kind)
        return EventFields(
            kind=EventKind.FAULT,
            rule=rule_name(ev.rule),
            reason=ev.kind,
            detail=f"{ev.reason or ''} {ev.detail}".strip(),
        )
    return EventFields(kind=kind, rule=rule_name(ev.rule), reason=ev.reason, detail=ev.detail)
