"""Building a controller from settings: what the composition root (``api/compose.py``) asks of
``daemon/``, so that no face imports ``safety`` (architecture.md, floors).

Nothing here touches the disk, so nothing here can fail after the driver URL parsed: the S15 stop
comes first, then the history (``api/compose.py`` keeps that order).
"""

from __future__ import annotations

from collections.abc import Callable

from retrotread.daemon.config import Settings
from retrotread.daemon.controller import Controller
from retrotread.drivers.registry import open_driver
from retrotread.drivers.units import Speed
from retrotread.safety.supervisor import Mode, SafetyConfig


def safety_from(settings: Settings) -> SafetyConfig:
    return SafetyConfig(
        mode=Mode(settings.daemon.mode),
        envelope=settings.safety.envelope(),
        max_incline_pct=settings.safety.max_incline_pct,
        deadmill_alert_mph=settings.safety.deadmill_alert_mph,
    )


def controller_from(settings: Settings, *, watchdog: Callable[[], None] | None = None) -> Controller:
    """A controller over the configured driver, with no history yet."""
    safety = safety_from(settings)
    driver = open_driver(settings.daemon.driver)  # a bad URL fails here, before anything opens
    return Controller(
        driver,
        treadmill_id=settings.daemon.id,
        safety=safety,
        session_speed=Speed.from_mph(settings.session.speed_mph),
        watchdog=watchdog,
        cues=settings.cues.settings(reverse=safety.mode is Mode.REVERSE),
    )
