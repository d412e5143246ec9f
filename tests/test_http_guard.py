"""Issue 10, the HTTP face: bounded input and connections, stop first, no 5xx, hygiene.

The daemon's HTTP stack in a thread: ``bind_listener`` + ``build_server`` + ``create_app`` on a
simulated belt, as ``api.compose`` puts them together, on a loop of its own so synchronous tests
(Hypothesis, raw sockets, hundreds of connections) can talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from helpers import free_port

from retrotread.api import http_guard
from retrotread.api.app import create_app
from retrotread.api.http_guard import loopback
from retrotread.api.server import GuardedH11Protocol, Server, bind_listener, build_server
from retrotread.daemon.controller import Controller
from retrotread.daemon.hub import Hub
from retrotread.drivers import open_driver
from retrotread.safety import Mode, SafetyConfig


@dataclass
class Served:
    url: str
    port: int
    app: Any
    server: Server
    loop: asyncio.AbstractEventLoop

    @property
    def controller(self) -> Controller:
        controller: Controller = self.app.state.controller
        return controller

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop and return its result."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)


@contextlib.contextmanager
def served(
    driver: str = "sim://motorized?rate_hz=20",
    *,
    token: str | None = None,
    protocol: type[Any] | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    **app_options: Any,
) -> Iterator[Served]:
    port = free_port()
    sock = bind_listener(f"127.0.0.1:{port}")
    app = create_app(
        lambda: Controller(open_driver(driver), treadmill_id="test", safety=SafetyConfig(mode=Mode.REVERSE)),
        token=token,
        **app_options,
    )
    server = build_server(app)
    if protocol is not None:
        server.config.http = protocol
    loop = loop_factory()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(sockets=[sock]),), daemon=True)
    thread.start()
    try:
        started = threading.Event()

        def poll() -> None:
            if server.started:
                started.set()
            else:
                loop.call_later(0.01, poll)

        loop.call_soon_threadsafe(poll)
        assert started.wait(10), "server did not start"
        yield Served(f"http://127.0.0.1:{port}", port, app, server, loop)
    finally:

        def stop() -> None:
            app.state.controller.hub.close()
            server.should_exit = True

        loop.call_soon_threadsafe(stop)
        thread.join(10)
        loop.close()
        sock.close()


# --- helpers ---------------------------------------------------------------------------------


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def answer_of(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response read off a raw socket (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def request(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    with connect(port) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body)
        return answer_of(sock)


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def latched(s: Served) -> bool:
    return bool(s.controller.snapshot().stop.latched)


STOP_BODIES: list[tuple[str | None, bytes]] = [
    ("text/plain", b"stop"),
    ("application/json", b"{"),
    ("application/json", b"[]"),
    ("application/json", b'{"reason": 5}'),
    ("application/json", b'{"reason": "' + b"r" * 300 + b'"}'),
    ("application/json", b'{"reason": "x", "extra": 1}'),
    ("application/x-www-form-urlencoded", b"reason=stop"),
    (None, b'{"reason": "no content type"}'),
    ("application/json", b'{"reason": "\\ud800"}'),
    ("application/json", b'{"reason": "\xff\xfe"}'),
    ("application/json", b"[" * 100_000 + b"]" * 100_000),
    ("application/json", b'{"reason": "' + b"m" * (2 * 1024 * 1024) + b'"}'),
]


# --- stop first --------------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "body"), STOP_BODIES, ids=range(len(STOP_BODIES)))
def test_estop_with_any_body_is_202_and_latched(content_type: str | None, body: bytes) -> None:
    with served() as s:
        assert not latched(s)
        headers = {"content-type": content_type} if content_type else {}
        with httpx.Client(base_url=s.url, timeout=10) as client:
            try:
                resp = client.post("/api/v1/estop", content=body, headers=headers)
            except httpx.TransportError:
                assert len(body) > 64 * 1024  # only a body far past what is read may be cut off
            else:
                assert resp.status_code == 202, resp.text
                assert resp.json() == {"ok": True, "detail": ""}
        assert latched(s)


def test_estop_is_latched_before_its_body_arrives() -> None:
    """Headers only, the body never sent: the stop is already taken (and answered after 2 s)."""
    with served() as s, connect(s.port) as sock:
        sock.sendall(b"POST /api/v1/estop HTTP/1.1\r\nhost: x\r\ncontent-length: 500000000\r\n\r\n{")
        deadline = time.monotonic() + 10
        while not latched(s):
            assert time.monotonic() < deadline, "no stop while the body is still coming"
            time.sleep(0.01)
        status, headers, _ = answer_of(sock)
        assert status == 202 and headers.get("connection") == "close"


def test_estop_reason_is_noted_when_the_controller_can() -> None:
    with served() as s:
        noted: list[str] = []
        s.controller.note_stop_reason = noted.append  # type: ignore[attr-defined]
        with httpx.Client(base_url=s.url, timeout=10) as client:
            assert client.post("/api/v1/estop", json={"reason": "tripped"}).status_code == 202
            assert (
                client.post("/api/v1/estop", content=b"\xff", headers={"content-type": "text/plain"}).status_code == 202
            )
            assert client.post("/api/v1/estop").status_code == 202
        assert noted == ["tripped", "unreadable"]


def test_belt_stop_with_a_body_and_a_wrong_host_still_stops() -> None:
    with served(token="sekrit") as s:
        status, _, body = request(
            s.port, "POST /api/v1/belt/stop HTTP/1.1\nhost: evil.example\ncontent-length: 3\n", b"abc"
        )
        assert status == 202, body
        status, _, _ = request(s.port, "POST /api/v1/estop HTTP/1.1\nhost: evil.example\ncontent-length: 0\n")
        assert status == 202 and latched(s)


# --- bounded input -----------------------------------------------------------------------------


def test_a_huge_declared_body_is_413_before_it_is_sent() -> None:
    with served() as s:
        status, headers, body = request(
            s.port,
            "POST /api/v1/belt/start HTTP/1.1\nhost: localhost\ncontent-type: application/json\n"
            "content-length: 500000000\n",
        )
        assert status == 413 and headers.get("connection") == "close", body


def test_a_chunked_body_is_counted_as_it_arrives() -> None:
    with served() as s, connect(s.port) as sock:
        sock.sendall(
            b"POST /api/v1/session HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        chunk = b"a" * 16384
        with contextlib.suppress(OSError):
            for _ in range(8):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, _, body = answer_of(sock)
        assert status == 413, body


def test_the_token_is_checked_before_the_body_is_read() -> None:
    """No body is ever sent: a 401 can only come before it is read."""
    with served(token="sekrit") as s:
        status, headers, _ = request(
            s.port, "POST /api/v1/belt/start HTTP/1.1\nhost: localhost\ncontent-length: 60000\n"
        )
        assert status == 401 and headers.get("www-authenticate") == "Bearer"


def test_a_dribbled_body_is_cut_off() -> None:
    with served() as s, connect(s.port) as sock:
        sock.sendall(b"POST /api/v1/belt/start HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\n{")
        sock.settimeout(30)  # the server's bound on a body is 10 s
        status, _, _ = answer_of(sock)
        assert status == 408


@pytest.mark.parametrize(
    ("path", "body", "rule"),
    [
        ("/api/v1/belt/start", b'{"speed_mph": ' + b"9" * 400 + b"}", "S1"),
        ("/api/v1/belt/speed", b'{"speed_mph": -' + b"9" * 400 + b"}", "S1"),
        ("/api/v1/belt/incline", b'{"incline_pct": ' + b"9" * 400 + b"}", None),
        ("/api/v1/session", b'{"speed_mph": ' + b"9" * 400 + b"}", "S1"),
        ("/api/v1/session", b'{"plan": "\\ud800"}', None),
        ("/api/v1/belt/start", b'{"speed_mph": "\\udfff"}', "S1"),
        ("/api/v1/session", b'{"plan": "3x60s", "\\ud800": 1}', None),
    ],
)
def test_huge_numbers_and_lone_surrogates_are_422(path: str, body: bytes, rule: str | None) -> None:
    with served() as s, httpx.Client(base_url=s.url, timeout=10) as client:
        resp = client.post(path, content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"] and resp.json()["rule"] == rule


# --- connections ---------------------------------------------------------------------------------


def test_slowloris_connections_are_dropped_and_the_stop_gets_through() -> None:
    """300 connections dribbling a request head: all closed by the server; a stop still works."""
    with served() as s:
        socks = [connect(s.port) for _ in range(300)]
        try:
            for sock in socks:
                sock.sendall(b"GET /api/v1/state HTTP/1.1\r\nhost: local")
            with httpx.Client(base_url=s.url, timeout=10) as client:
                assert client.post("/api/v1/estop").status_code == 202
            # The head deadline is 5 s; every one must be gone well within 20 s.
            deadline = time.monotonic() + 20
            for sock in socks:
                assert closed_by_peer(sock, max(0.1, deadline - time.monotonic())), "a slow client was kept"
        finally:
            for sock in socks:
                sock.close()
        assert latched(s)


class _Tiny(GuardedH11Protocol):
    max_connections = 20


def test_at_the_connection_cap_the_idlest_is_evicted_for_a_new_client() -> None:
    with served(protocol=_Tiny) as s:
        idle = [connect(s.port) for _ in range(20)]
        try:
            with httpx.Client(base_url=s.url, timeout=10) as client:
                assert client.post("/api/v1/estop").status_code == 202
            assert closed_by_peer(idle[0], 10), "the oldest idle connection was not evicted"
        finally:
            for sock in idle:
                sock.close()


def test_event_streams_are_capped_and_released_when_clients_go() -> None:
    with served(max_streams=3) as s:
        baseline = s.call(lambda: s.controller.hub.subscribers)
        streams = []
        for _ in range(3):
            sock = connect(s.port)
            sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nhost: localhost\r\n\r\n")
            status, _, _ = answer_of(sock)
            assert status == 200
            streams.append(sock)
        status, _, body = request(s.port, "GET /api/v1/events HTTP/1.1\nhost: localhost\n")
        assert status == 503 and b"too many event streams" in body
        for sock in streams:
            sock.close()
        deadline = time.monotonic() + 20
        while s.call(lambda: s.controller.hub.subscribers) > baseline:
            assert time.monotonic() < deadline, "subscriptions of clients that hung up linger"
            time.sleep(0.05)
        status, _, _ = request(s.port, "GET /healthz HTTP/1.1\nhost: localhost\n")
        assert status == 200


def test_accepted_sockets_have_tcp_nodelay() -> None:
    with served() as s:
        sock = connect(s.port)
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
            answer_of(sock)
            protos = s.call(
                lambda: [
                    p.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                    for p in s.server.server_state.connections
                ]
            )
            assert protos and all(protos)
        finally:
            sock.close()


# --- hygiene -------------------------------------------------------------------------------------


def test_a_foreign_host_cannot_read_but_configured_and_local_ones_can() -> None:
    with served(allowed_hosts=["treadmill.lan"]) as s:
        for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example"):
            status, _, body = request(s.port, f"GET /api/v1/state HTTP/1.1\nhost: {host}\n")
            assert status == 421 and b"allowed_hosts" in body, host
        for host in ("localhost", "127.0.0.1:9", "[::1]:80", "treadmill.lan:8000", "TREADMILL.LAN"):
            status, _, _ = request(s.port, f"GET /api/v1/state HTTP/1.1\nhost: {host}\n")
            assert status == 200, host


def test_the_dashboard_carries_csp_and_frame_headers() -> None:
    with served() as s, httpx.Client(base_url=s.url, timeout=10) as client:
        for path in ("/", "/static/app.js", "/api/v1/state"):
            resp = client.get(path)
            assert resp.status_code == 200
            assert "default-src 'self'" in resp.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
            assert resp.headers["x-frame-options"] == "DENY"
            assert resp.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("::ffff:10.0.0.1", False),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("example.com", False),
    ],
)
def test_loopback_is_recognised_on_a_dual_stack_listener(host: str, local: bool) -> None:
    assert loopback(host) is local


def test_listening_beyond_loopback_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="retrotread.api.server"):
        bind_listener(f"127.0.0.1:{free_port()}").close()
        assert not caplog.records
        bind_listener(f"0.0.0.0:{free_port()}").close()
    assert any("beyond loopback" in r.getMessage() for r in caplog.records)


def test_a_slow_reader_gets_coalesced_state_not_a_backlog() -> None:
    hub = Hub()
    sub = hub.subscribe(maxsize=64, coalesce=True)
    for n in range(1000):
        hub.publish("state", n)
        hub.publish("telemetry", n)
    hub.publish("event", "e")
    assert sub.pending == 3
    got = [sub._pending.popitem(last=False)[1] for _ in range(3)]
    assert [(u.kind, u.payload) for u in got] == [("state", 999), ("telemetry", 999), ("event", "e")]


# --- wake-ups: what an idle or lightly used server costs (issue 16) -----------------------------


class TimerLog(asyncio.SelectorEventLoop):
    """An event loop that keeps every timer armed on it, with the task that armed it."""

    def __init__(self) -> None:
        super().__init__()
        self.timers: list[tuple[asyncio.Task[Any] | None, asyncio.TimerHandle]] = []

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        self.timers.append((asyncio.current_task(self), handle))
        return handle

    def pending(self) -> list[asyncio.TimerHandle]:
        now = self.time()
        return [h for _, h in self.timers if not h.cancelled() and h.when() > now]

    def armed_by(self, coro_name: str) -> int:
        """Timers armed from tasks running a coroutine of that qualified name."""
        return sum(1 for task, _ in self.timers if task is not None and task.get_coro().__qualname__ == coro_name)


async def _bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI: lifespan, and 204 for any request (the server alone, no controller, no timers)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_an_idle_server_arms_no_timer_and_stops_at_once_when_told_from_another_thread() -> None:
    """uvicorn's main loop wakes at 10 Hz to look at should_exit; ours waits: with no connection
    there is nothing scheduled at all, and setting should_exit from any thread ends serve()."""
    loop = TimerLog()
    port = free_port()
    sock = bind_listener(f"127.0.0.1:{port}")
    server = build_server(_bare_app)
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(sockets=[sock]),), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        status, headers, _ = request(port, "GET / HTTP/1.1\nhost: localhost\nconnection: close\n")
        assert status == 204 and headers["date"]
        while server.server_state.connections:
            assert time.monotonic() < deadline, "the closed connection lingers"
            time.sleep(0.01)
        pending = asyncio.run_coroutine_threadsafe(_call(loop.pending), loop).result(10)
        assert pending == [], pending
        server.should_exit = True  # from this thread, not the loop's
        thread.join(10)
        assert not thread.is_alive(), "serve() did not end after should_exit"
    finally:
        if thread.is_alive():
            loop.call_soon_threadsafe(setattr, server, "should_exit", True)
            thread.join(10)
        loop.close()
        sock.close()


async def _call(fn: Callable[[], Any]) -> Any:
    return fn()


def test_the_date_header_is_the_clocks_second_with_no_tick_to_refresh_it() -> None:
    with served() as s:
        state = s.server.server_state
        for now in (1_000_000_000.4, 1_000_003_600.9):
            state.clock = lambda now=now: now  # type: ignore[method-assign]
            status, headers, _ = request(s.port, "GET /healthz HTTP/1.1\nhost: localhost\n")
            assert status == 200
            assert headers["date"] == formatdate(int(now), usegmt=True)


def _read_events(sock: socket.socket, count: int, marker: bytes = b"event: telemetry") -> bytes:
    """Off a raw event stream, until ``marker`` has come ``count`` times."""
    data = b""
    while data.count(marker) < count:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"stream closed: {data[-300:]!r}")
        data += chunk
    return data


def test_a_lone_event_reader_writes_as_updates_come_with_no_timer_per_update() -> None:
    """One or a few readers: each waits on its subscription alone (no timeout around every wait,
    no sleep after every write), so a reader costs nothing between updates and its write rides
    the loop iteration the sample woke. Every telemetry sample reaches it."""
    with served("sim://motorized?rate_hz=20", loop_factory=TimerLog) as s:
        loop = s.loop
        assert isinstance(loop, TimerLog)
        with connect(s.port) as sock:
            sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nhost: localhost\r\n\r\n")
            data = _read_events(sock, 40)
            armed = s.call(lambda: loop.armed_by("RequestResponseCycle.run_asgi"))
        seqs = [json.loads(line[6:])["seq"] for line in _telemetry_lines(data)]
        assert armed <= 1, f"{armed} timers for {len(seqs)} telemetry frames"  # the keep-alive only
        assert len(seqs) >= 40


def test_past_the_paced_count_each_reader_writes_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """With many readers (here: past a limit of 0) each sleeps a jittered interval after a write:
    hundreds of them never burst before a stop; updates coalesce meanwhile."""
    monkeypatch.setattr(http_guard, "STREAM_PACED_ABOVE", 0)
    with served("sim://motorized?rate_hz=50", loop_factory=TimerLog) as s:
        loop = s.loop
        assert isinstance(loop, TimerLog)
        with connect(s.port) as sock:
            sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nhost: localhost\r\n\r\n")
            data = _read_events(sock, 10)
            armed = s.call(lambda: loop.armed_by("RequestResponseCycle.run_asgi"))
        seqs = [json.loads(line[6:])["seq"] for line in _telemetry_lines(data)]
        assert armed >= len(seqs) - 1  # one sleep per write
        assert seqs[-1] - seqs[0] > len(seqs) - 1, "nothing coalesced at 50 Hz under pacing"


def test_a_silent_event_stream_gets_a_keep_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_guard, "STREAM_PING_S", 0.2)
    with served("sim://motorized?rate_hz=0.5") as s, connect(s.port) as sock:
        sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nhost: localhost\r\n\r\n")
        assert b": ping" in _read_events(sock, 1, b": ping")


def _telemetry_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    return [lines[i + 1] for i, line in enumerate(lines[:-1]) if line == b"event: telemetry"]
