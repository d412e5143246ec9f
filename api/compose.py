"""The composition root: a running daemon built from its settings.

This is the one place that imports every floor. It decides the order of things: the driver
opens and its stop (S15) goes out before anything that can fail, and every signal that would end
the process stops the belt first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from retrotread.daemon.auth import load_or_create_token
from retrotread.daemon.config import Settings
from retrotread.daemon.controller import Controller
from retrotread.daemon.history import SqliteHistory
from retrotread.drivers.registry import open_driver
from retrotread.drivers.units import Speed
from retrotread.safety.rules import Rule
from retrotread.safety.supervisor import Mode, SafetyConfig

log = logging.getLogger(__name__)


def build_controller(settings: Settings, *, watchdog: Any = None, persist: bool = True) -> Controller:
    mode = Mode(settings.daemon.mode)
    safety = SafetyConfig(
        mode=mode,
        envelope=settings.safety.envelope(),
        max_incline_pct=settings.safety.max_incline_pct,
        deadmill_alert_mph=settings.safety.deadmill_alert_mph,
    )
    driver = open_driver(settings.daemon.driver)  # a bad URL fails here, before anything opens
    history = SqliteHistory(settings.daemon.state_dir / "history.sqlite3") if persist else None
    return Controller(
        driver,
        treadmill_id=settings.daemon.id,
        safety=safety,
        session_speed=Speed.from_mph(settings.session.speed_mph),
        history=history,
        watchdog=watchdog,
    )


async def serve(settings: Settings, *, banner: str | None = None, mqtt_url: str | None = None) -> None:
    """Run the daemon until SIGTERM/SIGINT: driver, safety, session timer, HTTP, MQTT."""
    from retrotread.api.app import create_app
    from retrotread.api.mqtt import MqttBridge, parse_broker_url
    from retrotread.api.server import bind_listener, build_server

    url = mqtt_url if mqtt_url is not None else settings.mqtt.url
    use_mqtt = bool(url) and url.strip().lower() != "none"
    if use_mqtt:
        parse_broker_url(url).tls_context()  # a bad URL or CA fails here, in one line, before the belt

    from retrotread.daemon.notify import SystemdNotifier

    sock = bind_listener(settings.http.listen)
    token = load_or_create_token(settings.daemon.state_dir) if settings.http.auth else None
    notifier = SystemdNotifier()
    async with build_controller(settings, watchdog=notifier.watchdog) as controller:

        @contextlib.asynccontextmanager
        async def borrowed() -> AsyncIterator[Controller]:
            yield controller

        async def ready(_controller: Controller) -> None:
            # The socket is already listening and the driver is up: HTTP answers from here on.
            notifier.ready(f"{settings.daemon.driver} in {settings.daemon.mode} mode")

        app = create_app(borrowed, token=token, public_reads=settings.http.public_reads, on_ready=ready)
        server = build_server(app)
        loop = asyncio.get_running_loop()
        stopping: set[asyncio.Task[Any]] = set()

        def on_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            log.warning("%s: stopping the belt, then exiting", name)
            task = loop.create_task(controller.estop(name.lower(), "process", Rule.S15))
            stopping.add(task)
            controller.hub.close()  # end the event streams so the server can close at once
            server.should_exit = True
            notifier.stopping()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        # The bridge leaves after the S15 stop latched (its last state says so) and before the
        # controller closes; it never waits for the broker, so it cannot delay the belt.
        async with contextlib.AsyncExitStack() as faces:
            if use_mqtt:
                await faces.enter_async_context(MqttBridge(controller, url, token=token))
            if banner:
                print(banner, flush=True)
            try:
                await server.serve(sockets=[sock])
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
                if stopping:
                    await asyncio.wait(stopping, timeout=1.0)
                notifier.close()
