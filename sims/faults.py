"""The fault grammar of interfaces.md: ``fault=runaway@20,stall@40``.

Each fault is a kind and the number of seconds after the simulation starts at which it strikes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from retrotread.drivers.errors import ConfigError

# How long the link-level faults last, in seconds, in every simulator: long enough for the daemon
# to see them, short enough for a test.
UNPLUG_S = 2.0
"""``unplug``: the cable is out this long, then back."""
REBOOT_OFFLINE_S = 1.0
"""``reboot``: the device is gone this long while it restarts."""
REBOOT_RESUME_S = 0.3
"""``reboot``: this long after it is back, the device resumes the belt on its own (S11)."""


class FaultKind(Enum):
    RUNAWAY = "runaway"  # the belt accelerates past its command
    STALL = "stall"  # telemetry stops, the belt keeps moving
    UNPLUG = "unplug"  # the link drops (and comes back a little later)
    REBOOT = "reboot"  # the device restarts and resumes the belt on its own
    KEY = "key"  # the safety key is pulled: the motor loses power
    GARBAGE = "garbage"  # corrupt bytes on the link: no valid sample gets through
    IGNORE = "ignore"  # the device stops acknowledging commands


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    at_s: float


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """Parse ``KIND@SECONDS[,KIND@SECONDS...]``; the error names the bad part and what is allowed."""
    faults: list[Fault] = []
    kinds = ", ".join(k.value for k in FaultKind)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, when = part.partition("@")
        try:
            kind = FaultKind(name)
        except ValueError:
            raise ConfigError(f"fault {part!r}: unknown kind {name!r}; allowed: {kinds}") from None
        try:
            at_s = float(when) if sep else math.nan
        except ValueError:
            at_s = math.nan
        if not (math.isfinite(at_s) and at_s >= 0):
            raise ConfigError(f"fault {part!r}: expected KIND@SECONDS with SECONDS >= 0, e.g. {name}@20")
        faults.append(Fault(kind, at_s))
    return tuple(sorted(faults, key=lambda f: f.at_s))
