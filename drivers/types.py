"""What a driver reports: belt samples, device events, and what the device can do.

Frozen dataclasses, no I/O. Times are monotonic seconds (``time.monotonic()`` or the event loop's
clock, which is the same clock); wall-clock time is added by the daemon for display only (S17).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from retrotread.drivers.units import Speed, SpeedGrid

RESPONSE_S = 5.0
"""safety.md S7: a belt has this long after a change (a start included) to come within 0.1 mph of
its command, or the supervisor trips ``no-response``. Here, at the bottom floor, so a driver that
must wait during a start (FTMS) sizes its wait by the same number the supervisor enforces."""


@dataclass(frozen=True, slots=True)
class BeltSample:
    """One measurement of the belt."""

    t: float
    """Monotonic time the sample was taken, in seconds."""
    speed: Speed
    incline_pct: float | None = None
    distance_m: float | None = None
    """Distance since the device started counting, if it reports one (a driver may compute it)."""
    span_s: float | None = None
    """The time the distance since the sample before was measured over, ending at ``t``, when the
    device says (a pulse board's own clock): a reading that arrives late carries movement from before
    it arrived, which a set that began meanwhile must not count as its own."""


class DeviceEventKind(Enum):
    """Things a device tells us besides samples (rules S9, S10, S11)."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    STOPPED_BY_USER = "stopped_by_user"  # FTMS status 0x02 (stop), console stop key
    PAUSED_BY_USER = "paused_by_user"  # FTMS status 0x02 (pause)
    SAFETY_KEY = "safety_key"  # FTMS status 0x03; the tether was pulled
    CONTROL_LOST = "control_lost"  # FTMS status 0xFF
    STARTED_BY_USER = "started_by_user"  # FTMS status 0x04, console start key
    IDLE = "idle"  # CSAFE state Idle/Finished
    ERROR = "error"  # CSAFE state Error
    REJECTED = "rejected"  # a command the device refused or never answered
    DEVICE_RESET = "device_reset"  # the device restarted (counters went back)


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    t: float
    kind: DeviceEventKind
    detail: str = ""


Update = BeltSample | DeviceEvent
"""What ``Driver.samples()`` yields: samples, with the device events between them, in order."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the machine says about itself (hardware.md): FTMS Device Information, CSAFE GetVersion.

    Every field is ``None`` where the machine does not answer. ``units`` is the unit system the
    machine says it uses (``mph`` or ``km/h``), ``units_warning`` why that disagrees with the URL.
    The counters are a gym operator's (hardware.md "What a gym operator reads from CSAFE").
    """

    maker: str | None = None
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None
    units: str | None = None
    units_warning: str | None = None
    hours_of_use: float | None = None
    odometer_m: float | None = None
    error_code: int | None = None
    service_code: int | None = None
    quirks: tuple[str, ...] = ()
    """The quirk-table entries applied to this machine, each naming its source."""

    def to_json(self) -> dict[str, object]:
        """Plain JSON for snapshots, MQTT attributes and doctor (``None`` fields left out)."""
        out: dict[str, object] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value is not None and value != ():
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a device can do, as it reports it (FTMS 0x2AD4/0x2AD5) or as its driver knows it."""

    can_drive: bool
    """False for a belt the daemon can only measure (manual treadmill, pulse sensor)."""
    speed_grid: SpeedGrid = field(default_factory=SpeedGrid)
    """The settable speeds: unit, increment and range in one value (FTMS 0x2AD4, CSAFE's unit)."""
    incline_min_pct: float = 0.0
    incline_max_pct: float = 0.0
    incline_increment_pct: float = 0.1
    nominal_period_s: float = 0.1
    """How often the driver produces a sample when all is well (rule S8 scales on it)."""

    @property
    def speed_min(self) -> Speed:
        return self.speed_grid.minimum

    @property
    def speed_max(self) -> Speed:
        return self.speed_grid.maximum
