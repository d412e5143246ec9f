"""What stands in front of the HTTP endpoints: the stop first, then bounds on everything else.

A raw ASGI middleware, because FastAPI reads and parses a body before it runs a dependency:

* ``POST /api/v1/estop`` and ``POST /api/v1/belt/stop`` stop the belt BEFORE anything is read or
  checked (S5, S16): whatever the body, content type, size, encoding, token or Host header. Only
  then is a small bounded part of the body read (the rest discarded unbuffered) for a reason.
* every other request: the Host header is one of ours (DNS rebinding), a declared body over the
  limit is 413 before it is read, the token is checked before the body is read (401 first), and a
  chunked body is counted as it arrives; a body that dribbles is cut off (408).
* at most ``max_streams`` event streams (503 past it); file descriptors are kept for the device.
* every response carries a CSP, frame and sniffing headers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
import resource
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException

from retrotread.daemon.auth import LiveToken
from retrotread.daemon.commands import STOP_REASON_MAX, EStopCommand, Outcome, StopCommand

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_LIMIT = 64 * 1024
"""Every body but a stop's: the largest real one (a session plan) is under 200 bytes."""
STOP_BODY_READ = 4 * 1024
"""What a stop reads of its body for a reason; the stop itself never waits for it."""
STOP_BODY_DRAIN = 64 * 1024
"""What a stop discards after that before it answers and closes (a client still sending would get a reset)."""
STOP_BODY_WITHIN_S = 2.0
BODY_WITHIN_S = 10.0
"""A body must arrive within this (slow POST): 408 after it."""
STREAM_BACKLOG = 64
"""Events a reader may fall behind by before the oldest are dropped (state/timer only coalesce)."""
STREAM_INTERVAL_S = 0.1
STREAM_PING_S = 15.0
"""The longest an event stream stays silent: a comment line keeps proxies from closing it."""
STREAM_PACED_ABOVE = 8
"""With more event streams than this, each writes at most once per jittered interval (so 500
readers never burst before a stop); with this many or fewer, each writes as updates come, in the
loop iteration the sample already woke (no timer of its own)."""
FD_RESERVE = 64
"""File descriptors kept for the device, the broker, the history database, logs and the loop."""

