"""The HTTP server the daemon runs: its listening socket and uvicorn's settings.

Only transport lives here (sockets, limits, timeouts); the endpoints are ``api.app``'s, and the
order of things at start and stop is ``api.compose``'s.

uvicorn's h11 protocol has a keep-alive timeout but none for a request head: its keep-alive
timer starts only after a response, and any byte received cancels it, so a client that connects
and dribbles a header (slowloris) holds its connection and file descriptor forever.
``GuardedH11Protocol`` adds the missing deadline and a connection cap from RLIMIT_NOFILE; at the
cap a new connection evicts the one that has waited longest without sending a request, so a
flood of idle connections can never lock the stop out (S5).

uvicorn's own ``Server.main_loop`` wakes ten times a second to look at ``should_exit`` and, every
tenth time, to refresh the Date header: on a small board that is a quarter of the daemon's idle
wake-ups. ``Server`` waits on an event instead, and ``FreshDateState`` makes the Date header when a
response asks for it (once per second at most), so an idle daemon's HTTP side never wakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from retrotread.api.http_guard import fd_budget, loopback
from retrotread.daemon.config import parse_listen
from retrotread.drivers.errors import ConfigError

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 5.0
"""A request head (request line and headers) must be complete this long after the connection
opens or the previous response ends."""
KEEP_ALIVE_S = 5.0
BACKLOG = 1024

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b'content-length: 42\r\n\r\n{"error":"too many connections","rule":null}'
)


class ListenError(ConfigError):
    """The HTTP address cannot be listened on."""


def bind_listener(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the protocol
    # says TCP; with 0 Nagle holds small answers (an estop's 202) back up to 40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"cannot listen on {listen}: {exc.strerror}; is another retrotread running? "
            "(choose another with --http HOST:PORT)"
        ) from None
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    if beyond_loopback(listen):
        log.warning(
            "HTTP listens on %s, beyond loopback: anyone on that network can reach it "
            "(the stop needs no token, S16; reads need it unless http.public_reads)",
            listen,
        )
    return sock


def beyond_loopback(listen: str) -> bool:
    """``0.0.0.0``, ``[::]``, a LAN address or a name other than localhost."""
    return not loopback(parse_listen(listen)[0])


class GuardedH11Protocol(H11Protocol):
    """h11 with a request-head deadline and a connection cap that evicts the idlest."""

    max_connections: ClassVar[int] = fd_budget().connections
    header_timeout: ClassVar[float] = HEADER_TIMEOUT_S

    _head_timer: asyncio.TimerHandle | None = None
    _waiting_since: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            victim = self._idlest()
            if victim is None:
                log.warning("HTTP: %d connections, all busy: refusing one", len(self.connections))
                transport.write(_BUSY)
                transport.close()
                return
            victim._drop()
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head()  # the head is in: the body and the app have their own bounds

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head()

    def _arm_head(self) -> None:
        if self._head_timer is None:
            self._waiting_since = self.loop.time()
            self._head_timer = self.loop.call_later(self.header_timeout, self._drop)

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = None
        self._waiting_since = None

    def _drop(self) -> None:
        self._disarm_head()
        if not self.transport.is_closing():
            self.transport.close()

    def _idlest(self) -> GuardedH11Protocol | None:
        waiting = [
            c
            for c in self.connections
            if c is not self and isinstance(c, GuardedH11Protocol) and c._waiting_since is not None
        ]
        return min(waiting, key=lambda c: c._waiting_since or 0.0, default=None)


class FreshDateState(ServerState):
    """uvicorn's shared server state, with ``default_headers`` made when a response reads them.

    uvicorn refreshes the Date header from its 10 Hz main loop, so without that loop it would
    freeze at start-up. Here every response reads the headers, and they are remade when the
    second has changed: the Date is always the current second (uvicorn's could lag by up to
    one), and nothing runs while nobody asks.
    """

    clock: Callable[[], float] = staticmethod(time.time)
    """The wall clock the Date header reads (a test sets its own)."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._config = config
        self._second = -1
        self._headers: list[tuple[bytes, bytes]] = []
        super().__init__()

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        now = int(self.clock())
        if now != self._second and self._config.loaded:
            self._second = now
            date = [(b"date", formatdate(now, usegmt=True).encode())] if self._config.date_header else []
            self._headers = date + self._config.encoded_headers
        return self._headers

    @default_headers.setter
    def default_headers(self, value: list[tuple[bytes, bytes]]) -> None:
        # uvicorn's own tick (when ``Server`` falls back to it) and ``ServerState.__init__`` set it.
        self._headers = value


class Server(uvicorn.Server):
    """uvicorn, minus its own signal handlers (ours stop the belt first, S15) and its 10 Hz poll.

    ``should_exit`` is a property: setting it wakes ``main_loop`` at once, from the loop (our
    signal handlers, the failure watch) or from any other thread. Connection limits and timeouts
    are the protocol's own timers and never needed the poll; only ``limit_max_requests`` and
    ``callback_notify`` (which we do not use) do, so with either set uvicorn's loop runs as before.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        self._exit = False
        self._exit_wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        super().__init__(config)
        self.server_state = FreshDateState(config)

    @property
    def should_exit(self) -> bool:
        return self._exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._exit = value
        wake, loop = self._exit_wake, self._loop
        if value and wake is not None and loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                wake.set()
            else:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to wake
                    loop.call_soon_threadsafe(wake.set)

    async def main_loop(self) -> None:
        if self.config.limit_max_requests is not None or self.config.callback_notify is not None:
            await super().main_loop()  # those are checked by uvicorn's tick
            return
        self._loop = asyncio.get_running_loop()
        self._exit_wake = asyncio.Event()
        try:
            if not self._exit:
                await self._exit_wake.wait()
        finally:
            self._exit_wake = None

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def build_server(app: Any) -> Server:
    config = uvicorn.Config(
        app,
        http=GuardedH11Protocol,
        # No WebSocket endpoint: "auto" would import the websockets package (3 MB) for nothing,
        # and an Upgrade request is answered as plain HTTP.
        ws="none",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        timeout_keep_alive=int(KEEP_ALIVE_S),
        backlog=BACKLOG,
        lifespan="on",
    )
    return Server(config)
