"""The HTTP server the daemon runs: its listening socket and uvicorn's settings.

Only transport lives here (sockets, limits, timeouts); the endpoints are ``api.app``'s, and the
order of things at start and stop is ``api.compose``'s.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import uvicorn

from retrotread.daemon.config import parse_listen
from retrotread.drivers.errors import ConfigError


class ListenError(ConfigError):
    """The HTTP address cannot be listened on."""


def bind_listener(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"cannot listen on {listen}: {exc.strerror}; is another retrotread running? "
            "(choose another with --http HOST:PORT)"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Server(uvicorn.Server):
    """uvicorn, minus its own signal handlers: ours stop the belt first (S15)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def build_server(app: Any) -> Server:
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1, lifespan="on")
    return Server(config)
