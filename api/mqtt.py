"""The MQTT face: one treadmill's state out to a broker, commands in, answered one by one.

Topics (``BASE`` = ``<prefix>/<id>``, interfaces.md):

=====================  ======  ===  ==========================================================
topic                  retain  QoS  payload
=====================  ======  ===  ==========================================================
BASE/status            yes     1    ``online``; the will and a clean shutdown leave ``offline``
BASE/state             yes     1    the state snapshot, forwarded from the hub (on change, ≥ 1/5 s)
BASE/telemetry         no      0    one sample
BASE/timer             yes     1    the session block (phase changes and every second)
BASE/event             no      1    events (estop, set_started, set_completed, ...)
BASE/cmd/<name>        (in)    1    ``estop`` ``reset`` ``start`` ``speed`` ``stop`` ``incline`` ``session``
BASE/cmd/result        no      1    ``{"cmd", "id", "ok", "error", "rule"}`` for every command
<ha>/device/<id>/config yes    1    Home Assistant discovery (``api.discovery``)
=====================  ======  ===  ==========================================================

Command bodies are JSON objects like the HTTP ones, each with an optional ``"id"`` (a string or an
integer) echoed in its result; an empty payload is ``{}``. ``start``/``speed``: ``{"speed_mph"}``;
``incline``: ``{"incline_pct"}``; ``estop``: ``{"reason"}`` optional; ``stop``, ``reset``: ``{}``;
``session``: ``{"plan": "3x60s/60s"}`` or ``{"sets", "work_s", "rest_s", "countdown_s",
"speed_mph"}`` to start one (as ``POST /api/v1/session``), or ``{"action": "pause|resume|skip|abort"}``;
its result adds ``"session"`` (the session block, or null).

Decisions, and why:

- Retained commands are ignored (S16): an old command left on the broker must never start a belt.
  With MQTT 5 (tried first) the command subscription asks for retain-as-published, so a retained
  command is recognized even when it arrives live; against a 3.1.1-only broker (the fallback) the
  flag survives only on messages delivered at subscribe time, which is the case S16 is about.
- Clean sessions only: nothing the broker queued while we were away is delivered later (as S9:
  nothing queued before a loss is replayed).
- ``estop`` is carried out in the message loop itself, never behind another command; commands
  before it that are still waiting are answered "superseded" and dropped (they would either be
  refused by the latch or, for a reset, undo a stop sent after it). Every other command runs in
  arrival order on one worker, so a ``stop`` is never overtaken by an earlier ``start``.
- Token (S16): when the daemon has an API token, every command but ``estop`` and ``stop`` needs it
  as ``"token"`` in the body. Broker ACLs remain the first line; the token keeps the rule the same
  on every face. Discovery then leaves out the controls that would need it.
- The hub is drained all the time, connected or not: while away, telemetry and events are dropped
  and on each (re)connect the latest state and timer are re-published with ``online`` and the
  discovery config, so every retained topic is current again.

This module must not hold a rule, convert a unit or time a session (the controller does), must
never make the controller wait (the hub drops a slow face's oldest updates), and must never raise
out on broker trouble: it reconnects with capped backoff, logging once on failure and once on
recovery. Library errors are translated here (``BrokerError``, ``ConfigError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import socket
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Annotated, Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from retrotread.api.discovery import discovery_payload, discovery_topic
from retrotread.daemon.controller import Controller, SessionError
from retrotread.daemon.hub import Kind, Subscription
from retrotread.daemon.plans import PlanError, plan_from
from retrotread.daemon.snapshot import SessionView
from retrotread.drivers.errors import ConfigError, TreadError
from retrotread.drivers.units import Speed
from retrotread.safety.supervisor import Decision

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
KEEPALIVE_S = 15  # a silent link loss shows as the will within 1.5 x this
TIMEOUT_S = 5.0  # connect, subscribe, and the acknowledgement of one QoS 1 publish
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0
CLOSE_TIMEOUT_S = 2.0
RECANCEL_S = 0.1  # the final state and ``offline`` on a clean shutdown
MAX_COMMAND_BYTES = 4096  # a command body is a few dozen bytes; anything this big is refused unread
COMMANDS_WAITING = 256  # commands queued behind the one running; beyond it they are answered "busy"
UPDATES_WAITING = 256  # hub updates buffered for the broker; the oldest are dropped beyond it
INCOMING_WAITING = 1024  # messages aiomqtt holds for us before it discards new ones

COMMANDS = ("estop", "reset", "start", "speed", "stop", "incline", "session")
OPEN_COMMANDS = frozenset({"estop", "stop"})  # S16: a stop never needs a token
# paho leaves Nagle's algorithm on: a small packet written while the previous one is unacknowledged
# then waits for the peer's delayed ACK (40 ms on Linux). Telemetry and results are small packets.
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UNSUPPORTED_PROTOCOL = (132, 1)  # CONNACK "unsupported protocol version" in MQTT 5, and in 3.1.1

# hub kind → (topic leaf, QoS, retained)
_ROUTES: dict[Kind, tuple[str, int, bool]] = {
    "state": ("state", 1, True),
    "telemetry": ("telemetry", 0, False),
    "timer": ("timer", 1, True),
    "event": ("event", 1, False),
}


class BrokerError(TreadError):
    """The MQTT broker could not be reached, or refused us (for one-shot calls such as ``forget``)."""


# ------------------------------------------------------------------ where the broker is


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """An ``mqtt://`` or ``mqtts://`` URL, taken apart. ``protocol`` None means MQTT 5, else 3.1.1."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    protocol: Literal["5", "3.1.1"] | None = None

    @property
    def where(self) -> str:
        """The URL without credentials, for logs and errors."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"MQTT CA file {self.ca_file!r}: {exc}") from exc


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://[user[:pass]@]host[:port]`` (1883) or ``mqtts://...`` (8883, TLS with the system CAs).

    Query options: ``ca=PATH`` (mqtts only: trust this CA file instead), ``protocol=5|3.1.1``
    (default: MQTT 5, falling back to 3.1.1 when the broker refuses it).
    """
    shown = _redact(url)
    hint = "expected mqtt://[user:pass@]host[:port] or mqtts://...[?ca=PATH]"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"MQTT URL {shown!r}: {exc}; {hint}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"MQTT URL {shown!r}: unknown scheme {parts.scheme!r}; {hint}")
    if not parts.hostname:
        raise ConfigError(f"MQTT URL {shown!r}: no host; {hint}")
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(f"MQTT URL {shown!r}: unexpected path {parts.path!r}; {hint}")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigError(f"MQTT URL {shown!r}: malformed query {parts.query!r}; {hint}") from None
    unknown = sorted(set(query) - {"ca", "protocol"})
    if unknown:
        raise ConfigError(f"MQTT URL {shown!r}: unknown option {unknown[0]!r}; allowed: ca, protocol")
    tls = parts.scheme == "mqtts"
    ca = query.get("ca", [None])[-1]
    if ca is not None and not tls:
        raise ConfigError(f"MQTT URL {shown!r}: ca= needs mqtts://")
    protocol: Literal["5", "3.1.1"] | None = None
    match query.get("protocol", [None])[-1]:
        case None:
            pass
        case "5":
            protocol = "5"
        case "3.1.1":
            protocol = "3.1.1"
        case other:
            raise ConfigError(f"MQTT URL {shown!r}: protocol={other!r}; allowed: 5, 3.1.1")
    return BrokerAddress(
        host=parts.hostname,
        port=port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
        username=parts.username or None,
        password=parts.password,
        tls=tls,
        ca_file=ca or None,
        protocol=protocol,
    )


