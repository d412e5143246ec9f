"""What particular FTMS treadmills do differently, keyed by what they say about themselves.

Every entry names its source (the public capture or client code, from ../shared/docs/hardware.md)
and matches on the advertised name or the Device Information model number (0x2A24), never on
speed alone. An unknown machine gets ``Quirks()``: the spec's behaviour, the conservative path.
The unit check of rule S7 still watches every machine, listed here or not.

The URL's ``unit`` option (``ftms://...?unit=mph`` or ``unit=kmh``) overrides the table's unit:
it is what the unit-mismatch message tells a user with an unlisted machine to set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

__all__ = ["QUIRKS", "Quirk", "Quirks", "WireUnit", "quirks_for", "with_unit"]


class WireUnit(Enum):
    """The unit of the speed numbers on the wire (FTMS says 0.01 km/h)."""

    KMH = "kmh"
    MPH = "mph"


@dataclass(frozen=True, slots=True)
class Quirks:
    """What the driver does for one machine (the merge of every entry that matched)."""

    takes: WireUnit = WireUnit.KMH
    """Set Target Speed and Supported Speed Range (0x2AD4) in this unit."""
    reports: WireUnit = WireUnit.KMH
    """Treadmill Data's instantaneous speed in this unit."""
    start_before_speed: bool = False
    """Request Control + Start before every Set Target Speed, not only the first."""
    never_resend_start: bool = False
    """Start while the belt runs toggles pause: send Start only to a belt that stands still."""
    cccd_gap_s: float = 0.0
    """Wait this long between subscriptions (CCCD writes)."""
    sources: tuple[str, ...] = ()
    """``"what: source"`` for each entry applied (shown in the device description and doctor)."""


@dataclass(frozen=True, slots=True)
class Quirk:
    """One table entry: which machines (name prefixes, model numbers) and what they need."""

    what: str
    source: str
    names: tuple[str, ...] = ()
    """Advertised-name prefixes, compared case-insensitively."""
    models: tuple[str, ...] = ()
    """Device Information model numbers (0x2A24), compared case-insensitively, whole."""
    takes: WireUnit | None = None
    reports: WireUnit | None = None
    start_before_speed: bool = False
    never_resend_start: bool = False
    cccd_gap_s: float = 0.0

    def matches(self, name: str | None, model: str | None) -> bool:
        n = (name or "").strip().lower()
        m = (model or "").strip().lower()
        return any(n.startswith(p.lower()) for p in self.names if n) or any(m == x.lower() for x in self.models if m)


QUIRKS: tuple[Quirk, ...] = (
    Quirk(
        "reads Set Target Speed as mph",
        "qdomyos-zwift PRs #4721, #4904 and horizontreadmill.cpp (hardware.md)",
        names=("Horizon", "T202"),
        models=("7.0AT", "T202"),
        takes=WireUnit.MPH,
    ),
    Quirk(
        "reads Set Target Speed as mph; Start while running toggles pause",
        "qdomyos-zwift PR #4002 and issue #5100 (hardware.md)",
        names=("TM11GY",),
        models=("TM11GY",),
        takes=WireUnit.MPH,
        never_resend_start=True,
    ),
    Quirk(
        "reports speed in mph",
        "qdomyos-zwift PR #4364 (hardware.md)",
        names=("Bowflex T9", "BOWFLEX T9"),
        models=("T9",),
        reports=WireUnit.MPH,
    ),
    Quirk(
        "Supported Speed Range 0.6-3.8 is mph",
        "justintout/treadmill README (hardware.md)",
        names=("FS-BT-T4",),
        models=("FS-BT-T4",),
        takes=WireUnit.MPH,
    ),
    Quirk(
        "needs Request Control + Start before every speed write",
        "qdomyos-zwift forceSpeed (hardware.md)",
        names=("MyRun",),
        models=("MyRun",),
        start_before_speed=True,
    ),
    Quirk(
        "needs 100-300 ms between subscriptions",
        "qdomyos-zwift, KS-MC21 (hardware.md)",
        names=("KS-MC21",),
        models=("KS-MC21",),
        cccd_gap_s=0.2,
    ),
)


def quirks_for(name: str | None, model: str | None, table: tuple[Quirk, ...] = QUIRKS) -> Quirks:
    """The quirks of the machine that advertises ``name`` and says ``model`` in 0x2A24."""
    out = Quirks()
    for q in table:
        if not q.matches(name, model):
            continue
        out = replace(
            out,
            takes=q.takes or out.takes,
            reports=q.reports or out.reports,
            start_before_speed=out.start_before_speed or q.start_before_speed,
            never_resend_start=out.never_resend_start or q.never_resend_start,
            cccd_gap_s=max(out.cccd_gap_s, q.cccd_gap_s),
            sources=(*out.sources, f"{q.what}: {q.source}"),
        )
    return out


def with_unit(quirks: Quirks, unit: WireUnit | None) -> Quirks:
    """The URL's ``unit`` over the table's: both directions in that unit."""
    if unit is None:
        return quirks
    return replace(quirks, takes=unit, reports=unit, sources=(*quirks.sources, f"speeds in {unit.value}: the URL"))