STOP_PATHS = {"/api/v1/estop": "estop", "/api/v1/belt/stop": "stop"}
STREAM_PATHS = frozenset({"/api/v1/events"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})
DOC_PATHS = ("/docs", "/redoc")
# img-src data: for the page's empty favicon (``href="data:,"``), which keeps the browser from asking for one.
CSP = (
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


@dataclass(frozen=True, slots=True)
class FdBudget:
    nofile: int
    connections: int
    streams: int


def fd_budget() -> FdBudget:
    """Connection and stream caps from RLIMIT_NOFILE, leaving ``FD_RESERVE`` for everything else."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = soft if soft != resource.RLIM_INFINITY else 65536
    connections = max(16, min(nofile - FD_RESERVE, 4096))
    return FdBudget(nofile, connections, max(4, min(connections // 2, 1000)))


def loopback(host: str) -> bool:
    """127/8, ::1 and the v4-mapped ::ffff:127.x that a ``[::]`` listener reports for local clients."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def host_name(header: str) -> str:
    """The name part of a Host header: ``[::1]:8000`` → ``::1``, ``Example.COM.:80`` → ``example.com``."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".") if value not in LOOPBACK_NAMES else value


def _same_address(a: str, b: str) -> bool:
    try:
        x, y = ipaddress.ip_address(a.split("%", 1)[0]), ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(x, ipaddress.IPv6Address) and x.ipv4_mapped is not None:
        x = x.ipv4_mapped
    if isinstance(y, ipaddress.IPv6Address) and y.ipv4_mapped is not None:
        y = y.ipv4_mapped
    return x == y


class BodyTooLarge(StarletteHTTPException):
    """Raised from inside ``receive``: FastAPI lets an HTTPException through its body parsing."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"body over {limit} bytes")


class BodyTooSlow(StarletteHTTPException):
    def __init__(self, within: float) -> None:
        super().__init__(408, f"body not received within {within:g} s")


def clean_text(text: str) -> str:
    """A string that encodes as UTF-8: lone surrogates (from JSON ``\\ud800``) become U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text


def stop_reason(body: bytes) -> str | None:
    """``{"reason": str}`` read leniently: anything else is ``unreadable``; an empty body is None."""
    if not body.strip():
        return None
    try:
        data = json.loads(body.decode("utf-8", "replace"))
    except ValueError:  # also RecursionError's sibling: json raises RecursionError, handled below
        return "unreadable"
    except RecursionError:
        return "unreadable"
    if isinstance(data, dict) and isinstance(data.get("reason"), str) and data["reason"].strip():
        return clean_text(data["reason"].strip())[:STOP_REASON_MAX]
    return "unreadable"


class HttpGuard:
    """The middleware; ``controller()`` gives the running controller (the app's lifespan made it)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        controller: Callable[[], Any],
        token: str | LiveToken | None,
        public_reads: bool = False,
        allowed_hosts: Iterable[str] = (),
        body_limit: int = BODY_LIMIT,
        max_streams: int | None = None,
    ) -> None:
        self.app = app
        self.controller = controller
        # A token read from its file follows the file (issue 12: --rotate works without a restart).
        self.token = token if token is None or isinstance(token, LiveToken) else LiveToken(token)
        self.public_reads = public_reads
        self.allowed_hosts = frozenset(host_name(h) for h in allowed_hosts if h.strip())
        self.body_limit = body_limit
        self.max_streams = max_streams if max_streams is not None else fd_budget().streams
        self.streams = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(scope, send)
        method, path = scope["method"], scope["path"]
        if method == "POST" and path in STOP_PATHS:
            # S5/S16 outrank every check below: a stop from a wrong Host, without a token or
            # with a body nobody can read is still a stop. It can only make the belt safer.
            await self._stop(STOP_PATHS[path], scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self._refusal(scope, method, headers)
        if refusal is not None:
            status, error, extra = refusal
            await _json(send, status, {"error": error, "rule": None}, extra)
            return
        if path in STREAM_PATHS and method == "GET":
            if self.streams >= self.max_streams:
                await _json(send, 503, {"error": f"too many event streams (at most {self.max_streams})", "rule": None})
                return
            if not self._may_read(scope, headers):
                await _json(
                    send, 401, {"error": "reads from other hosts need 'Authorization: Bearer TOKEN'", "rule": None}
                )
                return
            self.streams += 1
            try:
                await self._stream(receive, send)
            finally:
                self.streams -= 1
            return
        await self._bounded(scope, receive, send)

    def _refusal(
        self, scope: Scope, method: str, headers: dict[bytes, bytes]
    ) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        host = headers.get(b"host", b"").decode("latin-1")
        if not self._host_ok(host, scope):
            return 421, f"unknown Host {host[:80]!r}; add it to http.allowed_hosts", [(b"connection", b"close")]
        length = headers.get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                return 400, "Content-Length is not a number", [(b"connection", b"close")]
            if int(length) > self.body_limit:
                return 413, f"body over {self.body_limit} bytes", [(b"connection", b"close")]
        if self.token is not None and method not in READ_METHODS:
            auth = headers.get(b"authorization", b"")
            scheme, _, given = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not self.token.matches(given.strip()):
                return (
                    401,
                    "control calls need 'Authorization: Bearer TOKEN'",
                    [(b"www-authenticate", b"Bearer"), (b"connection", b"close")],
                )
        return None

    def _may_read(self, scope: Scope, headers: dict[bytes, bytes]) -> bool:
        # The same rule as the app's ``may_read``: free on loopback, elsewhere as configured.
        client = scope.get("client")
        if self.token is None or self.public_reads or (client is not None and loopback(str(client[0]))):
            return True
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and self.token.matches(given.strip())

    async def _stream(self, receive: Receive, send: Send) -> None:
        """``GET /api/v1/events``: one task per reader, frames encoded once per update, batched.

        A reader waits on its subscription alone (no timeout per wait, no sleep between writes
        while there are few readers): between updates it costs nothing, and its write happens in
        the loop iteration the sample woke anyway. The keep-alive is one timer per half ping
        interval. Past ``STREAM_PACED_ABOVE`` readers, each also sleeps a jittered interval
        after a write, so hundreds of them spread out instead of writing all at once.

        Written here rather than with FastAPI's EventSourceResponse (three tasks and two memory
        streams per reader): at 500 readers that machinery held the HTTP stop back by 0.4 s.
        uvicorn's ``send`` does not fail once a client is gone, so a second task waits for the
        disconnect and ends the subscription: nothing lingers in the hub.
        """
        hub = self.controller().hub
        sub = hub.subscribe(maxsize=STREAM_BACKLOG, coalesce=True)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )

        async def hang_up() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            sub.close()

        watcher = asyncio.create_task(hang_up())
        loop = asyncio.get_running_loop()
        wrote = True  # since the last keep-alive check
        ping_due = False
        check: asyncio.TimerHandle | None = None

        def keep_alive() -> None:
            # One timer per stream every half ping interval, not one per update: a stream that
            # wrote nothing since the last check gets a ping, so it is never silent past STREAM_PING_S.
            nonlocal wrote, ping_due, check
            if not wrote:
                ping_due = True
                sub.nudge()
            wrote = False
            check = loop.call_later(STREAM_PING_S / 2, keep_alive)

        check = loop.call_later(STREAM_PING_S / 2, keep_alive)
        try:
            while True:
                await sub.ready()
                batch = sub.take_all()
                if batch:
                    frames = b"".join(u.memo("sse", sse_frame) for u in batch)
                elif sub.closed:
                    break
                elif ping_due:
                    frames = b": ping\n\n"
                else:
                    continue
                ping_due, wrote = False, True
                await send({"type": "http.response.body", "body": frames, "more_body": True})
                if self.streams > STREAM_PACED_ABOVE:
                    # Updates that arrive meanwhile coalesce (latest state/timer): a reader costs
                    # at most one write per interval, however fast the belt reports. The jitter
                    # spreads 500 readers over the interval, so no burst of writes stands before a stop.
                    await asyncio.sleep(STREAM_INTERVAL_S * (1 + random.random()))
        finally:
            if check is not None:
                check.cancel()
            watcher.cancel()
            hub.unsubscribe(sub)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _host_ok(self, host: str, scope: Scope) -> bool:
        if not host:
            return True  # HTTP/1.0 without Host: no browser sends that, so no rebinding either
        name = host_name(host)
        if loopback(name) or name in self.allowed_hosts:
            return True
        server = scope.get("server")
        # The address the client connected to: a LAN IP typed into the address bar. A
        # rebinding page always comes with a name, never with our own address.
        return server is not None and _same_address(name, str(server[0]))

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BODY_WITHIN_S
        limit = self.body_limit

        async def counted() -> Message:
            nonlocal seen
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow(BODY_WITHIN_S) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)  # chunked: counted as it arrives, never buffered past it
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except (BodyTooLarge, BodyTooSlow) as exc:
            if started:
                raise
            await _json(send, exc.status_code, {"error": exc.detail, "rule": None}, [(b"connection", b"close")])

    async def _stop(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        controller = self.controller()
        try:
            # Before a byte of the body is read (S5): the command takes nothing from it.
            outcome: Outcome = await controller.execute(EStopCommand() if kind == "estop" else StopCommand(), "http")
        except Exception:
            log.exception("HTTP %s failed", kind)
            await _json(send, 503, {"error": f"{kind} could not be sent; use the treadmill's key", "rule": "S5"})
            return
        body, complete = await _read_some(receive)
        reason = stop_reason(body)
        if kind == "estop" and reason is not None:
            try:
                controller.note_stop_reason(reason)
            except Exception:
                log.exception("noting the stop reason failed")
        extra = [] if complete else [(b"connection", b"close")]
        if outcome.ok:
            await _json(send, 202, {"ok": True, "detail": ""}, extra)
        else:
            await _json(send, http_status(outcome), {"error": outcome.error, "rule": outcome.rule}, extra)


def http_status(outcome: Outcome) -> int:
    """A command's outcome on HTTP: carried out 202, malformed 422, device unreachable 503, refused 409."""
    if outcome.ok:
        return 202
    if outcome.invalid:
        return 422
    return 503 if outcome.unavailable else 409


async def _read_some(receive: Receive) -> tuple[bytes, bool]:
    """At most ``STOP_BODY_READ`` bytes kept; up to ``STOP_BODY_DRAIN`` more read and dropped.

    Returns the kept bytes and whether the whole body was read (else the answer closes the
    connection: nothing more of it is ever read).
    """
    kept = bytearray()
    seen = 0
    try:
        async with asyncio.timeout(STOP_BODY_WITHIN_S):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return bytes(kept), False
                chunk = message.get("body", b"")
                seen += len(chunk)
                if len(kept) < STOP_BODY_READ:
                    kept += chunk[: STOP_BODY_READ - len(kept)]
                if not message.get("more_body", False):
                    return bytes(kept), True
                if seen > STOP_BODY_READ + STOP_BODY_DRAIN:
                    return bytes(kept), False
    except TimeoutError:
        return bytes(kept), False


def sse_frame(update: Any) -> bytes:
    """``event: KIND`` and the JSON as ``data:`` lines (a newline in a payload starts another line)."""
    data = "".join(f"data: {line}\n" for line in update.json().split("\n"))
    return f"event: {update.kind}\n{data}\n".encode("utf-8", "replace")


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", ())}


def _with_security_headers(scope: Scope, send: Send) -> Send:
    docs = scope["path"].startswith(DOC_PATHS)

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            names = {k.lower() for k, _ in headers}
            headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
            if not docs and b"content-security-policy" not in names:
                # The dashboard is one page with its own files: no inline script, no other host.
                # /docs (FastAPI's Swagger UI) loads its script from a CDN: it keeps the rest.
                headers.append((b"content-security-policy", CSP.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


async def _json(send: Send, status: int, content: dict[str, Any], extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(content, ensure_ascii=True).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
