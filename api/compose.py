"""The composition root: a running daemon built from its settings.

This is the one place that builds a whole process: the faces, and the controller (through
``daemon.runtime``, so no face imports ``safety``). It decides the order of things: the driver
opens and its stop (S15) goes out before anything that can fail, and every signal that would end
the process stops the belt first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

from retrotread.daemon.auth import check_state_dir, load_or_create_token
from retrotread.daemon.config import Settings, parse_listen
from retrotread.daemon.controller import Controller
from retrotread.daemon.history import History, HistoryError, MemoryHistory, SqliteHistory
from retrotread.daemon.runtime import controller_from

log = logging.getLogger(__name__)


def build_controller(settings: Settings, *, watchdog: Any = None) -> Controller:
    """A controller over the configured driver, with no history yet: nothing here touches the disk,
    so nothing here can fail after the URL parsed (the S15 stop comes first, then history)."""
    return controller_from(settings, watchdog=watchdog)


def open_history(settings: Settings) -> History:
    """The daemon's history, or (loudly) none: a full disk or a broken database must never keep the
    daemon, and so its stop, from running (S15)."""
    path = settings.daemon.state_dir / "history.sqlite3"
    try:
        return SqliteHistory.open(path)
    except HistoryError as exc:
        log.error("HISTORY OFF: %s; sessions run but are not kept until this is fixed", exc)
        return MemoryHistory()


# Signals whose default action ends the process. Each one stops the belt first (S15): a closed
# terminal (SIGHUP) or a stray `kill -USR1` must not leave a belt running. SIGKILL and SIGSTOP cannot
# be caught; the synchronous faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS) are
# the interpreter's own, and SIGPIPE and SIGXFSZ are ignored by Python already.
_NOT_FATAL = {"SIGKILL", "SIGSTOP", "SIGCHLD", "SIGCONT", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGWINCH"}
_FAULTS = {"SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT", "SIGIOT", "SIGTRAP", "SIGSYS", "SIGPIPE", "SIGXFSZ"}


def fatal_signals() -> list[int]:
    return [
        sig
        for sig in sorted(int(s) for s in signal.valid_signals())
        if _signal_name(sig) not in _NOT_FATAL and _signal_name(sig) not in _FAULTS
    ]


def exit_code_for(signum: int) -> int:
    # systemd's stop (SIGTERM) and Ctrl-C are the normal ways out; any other signal is reported.
    return 0 if signum in (signal.SIGTERM, signal.SIGINT) else 128 + signum


async def serve(settings: Settings, *, banner: str | None = None, mqtt_url: str | None = None) -> int:
    """Run the daemon until a signal (or a failure of its safety loop); returns the exit code.

    The order is the safety promise: the driver opens and its stop goes out (S15) before the state
    directory, the token, the history, the HTTP socket or the broker are touched, and every
    process-ending signal is caught from the first line on.
    """
    # FastAPI imports pydantic.v1 while it builds the routes only to refuse v1 models, which it no
    # longer supports (fastapi/_compat/shared.py); it takes an ImportError as "not a v1 model". Nothing
    # in a daemon uses v1, so it is made unimportable here: 1.4 MB and ~35 ms less at every start
    # (issue 16). Only the daemon process does this; create_app alone leaves sys.modules alone.
    sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]
    from retrotread.api.app import create_app
    from retrotread.api.server import bind_listener, build_server
    from retrotread.daemon.notify import SystemdNotifier

    url = mqtt_url if mqtt_url is not None else settings.mqtt.url
    use_mqtt = bool(url) and url.strip().lower() != "none"
    if use_mqtt:
        # aiomqtt and paho only with a broker: a daemon without one never imports them (issue 16).
        from retrotread.api.mqtt import MqttBridge, parse_broker_url

        parse_broker_url(url).tls_context()  # a bad URL or CA fails here, in one line, before the belt

    loop = asyncio.get_running_loop()
    received: list[int] = []
    stopping: set[asyncio.Task[Any]] = set()
    live: dict[str, Any] = {}  # what a signal handler must reach: the controller, then the server
    notifier = SystemdNotifier()

    def on_signal(signum: int) -> None:
        name = _signal_name(signum)
        if received:
            log.warning("%s: already stopping", name)
            return
        received.append(signum)
        log.warning("%s: stopping the belt, then exiting", name)
        controller: Controller | None = live.get("controller")
        if controller is not None:
            task = loop.create_task(controller.stop_for_signal(name))
            stopping.add(task)
            controller.hub.close()  # end the event streams so the server can close at once
        if (server := live.get("server")) is not None:
            server.should_exit = True
        notifier.stopping()

    signals = fatal_signals()
    for sig in signals:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (RuntimeError, ValueError, OSError) as exc:  # kept by the host (valgrind keeps SIGRTMAX)
            log.warning("%s cannot be caught here (%s); not watched", _signal_name(sig), exc)
    try:
        async with build_controller(settings, watchdog=notifier.watchdog) as controller:
            # The driver is open and its stop is on the wire (S15). From here on, anything may fail.
            live["controller"] = controller
            if received:
                return exit_code_for(received[0])  # leaving the block stops the belt again
            check_state_dir(settings.daemon.state_dir)
            token = load_or_create_token(settings.daemon.state_dir) if settings.http.auth else None
            controller.attach_history(open_history(settings))
            sock = bind_listener(settings.http.listen)

            @contextlib.asynccontextmanager
            async def borrowed() -> AsyncIterator[Controller]:
                yield controller

            async def ready(_controller: Controller) -> None:
                # The socket is already listening and the driver is up: HTTP answers from here on.
                notifier.ready(f"{settings.daemon.driver} in {settings.daemon.mode} mode")

            app = create_app(
                borrowed,
                token=token,
                public_reads=settings.http.public_reads,
                on_ready=ready,
                allowed_hosts=settings.http.allowed_hosts,
            )
            server = build_server(app)
            live["server"] = server

            async def watch_failure() -> None:
                # The safety loop died (it has latched and written its stop): leave, non-zero.
                await controller.failed.wait()
                log.critical("safety loop failed: %s; the belt was stopped; exiting", controller.failure)
                server.should_exit = True
                notifier.stopping()

            watcher = loop.create_task(watch_failure(), name="failure watch")
            # The bridge leaves after the S15 stop latched (its last state says so) and before the
            # controller closes; it never waits for the broker, so it cannot delay the belt.
            async with contextlib.AsyncExitStack() as faces:
                if use_mqtt:
                    bridge = MqttBridge(
                        controller,
                        url,
                        control=settings.mqtt.control,
                        telemetry_hz=settings.mqtt.telemetry_hz,
                        speed_unit=settings.mqtt.speed_unit,
                        dashboard_url=dashboard_url(settings.http.listen),
                    )
                    await faces.enter_async_context(bridge)
                if banner:
                    print(banner, flush=True)
                try:
                    await server.serve(sockets=[sock])
                finally:
                    watcher.cancel()
                    if stopping:
                        await asyncio.wait(stopping, timeout=1.0)
            if controller.failed.is_set():
                return 70  # EX_SOFTWARE: under systemd, Restart= brings up a fresh daemon
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        notifier.close()
    return exit_code_for(received[0]) if received else 0


def dashboard_url(listen: str) -> str:
    """Where a person on the network finds the dashboard (Home Assistant's configuration_url)."""
    host, port = parse_listen(listen)
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
