"""Safety: the supervisor (a pure state machine holding every rule of safety.md) and the guard
that is the only way to a driver's motion commands. Imports only ``drivers``' types; no I/O in
the supervisor, no clock of its own anywhere here (S17)."""

from retrotread.safety.envelope import Envelope, EnvelopeError, Grid
from retrotread.safety.guard import Guard
from retrotread.safety.rules import Rule
from retrotread.safety.supervisor import (
    CommandKind,
    Decision,
    DriveCommand,
    EStop,
    Latch,
    Mode,
    Refusal,
    Request,
    Reset,
    SafetyConfig,
    SafetyEvent,
    SetIncline,
    SetSpeed,
    Start,
    Stop,
    Supervisor,
)

__all__ = [
    "CommandKind",
    "Decision",
    "DriveCommand",
    "EStop",
    "Envelope",
    "EnvelopeError",
    "Grid",
    "Guard",
    "Latch",
    "Mode",
    "Refusal",
    "Request",
    "Reset",
    "Rule",
    "SafetyConfig",
    "SafetyEvent",
    "SetIncline",
    "SetSpeed",
    "Start",
    "Stop",
    "Supervisor",
]
