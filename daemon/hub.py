"""The state hub: immutable updates from the controller, fanned out to the faces.

The controller publishes without ever waiting: each subscriber has a bounded backlog, and a
subscriber that falls behind loses its oldest updates (counted), never slowing the safety loop.
A coalescing subscriber (a network reader that may be slow) keeps only the latest ``state``,
``timer`` and ``telemetry``: its backlog never grows past what it has not seen yet.
The latest state, timer and telemetry are kept, and a new subscriber starts from the state and
timer; a finished session's timer (done, aborted) reaches those listening, but the one kept is the
idle timer, so a reader that arrives later is never served a finished session as the current one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from retrotread.daemon.events import RUNNING_PHASES, Phase
from retrotread.daemon.snapshot import Cue, Event, SessionView, StateSnapshot, Telemetry

Kind = Literal["state", "telemetry", "timer", "event", "cue"]
Payload = StateSnapshot | Telemetry | SessionView | Event | Cue
"""What the hub carries: the typed, immutable messages of daemon/snapshot.py (an event's kind is
an ``EventKind``)."""

COALESCED: frozenset[Kind] = frozenset({"state", "telemetry", "timer"})
"""Kinds where only the latest matters to a reader that fell behind (events and cues each count)."""


@dataclass(frozen=True, slots=True)
class Update:
    kind: Kind
    payload: Payload
    """An immutable snapshot (a frozen pydantic model); never mutated after publishing."""
    _memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def json(self) -> str:
        """The payload as JSON, encoded once however many readers there are (500 SSE clients)."""
        return self.memo("json", self._dump)  # type: ignore[no-any-return]

    def memo(self, key: str, make: Callable[[Update], Any]) -> Any:
        """``make(self)``, computed once per update for every reader that asks (a face's framing)."""
        if key not in self._memo:
            self._memo[key] = make(self)
        return self._memo[key]

    def _dump(self, _self: Update) -> str:
        return self.payload.model_dump_json()


class Subscription:
    def __init__(self, hub: Hub, kinds: frozenset[Kind], maxsize: int, coalesce: bool = False) -> None:
        self._hub = hub
        self.kinds = kinds
        self.maxsize = max(1, maxsize)
        self.coalesce = coalesce
        self._pending: OrderedDict[Hashable, Update] = OrderedDict()
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._closed = False
        self._nudged = False
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def offer(self, update: Update) -> None:
        if update.kind not in self.kinds or self._closed:
            return
        if self.coalesce and update.kind in COALESCED:
            if self._pending.pop(update.kind, None) is not None:
                self.dropped += 1
            self._pending[update.kind] = update  # to the end: it is the newest
        else:
            self._pending[next(self._seq)] = update
        while len(self._pending) > self.maxsize:
            self._pending.popitem(last=False)
            self.dropped += 1
        self._wake.set()

    def take_all(self) -> list[Update]:
        """Everything waiting, without waiting (a reader that writes in batches)."""
        taken = list(self._pending.values())
        self._pending.clear()
        return taken

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def nudge(self) -> None:
        """Wake ``ready()`` once without an update: a reader's own timer (an SSE keep-alive) can
        reach the reader's task without a timeout wrapped around every wait."""
        self._nudged = True
        self._wake.set()

    async def ready(self) -> None:
        """Until an update is waiting, the subscription is closed or ``nudge()`` was called.

        For a reader that writes in batches (``take_all``): no timer is armed per wait, so a
        reader costs nothing between updates.
        """
        while not (self._pending or self._closed or self._nudged):
            self._wake.clear()
            await self._wake.wait()
        self._nudged = False

    async def _get(self) -> Update | None:
        while not self._pending:
            if self._closed:
                return None
            self._wake.clear()
            await self._wake.wait()
        return self._pending.popitem(last=False)[1]

    async def __aiter__(self) -> AsyncIterator[Update]:
        try:
            while True:
                update = await self._get()
                if update is None:
                    return
                yield update
        finally:
            self._hub.unsubscribe(self)

    async def next(self, within: float | None = None) -> Update | None:
        """The next update (None once closed), or TimeoutError after ``within`` seconds."""
        async with asyncio.timeout(within):
            return await self._get()


ALL_KINDS: frozenset[Kind] = frozenset({"state", "telemetry", "timer", "event", "cue"})
KEPT: frozenset[Kind] = frozenset({"state", "telemetry", "timer"})
"""Kinds whose latest update is kept (an event or a cue is a moment: past it, it is gone)."""


class Hub:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self.latest: dict[Kind, Update] = {}
        self.closed = False

    def publish(self, kind: Kind, payload: Payload) -> None:
        update = Update(kind, payload)
        if kind in KEPT:
            over = isinstance(payload, SessionView) and payload.phase not in (*RUNNING_PHASES, Phase.IDLE)
            self.latest[kind] = Update(kind, SessionView.idle()) if over else update
        for sub in tuple(self._subs):
            sub.offer(update)

    def subscribe(
        self, kinds: Iterable[Kind] = ALL_KINDS, maxsize: int = 256, replay: bool = True, coalesce: bool = False
    ) -> Subscription:
        sub = Subscription(self, frozenset(kinds), maxsize, coalesce)
        if self.closed:
            sub.close()
            return sub
        if replay:
            for kind in ("state", "timer"):
                if kind in self.latest:
                    sub.offer(self.latest[kind])
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        sub.close()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def close(self) -> None:
        """End every subscription (at shutdown, so streaming responses finish)."""
        self.closed = True
        for sub in tuple(self._subs):
            sub.close()
        self._subs.clear()