def _redact(url: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


# ------------------------------------------------------------------ topics


@dataclass(frozen=True, slots=True)
class Topics:
    base: str
    discovery: str
    ha_status: str

    @classmethod
    def of(
        cls, treadmill_id: str, base_topic_prefix: str = "retrotread", discovery_prefix: str = "homeassistant"
    ) -> Self:
        if not _ID.match(treadmill_id):
            # The id is a topic level: a '+', '#' or '/' in it would reach other treadmills' topics.
            raise ConfigError(f"treadmill id {treadmill_id!r}: allowed are 1-64 of A-Z a-z 0-9 _ -")
        for what, prefix in (("base topic prefix", base_topic_prefix), ("discovery prefix", discovery_prefix)):
            if not prefix or prefix.startswith("/") or prefix.endswith("/") or set(prefix) & {"+", "#", "\0"}:
                raise ConfigError(f"MQTT {what} {prefix!r}: a topic without wildcards or leading/trailing '/'")
        return cls(
            base=f"{base_topic_prefix}/{treadmill_id}",
            discovery=discovery_topic(treadmill_id, discovery_prefix),
            ha_status=f"{discovery_prefix}/status",
        )

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def timer(self) -> str:
        return f"{self.base}/timer"

    @property
    def commands(self) -> str:
        """The subscription filter for commands."""
        return f"{self.base}/cmd/+"

    @property
    def cmd_prefix(self) -> str:
        return f"{self.base}/cmd/"

    @property
    def result(self) -> str:
        return f"{self.base}/cmd/result"

    def leaf(self, name: str) -> str:
        return f"{self.base}/{name}"


# ------------------------------------------------------------------ command bodies

# JSON numbers only, as on HTTP: "1.0" or true is malformed, never coerced. NaN and Infinity parse
# as numbers and are refused by the supervisor naming S1; integers too big for a float are malformed.
Number = Annotated[float, Field(strict=True)]
CommandId = Annotated[StrictStr, Field(max_length=100)] | StrictInt


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: CommandId | None = None
    token: Annotated[StrictStr, Field(max_length=500)] | None = None


class _NoArgs(_Body):
    pass


class _EStopBody(_Body):
    reason: Annotated[StrictStr, Field(max_length=200)] | None = None


class _SpeedBody(_Body):
    speed_mph: Number


class _InclineBody(_Body):
    incline_pct: Number


class _SessionBody(_Body):
    action: Literal["pause", "resume", "skip", "abort"] | None = None
    plan: Annotated[StrictStr, Field(max_length=100)] | None = None
    sets: Annotated[StrictInt, Field(ge=1, le=50)] | None = None
    work_s: Annotated[float, Field(strict=True, ge=1, le=14400)] | None = None
    rest_s: Annotated[float, Field(strict=True, ge=0, le=14400)] | None = None
    countdown_s: Annotated[float, Field(strict=True, ge=0, le=600)] | None = None
    speed_mph: Number | None = None


_BODIES: dict[str, type[_Body]] = {
    "estop": _EStopBody,
    "reset": _NoArgs,
    "start": _SpeedBody,
    "speed": _SpeedBody,
    "stop": _NoArgs,
    "incline": _InclineBody,
    "session": _SessionBody,
}


class _Refused(Exception):
    """A command answered ``ok: false`` before it reached the controller."""

    def __init__(self, error: str, rule: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.rule = rule


@dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool


# ------------------------------------------------------------------ the bridge


class MqttBridge:
    """Connects one controller to one broker for as long as it is entered (``async with``).

    Entering never waits for the broker and never fails because of it: the bridge connects in the
    background and keeps reconnecting. Leaving publishes the final state and ``offline``, then
    disconnects; ``aclose()`` twice is harmless. A bridge runs once (not re-entrant, not reusable).
    """

    def __init__(
        self,
        controller: Controller,
        url: str,
        *,
        base_topic_prefix: str = "retrotread",
        discovery_prefix: str = "homeassistant",
        token: str | None = None,
        discovery: bool = True,
        client_id: str | None = None,
        keepalive_s: int = KEEPALIVE_S,
        timeout_s: float = TIMEOUT_S,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        support_url: str | None = None,
    ) -> None:
        self.controller = controller
        self.broker = parse_broker_url(url)
        self.topics = Topics.of(controller.id, base_topic_prefix, discovery_prefix)
        self.client_id = client_id or f"retrotread-{controller.id}"
        self._token = token or None
        self._discovery = discovery
        self._support_url = support_url
        self._keepalive_s = keepalive_s
        self._timeout_s = timeout_s
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._tls = self.broker.tls_context()  # reads the CA file: a bad one is a start-up error
        self._v5 = self.broker.protocol != "3.1.1"
        self._client: aiomqtt.Client | None = None  # connected and announced: the helpers publish through it
        self._link: aiomqtt.Client | None = None  # connected, maybe still announcing: for 'offline' at close
        self._sub: Subscription | None = None
        self._commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(COMMANDS_WAITING)
        self._outbox: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._link_task: asyncio.Task[None] | None = None
        self._helpers: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._entered = False
        self._closed = False
        self.connections = 0
        """Successful connections so far (the first one and every reconnect)."""
        self.retained_ignored = 0
        """Retained command messages ignored (S16)."""
        self.answered = 0
        """Commands answered on ``BASE/cmd/result``."""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("an MqttBridge runs once; make a new one")
        self._entered = True
        self._sub = self.controller.hub.subscribe(_ROUTES, maxsize=UPDATES_WAITING, replay=False)
        name = f"mqtt {self.controller.id}"
        self._helpers = [
            self._spawn(self._forward_updates(self._sub), f"{name}: updates"),
            self._spawn(self._work_commands(), f"{name}: commands"),
            self._spawn(self._send_outbox(), f"{name}: results"),
        ]
        self._link_task = self._spawn(self._stay_connected(), f"{name}: link")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Publish the final state and ``offline`` (when connected), disconnect, stop every task."""
        if self._closed or not self._entered:
            self._closed = True
            return
        self._closed = True
        # Stop the helpers first, so nothing is published after 'offline'.
        helpers, self._helpers = self._helpers, []
        await _finish(helpers)
        if self._sub is not None:
            self.controller.hub.unsubscribe(self._sub)
        client = self._link
        if client is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    for kind in ("state", "timer"):
                        latest = self.controller.hub.latest.get(kind)
                        if latest is not None:
                            leaf, qos, retain = _ROUTES[kind]
                            await client.publish(self.topics.leaf(leaf), _encode(latest.payload), qos, retain)
                    await client.publish(self.topics.status, b"offline", qos=1, retain=True)
            except (aiomqtt.MqttError, TimeoutError) as exc:
                log.warning("MQTT: could not publish 'offline' (%s); the broker's will says it instead", exc)
        link, self._link_task = self._link_task, None
        if link is not None:
            await _finish([link])
        self._set_client(None)

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def updates_dropped(self) -> int:
        """Hub updates dropped because this face fell behind (the hub drops a slow face's oldest)."""
        return self._sub.dropped if self._sub is not None else 0

    async def wait_connected(self, count: int = 1, within: float | None = None) -> None:
        """Until the bridge has connected ``count`` times in all and is connected and announced now."""
        async with asyncio.timeout(within):
            while not (self.connections >= count and self._client is not None):
                await self._changed.wait()

    def _set_client(self, client: aiomqtt.Client | None) -> None:
        self._client = client
        if client is not None:
            self.connections += 1
        # Wake every waiter, then re-arm for the next change.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(_log_crash)
        return task

    # ------------------------------------------------------------------ the link to the broker

    def _new_client(self) -> aiomqtt.Client:
        b = self.broker
        return aiomqtt.Client(
            b.host,
            b.port,
            username=b.username,
            password=b.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if self._v5 else aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(self.topics.status, b"offline", qos=1, retain=True),
            clean_session=None if self._v5 else True,
            keepalive=self._keepalive_s,
            timeout=self._timeout_s,
            tls_context=self._tls,
            max_queued_incoming_messages=INCOMING_WAITING,
            socket_options=NO_DELAY,
        )

    async def _stay_connected(self) -> None:
        initial, ceiling = self._backoff
        delay = initial
        trouble: str | None = None  # set while failing: failure and recovery are each logged once
        while True:
            client = self._new_client()
            try:
                async with client:
                    self._link = client
                    await self._announce(client)
                    self._set_client(client)
                    self._resync()
                    if trouble is not None:
                        log.warning("MQTT: connected again to %s", self.broker.where)
                    else:
                        log.info("MQTT: connected to %s as %s", self.broker.where, self.client_id)
                    trouble = None
                    delay = initial
                    async for message in client.messages:
                        await self._on_message(message)
            except aiomqtt.MqttError as exc:
                if self._falls_back(exc):
                    continue
                reason = str(exc) or type(exc).__name__
                if trouble is None:
                    log.warning(
                        "MQTT: %s: %s; retrying in the background (every %g s at most)",
                        self.broker.where,
                        reason,
                        ceiling,
                    )
                else:
                    log.debug("MQTT: %s still unavailable: %s", self.broker.where, reason)
                trouble = reason
            except Exception:
                # A bug of ours, not broker trouble; keep the face alive and say so once.
                if trouble is None:
                    log.exception("MQTT: unexpected failure; reconnecting")
                trouble = "unexpected failure"
            finally:
                self._link = None
                if self._client is not None:
                    self._set_client(None)
            await asyncio.sleep(delay)
            delay = min(delay * 2, ceiling)

    def _falls_back(self, exc: aiomqtt.MqttError) -> bool:
        """Switch to MQTT 3.1.1 for good if the broker refused MQTT 5 and the URL did not insist."""
        if not self._v5 or self.broker.protocol == "5" or not isinstance(exc, MqttConnectError):
            return False
        rc = exc.rc
        code = rc if isinstance(rc, int) else getattr(rc, "value", None)
        if code not in _UNSUPPORTED_PROTOCOL:
            return False
        log.info("MQTT: %s does not speak MQTT 5; using 3.1.1", self.broker.where)
        self._v5 = False
        return True

    async def _announce(self, client: aiomqtt.Client) -> None:
        if self._v5:
            # Retain-as-published: a retained command shows as retained even when it arrives live
            # (S16); no-local: our own results on cmd/result do not come back to us.
            options = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True)
            await client.subscribe(self.topics.commands, options=options)
        else:
            await client.subscribe(self.topics.commands, qos=1)
        if self._discovery:
            await client.subscribe(self.topics.ha_status, qos=1)
        await client.publish(self.topics.status, b"online", qos=1, retain=True)
        if self._discovery:
            item = self._discovery_message()
            await client.publish(item.topic, item.payload, item.qos, item.retain)

    def _resync(self) -> None:
        """Queue the latest state and timer behind anything already queued, so the pump re-publishes
        them in order (a newer update can never be overwritten by an older one)."""
        sub = self._sub
        if sub is None:
            return
        for kind in ("state", "timer"):
            latest = self.controller.hub.latest.get(kind)
            if latest is not None:
                sub.offer(latest)

    def _discovery_message(self) -> _Outgoing:
        payload = discovery_payload(
            self.controller.snapshot(),
            base_topic=self.topics.base,
            token_required=self._token is not None,
            support_url=self._support_url,
        )
        return _Outgoing(self.topics.discovery, payload, 1, True)

    # ------------------------------------------------------------------ out

    async def _forward_updates(self, sub: Subscription) -> None:
        async for update in sub:
            client = self._client
            if client is None:
                continue  # away: telemetry and events go stale; state and timer come back on reconnect
            leaf, qos, retain = _ROUTES[update.kind]
            # A failed publish means the link is going down; the link task reconnects and resyncs.
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self.topics.leaf(leaf), _encode(update.payload), qos, retain)

    async def _send_outbox(self) -> None:
        while True:
            item = await self._outbox.get()
            client = self._client
            if client is None:
                continue  # nobody to tell; discovery is sent again on connect
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(item.topic, item.payload, item.qos, item.retain)

    def _answer(self, result: dict[str, Any]) -> None:
        self.answered += 1
        payload = json.dumps(result, separators=(",", ":")).encode()
        self._outbox.put_nowait(_Outgoing(self.topics.result, payload, 1, False))

    # ------------------------------------------------------------------ in

    async def _on_message(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = _as_bytes(message.payload)
        if topic == self.topics.ha_status:
            # Home Assistant came back (its birth message): it has forgotten the device.
            if not message.retain and payload.strip() == b"online" and self._discovery:
                self._outbox.put_nowait(self._discovery_message())
            return
        if not topic.startswith(self.topics.cmd_prefix):
            return
        name = topic[len(self.topics.cmd_prefix) :]
        if name == "result":
            return  # our own answers (MQTT 3.1.1 has no no-local), or someone else's
        if message.retain:
            self.retained_ignored += 1
            log.debug("MQTT: ignoring the retained command on %s (S16)", topic)
            return
        if name == "estop":
            # In the message loop itself: an emergency stop never waits behind another command (S5).
            self._supersede_waiting()
            self._answer(await self._execute(name, payload))
            return
        try:
            self._commands.put_nowait((name, payload))
        except asyncio.QueueFull:
            self._answer(_result(name, _peek_id(payload), error="too many commands waiting; try again"))

    def _supersede_waiting(self) -> None:
        while True:
            try:
                name, payload = self._commands.get_nowait()
            except asyncio.QueueEmpty:
                return
            error = "superseded by an emergency stop that arrived after it"
            self._answer(_result(name, _peek_id(payload), error=error, rule="S5"))

    async def _work_commands(self) -> None:
        while True:
            name, payload = await self._commands.get()
            self._answer(await self._execute(name, payload))

    async def _execute(self, name: str, payload: bytes) -> dict[str, Any]:
        """One command, start to answer. Never raises (but for cancellation)."""
        cmd_id: str | int | None = None
        try:
            try:
                body: dict[str, Any] | None = _parse_object(payload)
            except _Refused as bad:
                body, unreadable = None, bad
            cmd_id = _peek_id(body) if body is not None else None
            if name not in _BODIES:
                raise _Refused(f"unknown command {name[:64]!r}; one of {', '.join(COMMANDS)}")
            if body is None:
                raise unreadable
            if self._token is not None and name not in OPEN_COMMANDS:
                given = body.get("token")
                if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self._token.encode()):
                    raise _Refused(f'{name} needs the API token as "token" in the body', "S16")
            try:
                args = _BODIES[name].model_validate(body)
            except ValidationError as exc:
                raise _malformed(exc) from None
            return await self._carry_out(name, args, cmd_id)
        except _Refused as refused:
            return _result(name, cmd_id, error=refused.error, rule=refused.rule)
        except SessionError as exc:
            return _result(name, cmd_id, error=str(exc), rule=exc.rule.value if exc.rule else None)
        except Exception as exc:
            log.exception("MQTT: command %s failed", name[:64])
            return _result(name, cmd_id, error=f"internal error: {type(exc).__name__}")

    async def _carry_out(self, name: str, args: _Body, cmd_id: str | int | None) -> dict[str, Any]:
        c = self.controller
        match args:
            case _EStopBody():
                return _decided(name, cmd_id, await c.estop(args.reason or "estop", "mqtt"))
            case _SpeedBody() if name == "start":
                return _decided(name, cmd_id, await c.start_belt(Speed.from_mph(args.speed_mph)))
            case _SpeedBody():
                return _decided(name, cmd_id, await c.set_speed(Speed.from_mph(args.speed_mph)))
            case _InclineBody():
                return _decided(name, cmd_id, await c.set_incline(args.incline_pct))
            case _SessionBody():
                view = await self._session(args)
                out = _result(name, cmd_id)
                out["session"] = view.model_dump(mode="json") if view is not None else None
                return out
            case _NoArgs() if name == "stop":
                return _decided(name, cmd_id, await c.stop_belt("mqtt"))
            case _NoArgs():
                return _decided(name, cmd_id, await c.reset())
        raise _Refused(f"unknown command {name[:64]!r}")

    async def _session(self, body: _SessionBody) -> SessionView | None:
        c = self.controller
        starts = [
            k for k in ("plan", "sets", "work_s", "rest_s", "countdown_s", "speed_mph") if getattr(body, k) is not None
        ]
        if body.action is not None:
            if starts:
                raise _Refused(f"give either 'action' or a plan to start, not both (got {', '.join(starts)})")
            return await c.session_action(body.action)
        try:
            plan = plan_from(body.plan, body.sets, body.work_s, body.rest_s, body.countdown_s)
        except PlanError as exc:
            raise _Refused(str(exc)) from None
        speed = Speed.from_mph(body.speed_mph) if body.speed_mph is not None else None
        return await c.start_session(plan, speed)


# ------------------------------------------------------------------ removing a treadmill


async def forget(
    url: str,
    treadmill_id: str,
    *,
    base_topic_prefix: str = "retrotread",
    discovery_prefix: str = "homeassistant",
    timeout_s: float = TIMEOUT_S,
) -> None:
    """Remove a treadmill from the broker: empty retained payloads on its discovery config (Home
    Assistant deletes the device), ``state``, ``timer`` and ``status``. For a daemon that is gone
    for good; a running one puts them back when it next (re)connects. Raises ``BrokerError``."""
    broker = parse_broker_url(url)
    topics = Topics.of(treadmill_id, base_topic_prefix, discovery_prefix)
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        # Never the daemon's own id: the broker would disconnect the daemon to let us in.
        identifier=f"retrotread-{treadmill_id}-forget-{os.getpid()}",
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=True,
        timeout=timeout_s,
        tls_context=broker.tls_context(),
        socket_options=NO_DELAY,
    )
    try:
        async with client:
            for topic in (topics.discovery, topics.state, topics.timer, topics.status):
                await client.publish(topic, b"", qos=1, retain=True)
    except aiomqtt.MqttError as exc:
        raise BrokerError(f"MQTT broker {broker.where}: {exc}") from exc


