"""The ``MqttBridge``: one controller's state out to a broker, commands in, answered one by one.

The decisions it carries out are listed in the package's docstring (``retrotread.api.mqtt``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, cast

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttCodeError, MqttConnectError
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import BaseModel

from retrotread.api.discovery import (
    CONTROLS,
    CUE,
    DEFAULT_PLAN,
    REFUSED,
    Control,
    diagnostic_keys,
    discovery_payload,
    published,
)
from retrotread.api.mqtt.address import NO_DELAY, TIMEOUT_S, parse_broker_url
from retrotread.api.mqtt.bodies import (
    COMMANDS,
    OPEN_COMMANDS,
    Refused,
    parse_command,
    parse_object,
    peek_id,
    read_stop,
    reply,
    reply_to,
)
from retrotread.api.mqtt.topics import Topics
from retrotread.daemon.commands import EStopCommand, StopCommand
from retrotread.daemon.config import SPEED_UNITS, SpeedUnit
from retrotread.daemon.controller import Controller
from retrotread.daemon.hub import Kind, Subscription, Update
from retrotread.daemon.plans import PRESETS
from retrotread.daemon.snapshot import SessionView, iso
from retrotread.drivers.errors import ConfigError
from retrotread.drivers.link_state import Backoff, LinkChange, LinkFailure, LinkMachine
from retrotread.drivers.link_state import LinkState as LinkState  # re-exported: the bridge's link_state

log = logging.getLogger(__name__)

KEEPALIVE_S = 15  # a silent link loss shows as the will within 1.5 x this
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0
CLOSE_TIMEOUT_S = 2.0
RECANCEL_S = 0.1  # the final state and ``offline`` on a clean shutdown
COMMANDS_WAITING = 256  # commands queued behind the one running; beyond it they are answered "busy"
UPDATES_WAITING = 256  # hub updates buffered for the broker; the oldest are dropped beyond it
INCOMING_WAITING = 1024  # messages aiomqtt holds for us before it discards new ones
_UNSUPPORTED_PROTOCOL = (132, 1)  # CONNACK "unsupported protocol version" in MQTT 5, and in 3.1.1

# hub kind → (topic leaf, QoS, retained); "cue" is the hub's cue kind (cues.md)
_ROUTES: dict[str, tuple[str, int, bool]] = {
    "state": ("state", 1, True),
    "telemetry": ("telemetry", 0, False),
    "timer": ("timer", 1, True),
    "event": ("event", 1, False),
    "cue": ("cue", 1, False),
}
_KINDS = cast("tuple[Kind, ...]", tuple(_ROUTES))
# The timer published when the hub has none yet, so a retained timer left by an earlier process
# ("done, set 2 of 3") never shows as the current session (interfaces.md, Home Assistant).
IDLE_TIMER = SessionView.idle()


@dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    unless: str | None = None  # not sent if the hub has an update of this kind by then


# ------------------------------------------------------------------ the client


class _Client(aiomqtt.Client):
    """aiomqtt's client, with a publish path for QoS 0 that waits for nothing (``send_now``).

    Per message, aiomqtt's ``publish`` builds an event and a task (``asyncio.wait_for``), and the
    socket's writer is registered through ``call_soon_threadsafe`` (a self-pipe write and a loop
    iteration) even from the loop's own thread: about 0.8 ms and four wake-ups per telemetry
    sample on this machine. Here the writer is registered directly when paho asks from the loop's
    thread (from aiomqtt's connect thread it still goes through ``call_soon_threadsafe``), and a
    QoS 0 message is handed to paho and written out in the same loop iteration. QoS 1 (state,
    timer, events, results) keeps aiomqtt's ``publish``, awaited one by one, in order.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_thread = threading.get_ident()
        registered = getattr(self._client.on_socket_register_write, "__func__", None)
        # Writing at once is safe only while paho's writer registration is ours (a direct
        # add_writer): one deferred by call_soon_threadsafe would land after the write and stay
        # registered for good. An aiomqtt that renamed the hook gets the writer callback path.
        self.direct = registered is _Client._on_socket_register_write

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def callback() -> None:
            # As aiomqtt's: loop_write() may raise (a broken pipe): the link is gone.
            try:
                client.loop_write()
            except Exception as exc:
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        if threading.get_ident() == self._loop_thread:
            self._loop.add_writer(sock.fileno(), callback)
        else:  # paho's connect runs in aiomqtt's executor thread
            self._loop.call_soon_threadsafe(self._loop.add_writer, sock.fileno(), callback)

    def send_now(self, topic: str, payload: bytes) -> bool:
        """One QoS 0, not retained message, queued in paho and written before this returns (when
        the socket takes it). A socket that has not taken the previous ones yet (a stalled
        broker) drops it (False): telemetry is only worth its newest sample, and paho's queue
        stays short instead of growing until the keepalive gives up.
        """
        mqtt = self._client
        if mqtt.want_write() and self.direct:
            mqtt.loop_write()
        if mqtt.want_write():
            return False
        info = mqtt.publish(topic, payload, 0, False)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttCodeError(info.rc, "Could not publish message")
        if self.direct:
            mqtt.loop_write()  # errors come back as paho's return code and its on_disconnect
        return True


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
        control: Control | str = "stop",
        dashboard_url: str | None = None,
        telemetry_hz: float | None = None,
        speed_unit: str = "km/h",
    ) -> None:
        """``control``: ``"stop"`` (only ``stop`` and ``estop`` are taken) or ``"full"`` (every
        command; the broker's ACL is then the guard, S16). ``token`` is accepted for the callers
        that still pass it and is not used: MQTT control is the ``control`` policy now, not the
        HTTP token (a token in a retained discovery message would be every client's).
        ``telemetry_hz``: about this many ``BASE/telemetry`` messages a second (a fleet on one
        broker, a metered link): a reading goes out once 0.9/hz s have passed since the last one
        sent; None, the default, sends every reading (interfaces.md). Samples in between are
        skipped, not averaged: each message is a real reading.
        ``speed_unit``: ``"km/h"`` (the default) or ``"mph"``, the unit of Home Assistant's
        target-speed number (its range, step and the field it sends); the belt-speed sensor is
        always published in mph and Home Assistant converts it to the user's unit system."""
        if control not in CONTROLS:
            raise ConfigError(f"mqtt.control = {control!r}: allowed are {' or '.join(map(repr, CONTROLS))}")
        self.controller = controller
        self.broker = parse_broker_url(url)
        self.topics = Topics.of(controller.id, base_topic_prefix, discovery_prefix)
        self.client_id = client_id or f"retrotread-{controller.id}"
        del token
        self.control: Control = "full" if control == "full" else "stop"
        if speed_unit not in SPEED_UNITS:
            raise ConfigError(f"mqtt.speed_unit = {speed_unit!r}: allowed are {' or '.join(map(repr, SPEED_UNITS))}")
        self._speed_unit: SpeedUnit = speed_unit
        self._dashboard_url = dashboard_url
        if telemetry_hz is not None and not (isinstance(telemetry_hz, int | float) and 0 < telemetry_hz < math.inf):
            raise ConfigError(f"mqtt.telemetry_hz = {telemetry_hz!r}: allowed is a number of messages a second above 0")
        # A reading is sent once this long after the last one sent; 10 % slack so a 10 Hz belt
        # thinned to 5 Hz sends every other reading despite jitter, not every third.
        self._telemetry_gap = 0.9 / telemetry_hz if telemetry_hz is not None else 0.0
        self._telemetry_sent = -math.inf
        self._known: dict[str, str] = {}  # discovery components published (key → platform)
        self._plan: str | None = None  # the plan chosen on BASE/plan (full control)
        self._names: tuple[str | None, str | None] = (None, None)  # maker and model in the discovery sent
        self._diagnostics: frozenset[str] = frozenset()  # the diagnostic components in the discovery sent
        self._discovery = discovery
        self._support_url = support_url
        self._keepalive_s = keepalive_s
        self._timeout_s = timeout_s
        self._tls = self.broker.tls_context()  # reads the CA file: a bad one is a start-up error
        self._v5 = self.broker.protocol != "3.1.1"
        self._client: _Client | None = None  # connected and announced: the helpers publish through it
        self._link: _Client | None = None  # connected, maybe still announcing: for 'offline' at close
        self._sub: Subscription | None = None
        self._commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(COMMANDS_WAITING)
        self._outbox: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._link_task: asyncio.Task[None] | None = None
        self._helpers: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._trouble = False  # a failure since the link was last up: its return is logged as a warning
        # Issue 11: the one link machine of the drivers keeps the broker link (down → opening →
        # greeting → up, capped backoff); it logs the loss and the first failed attempt, naming the URL.
        self._link_log = log.getChild(f"link.{controller.id}")
        self._machine = LinkMachine(
            self.broker.where,
            opening=self._open,
            greeting=self._greet,
            up=self._serve,
            closing=self._drop_link,
            backoff=Backoff(backoff_initial_s, backoff_max_s),
            # Broker trouble is retried; so is anything else, a bug of ours: the face stays alive.
            retry_on=(Exception,),
            expected=(aiomqtt.MqttError,),
            on_failure=self._link_failed,
            logger=self._link_log,
        )
        self._machine.add_listener(self._link_changed)
        self._entered = False
        self._closed = False
        self.connections = 0
        """Successful connections so far (the first one and every reconnect)."""
        self.retained_ignored = 0
        """Retained command messages ignored (S16)."""
        self.answered = 0
        """Commands answered on ``BASE/cmd/result``."""
        self.telemetry_dropped = 0
        """Telemetry samples not sent because the socket had not taken the ones before (a stalled
        broker or link); the next sample is newer anyway."""
        self.telemetry_skipped = 0
        """Telemetry samples left out to keep to ``telemetry_hz``."""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("an MqttBridge runs once; make a new one")
        self._entered = True
        self._sub = self.controller.hub.subscribe(_KINDS, maxsize=UPDATES_WAITING, replay=False)
        name = f"mqtt {self.controller.id}"
        self._helpers = [
            self._spawn(self._forward_updates(self._sub), f"{name}: updates"),
            self._spawn(self._work_commands(), f"{name}: commands"),
            self._spawn(self._send_outbox(), f"{name}: results"),
        ]
        self._link_task = self._spawn(self._machine.run(), f"{name}: link")
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
                        elif kind == "timer":
                            await client.publish(self.topics.timer, _encode(IDLE_TIMER), 1, True)
                    await client.publish(self.topics.status, b"offline", qos=1, retain=True)
            except (aiomqtt.MqttError, TimeoutError) as exc:
                log.warning("MQTT: could not publish 'offline' (%s); the broker's will says it instead", exc)
        link, self._link_task = self._link_task, None
        if link is not None:
            await _finish([link])
        await self._drop_link()  # the machine leaves an up link to its owner to close
        self._machine.closed()

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def link_state(self) -> LinkState:
        """Where the link to the broker is now: the link machine's state."""
        return self._machine.state

    @property
    def link_machine(self) -> LinkMachine:
        """The state machine that keeps the broker link (its state, listeners and ``wait_for``)."""
        return self._machine

    async def wait_link(self, state: LinkState, within: float | None = None) -> None:
        """Until the link is in ``state``."""
        async with asyncio.timeout(within):
            await self._machine.wait_for(state)

    @property
    def updates_dropped(self) -> int:
        """Hub updates dropped because this face fell behind (the hub drops a slow face's oldest)."""
        return self._sub.dropped if self._sub is not None else 0

    async def wait_connected(self, count: int = 1, within: float | None = None) -> None:
        """Until the bridge has connected ``count`` times in all and is connected and announced now."""
        async with asyncio.timeout(within):
            while not (self.connections >= count and self._client is not None):
                await self._changed.wait()

    def _wake(self) -> None:
        # Wake every waiter, then re-arm for the next change.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(_log_crash)
        return task

    # ------------------------------------------------------------------ the link to the broker

    def _new_client(self) -> _Client:
        b = self.broker
        return _Client(
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

    # The link machine's bodies: opening, greeting, up and closing (drivers/link_state.py).

    async def _open(self) -> None:
        """TCP (and TLS) and the MQTT CONNECT. A broker that refuses MQTT 5 (and a URL that does
        not insist on it) is asked again at once in 3.1.1, for good, within the same attempt: the
        refusal is not a failure to log or back off from."""
        client = self._new_client()
        try:
            await client.__aenter__()
        except MqttConnectError as exc:
            if not self._falls_back(exc):
                raise
            client = self._new_client()
            await client.__aenter__()
        self._link = client

    async def _greet(self) -> None:
        assert self._link is not None  # set by _open
        await self._announce(self._link)

    async def _serve(self) -> None:
        """The message loop, until the link drops (aiomqtt raises ``MqttError`` then)."""
        client = self._link
        assert client is not None  # set by _open
        try:
            async for message in client.messages:
                await self._on_message(message)
        except aiomqtt.MqttError:
            raise
        except Exception:
            # A bug of ours, not broker trouble: the machine reconnects and keeps the face alive.
            log.exception("MQTT: %s: unexpected failure in the message loop; reconnecting", self.broker.where)
            raise

    async def _drop_link(self) -> None:
        """Disconnect what an attempt or a dropped link left (quickly: the broker may be gone)."""
        client = self._link
        if client is None:
            return
        try:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await client.__aexit__(None, None, None)
        finally:
            self._link = None

    def _link_failed(self, failure: LinkFailure) -> None:
        del failure  # the machine logged it
        self._trouble = True

    def _link_changed(self, change: LinkChange) -> None:
        """The machine's transitions drive ``connected``, ``link_state`` waiters and the up line."""
        if change.after is LinkState.UP:
            self._client = self._link
            self.connections += 1
            self._resync()
            if not self._trouble:  # a recovery is the link machine's to report, once
                log.info("MQTT: connected to %s as %s", self.broker.where, self.client_id)
            self._trouble = False
        elif change.before is LinkState.UP:
            self._client = None
        self._wake()

    def _falls_back(self, exc: MqttConnectError) -> bool:
        """Switch to MQTT 3.1.1 for good if the broker refused MQTT 5 and the URL did not insist."""
        if not self._v5:
            return False
        rc = exc.rc
        code = rc if isinstance(rc, int) else getattr(rc, "value", None)
        if code not in _UNSUPPORTED_PROTOCOL:
            return False
        if self.broker.protocol == "5":
            raise aiomqtt.MqttError(
                f"the broker refused MQTT 5 ({exc}) and the URL insists on it (protocol=5): "
                "drop protocol=5 to allow MQTT 3.1.1"
            ) from exc
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
            # What an earlier process left (retained): components it published that we do not
            # offer now are deleted as platform-only entries when it arrives (_on_old_discovery).
            await self._subscribe_quietly(client, self.topics.discovery)
        if self.control == "full":
            await self._subscribe_quietly(client, self.topics.plan)
        await client.publish(self.topics.status, b"online", qos=1, retain=True)
        # State and timer before anything reads them as current: a retained timer an earlier
        # process left ("done, set 2 of 3") is replaced now, not when the pump gets to it.
        for kind in ("state", "timer"):
            latest = self.controller.hub.latest.get(kind)
            if latest is not None:
                await client.publish(self.topics.leaf(kind), _encode(latest.payload), 1, True)
            elif kind == "timer":
                await client.publish(self.topics.timer, _encode(IDLE_TIMER), 1, True)
        if self._discovery:
            item = self._discovery_message()
            await client.publish(item.topic, item.payload, item.qos, item.retain)

    async def _subscribe_quietly(self, client: aiomqtt.Client, topic: str) -> None:
        """Subscribe to a topic we also publish, without getting our own messages back (MQTT 5
        no-local; on 3.1.1 they come back live, not retained, and are told apart by that)."""
        if self._v5:
            await client.subscribe(topic, options=SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True))
        else:
            await client.subscribe(topic, qos=1)

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
            elif kind == "timer":
                self._outbox.put_nowait(_Outgoing(self.topics.timer, _encode(IDLE_TIMER), 1, True, unless="timer"))

    def _discovery_message(self) -> _Outgoing:
        """The discovery config now; components published before and not offered now go in it as
        platform-only entries, once (Home Assistant deletes a component only that way)."""
        snapshot = self.controller.snapshot()
        maker, model = self._names = _device_names(snapshot, self.controller)
        self._diagnostics = diagnostic_keys(snapshot.device)
        options: dict[str, Any] = {
            "control": self.control,
            "removed": self._known,
            "maker": maker,
            "model": model,
            "configuration_url": self._dashboard_url,
            "support_url": self._support_url,
            "speed_unit": self._speed_unit,
        }
        payload = discovery_payload(snapshot, base_topic=self.topics.base, **options)
        self._known = published(json.loads(payload))
        return _Outgoing(self.topics.discovery, payload, 1, True)

    def _on_old_discovery(self, payload: bytes) -> None:
        """The retained discovery config an earlier process (or connection) left."""
        try:
            before = published(json.loads(payload)) if payload.strip() else {}
        except ValueError:
            return
        gone = {k: p for k, p in before.items() if k not in self._known}
        if gone:
            self._known = {**gone, **self._known}
            self._outbox.put_nowait(self._discovery_message())

    # ------------------------------------------------------------------ out

    async def _forward_updates(self, sub: Subscription) -> None:
        async for update in sub:
            client = self._client
            if client is None:
                continue  # away: telemetry and events go stale; state and timer come back on reconnect
            leaf, qos, retain = _ROUTES[update.kind]
            # A failed publish means the link is going down; the link task reconnects and resyncs.
            with contextlib.suppress(aiomqtt.MqttError):
                if qos == 0 and not retain:  # telemetry
                    now = time.monotonic()
                    if now - self._telemetry_sent < self._telemetry_gap:
                        self.telemetry_skipped += 1
                    elif client.send_now(self.topics.leaf(leaf), _wire(update)):
                        self._telemetry_sent = now
                    else:
                        self.telemetry_dropped += 1
                    continue
                await client.publish(self.topics.leaf(leaf), _wire(update), qos, retain)
                # The driver reads the machine's maker and model after connecting: the device
                # block follows once it has them.
                renamed = update.kind == "state" and (
                    _device_names(update.payload, self.controller) != self._names
                    or diagnostic_keys(getattr(update.payload, "device", None)) != self._diagnostics
                )
                if renamed and self._discovery:
                    self._outbox.put_nowait(self._discovery_message())
                if update.kind == CUE:
                    # The event entity reads BASE/event only: the cue goes there too, as kind "cue".
                    await client.publish(self.topics.leaf("event"), _cue_event(update), 1, False)

    async def _send_outbox(self) -> None:
        while True:
            item = await self._outbox.get()
            client = self._client
            if client is None:
                continue  # nobody to tell; discovery is sent again on connect
            if item.unless is not None and item.unless in self.controller.hub.latest:
                continue  # a real one came meanwhile (the idle timer is only for when there is none)
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(item.topic, item.payload, item.qos, item.retain)

    def _answer(self, result: dict[str, Any]) -> None:
        self.answered += 1
        payload = json.dumps(result, separators=(",", ":")).encode()
        self._outbox.put_nowait(_Outgoing(self.topics.result, payload, 1, False))
        if not result.get("ok"):
            # Nobody reads cmd/result in Home Assistant: a refusal is an event too, with its reason.
            event = {
                "kind": REFUSED,
                "cmd": result.get("cmd"),
                "id": result.get("id"),
                "reason": result.get("error"),
                "rule": result.get("rule"),
                "ts": iso(time.time()),
            }
            self._outbox.put_nowait(_Outgoing(self.topics.leaf("event"), _json(event), 1, False))

    # ------------------------------------------------------------------ in

    async def _on_message(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = _as_bytes(message.payload)
        if topic == self.topics.ha_status:
            # Home Assistant came back (its birth message): it has forgotten the device, and its
            # entities show nothing until state and timer come again.
            if not message.retain and payload.strip() == b"online" and self._discovery:
                self._outbox.put_nowait(self._discovery_message())
                self._resync()
            return
        if topic == self.topics.discovery:
            if message.retain:
                self._on_old_discovery(payload)
            return
        if topic == self.topics.plan:
            self._choose_plan(payload)
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
        if name == "estop" or (name == "stop" and self._commands.full()):
            # In the message loop itself: an emergency stop never waits behind another command, and
            # a stop is never refused as "busy" (S5); what waited before it would run after it.
            self._supersede_waiting("an emergency stop" if name == "estop" else "a stop")
            self._answer(await self._execute(name, payload))
            return
        try:
            self._commands.put_nowait((name, payload))
        except asyncio.QueueFull:
            self._answer(reply(name, peek_id(payload), error="too many commands waiting; try again"))

    def _supersede_waiting(self, by: str) -> None:
        while True:
            try:
                name, payload = self._commands.get_nowait()
            except asyncio.QueueEmpty:
                return
            error = f"superseded by {by} that arrived after it"
            self._answer(reply(name, peek_id(payload), error=error, rule="S5"))

    async def _work_commands(self) -> None:
        while True:
            name, payload = await self._commands.get()
            self._answer(await self._execute(name, payload))

    async def _execute(self, name: str, payload: bytes) -> dict[str, Any]:
        """One command, start to answer. Never raises (but for cancellation)."""
        cmd_id: str | int | None = None
        try:
            if name in OPEN_COMMANDS:
                return await self._stop(name, payload)
            try:
                body: dict[str, Any] | None = parse_object(payload)
            except Refused as bad:
                body, unreadable = None, bad
            cmd_id = peek_id(body) if body is not None else None
            if name not in COMMANDS:
                raise Refused(f"unknown command {name[:64]!r}; one of {', '.join(COMMANDS)}")
            if self.control != "full":  # S16: over MQTT only the stops (above) unless "full"
                raise Refused(
                    f'{name} over MQTT is off (mqtt.control = "stop" takes only stop and estop); '
                    f'to allow it set mqtt.control = "full" and guard the broker with its ACL',
                    "S16",
                )
            if body is None:
                raise unreadable
            if name == "session" and body.get("action") == "start":
                # The Home Assistant button: the plan chosen on BASE/plan, or the default one.
                body = {k: v for k, v in body.items() if k != "action"} | {"plan": self._plan or DEFAULT_PLAN}
            command = parse_command(name, body)
            return reply_to(name, cmd_id, await self.controller.execute(command, "mqtt"))
        except Refused as refused:
            return reply(name, cmd_id, error=refused.error, rule=refused.rule)
        except Exception as exc:
            log.exception("MQTT: command %s failed", name[:64])
            return reply(name, cmd_id, error=f"internal error: {type(exc).__name__}")

    def _choose_plan(self, payload: bytes) -> None:
        """A plan chosen on BASE/plan (Home Assistant's select): kept for the start button; a name
        that is not a preset is ignored (the select offers only presets)."""
        name = payload.strip()[:64].decode(errors="replace").strip('"')
        if name in PRESETS:
            self._plan = name

    async def _stop(self, name: str, payload: bytes) -> dict[str, Any]:
        """S5: the stop is latched (estop) and written to the device before a byte of the payload is
        read, whatever its size or encoding; then its ``id`` and ``reason`` are read leniently, and
        a reason that cannot be read is recorded as unreadable. Extra fields are ignored: a stop
        takes no arguments, and is never refused for its body."""
        c = self.controller
        if name == "estop":
            outcome = await c.execute(EStopCommand(), "mqtt")
            note = read_stop(payload)
            if note.reason is not None:
                c.note_stop_reason(note.reason)
        else:
            outcome = await c.execute(StopCommand(), "mqtt")
            note = read_stop(payload)
        return reply_to(name, note.id, outcome)


# ------------------------------------------------------------------ helpers


def _encode(payload: Any) -> bytes:
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    return json.dumps(payload).encode()


def _wire(update: Update) -> bytes:
    """The update's JSON as bytes: the hub's encoding, made once for the SSE readers and us."""
    return update.memo("utf-8", _utf8)  # type: ignore[no-any-return]


def _utf8(update: Update) -> bytes:
    return update.json().encode()


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _cue_event(update: Update) -> bytes:
    """A cue as an event: kind "cue", the cue's own kind as "cue", its text, set and the rest of
    the cue, and the event's ``rule`` and ``reason`` fields (a stop cue's reason)."""
    cue = update.payload.model_dump(mode="json") if isinstance(update.payload, BaseModel) else dict(update.payload)
    event = {"rule": None, "reason": None, **cue, "kind": CUE, "cue": cue.get("kind")}
    return _json(event)


def _device_names(*sources: Any) -> tuple[str | None, str | None]:
    """The treadmill's own maker and model, where the driver knows them: the first of ``sources``
    (the snapshot, the controller) with a ``device`` (interfaces.md's block, or the driver's
    ``DeviceInfo``) that names either."""
    for source in sources:
        device = getattr(source, "device", None)
        if isinstance(device, dict):
            maker, model = device.get("maker"), device.get("model")
        else:
            maker, model = getattr(device, "maker", None), getattr(device, "model", None)
        names = tuple(v if isinstance(v, str) and v else None for v in (maker, model))
        if names != (None, None):
            return names[0], names[1]
    return None, None


def _as_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


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