# ------------------------------------------------------------------ helpers


def _encode(payload: Any) -> bytes:
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    return json.dumps(payload).encode()


def _as_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


def _parse_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_COMMAND_BYTES:
        raise _Refused(f"payload of {len(payload)} bytes is too large (at most {MAX_COMMAND_BYTES})")
    if not payload.strip():
        return {}
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise _Refused(f"payload is not JSON: {_short(exc)}") from None
    if not isinstance(body, dict):
        raise _Refused(f"payload must be a JSON object, not {type(body).__name__}")
    return body


def _peek_id(body: dict[str, Any] | bytes) -> str | int | None:
    """The command's ``id`` if it has a usable one, to echo even when the rest is malformed."""
    if isinstance(body, bytes):
        try:
            body = _parse_object(body)
        except _Refused:
            return None
    value = body.get("id")
    if isinstance(value, str) and len(value) <= 100:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return value
    return None


def _malformed(exc: ValidationError) -> _Refused:
    errors = exc.errors(include_url=False, include_input=False)
    where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
    msg = errors[0]["msg"] if errors else "malformed"
    # A bad speed is a speed request refused, as on HTTP: name S1.
    speed = any("speed_mph" in map(str, e.get("loc", ())) for e in errors)
    return _Refused(f"{where}: {msg}" if where else msg, "S1" if speed else None)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _result(
    name: str, cmd_id: str | int | None, *, error: str | None = None, rule: str | None = None
) -> dict[str, Any]:
    return {"cmd": name[:64], "id": cmd_id, "ok": error is None, "error": error, "rule": rule}


def _decided(name: str, cmd_id: str | int | None, decision: Decision) -> dict[str, Any]:
    refusal = decision.refusal
    if refusal is None:
        return _result(name, cmd_id)
    return _result(name, cmd_id, error=refusal.error, rule=refusal.rule.value if refusal.rule else None)


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until they are done.

    Python 3.11's ``asyncio.wait_for`` (under aiomqtt's publish and subscribe) can swallow a
    cancellation that arrives as the awaited result does (CPython gh-86296, fixed in 3.12), so a
    task that is still running after a short wait is cancelled again.
    """
    for task in tasks:
        task.cancel()
    pending = {t for t in tasks if not t.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        for task in pending:
            task.cancel()


def _log_crash(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("MQTT: %s stopped: %r", task.get_name(), exc, exc_info=exc)
