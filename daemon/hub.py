"""The state hub: immutable updates from the controller, fanned out to the faces.

The controller publishes without ever waiting: each subscriber has a bounded queue, and a
subscriber that falls behind loses its oldest updates (counted), never slowing the safety loop.
The latest update of each kind is kept, so a new subscriber starts from the current state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["state", "telemetry", "timer", "event"]


@dataclass(frozen=True, slots=True)
class Update:
    kind: Kind
    payload: Any
    """An immutable snapshot (a frozen pydantic model or a tuple); never mutated after publishing."""


class Subscription:
    def __init__(self, hub: Hub, kinds: frozenset[Kind], maxsize: int) -> None:
        self._hub = hub
        self.kinds = kinds
        self.queue: asyncio.Queue[Update | None] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, update: Update) -> None:
        if update.kind not in self.kinds:
            return
        while True:
            try:
                self.queue.put_nowait(update)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                    self.dropped += 1

    def close(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[Update]:
        try:
            while True:
                update = await self.queue.get()
                if update is None:
                    return
                yield update
        finally:
            self._hub.unsubscribe(self)

    async def next(self, within: float | None = None) -> Update | None:
        """The next update, or TimeoutError after ``within`` seconds."""
        async with asyncio.timeout(within):
            return await self.queue.get()


ALL_KINDS: frozenset[Kind] = frozenset({"state", "telemetry", "timer", "event"})


class Hub:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self.latest: dict[Kind, Update] = {}
        self.closed = False

    def publish(self, kind: Kind, payload: Any) -> None:
        update = Update(kind, payload)
        if kind != "event":
            self.latest[kind] = update
        for sub in tuple(self._subs):
            sub.offer(update)

    def subscribe(self, kinds: Iterable[Kind] = ALL_KINDS, maxsize: int = 256, replay: bool = True) -> Subscription:
        sub = Subscription(self, frozenset(kinds), maxsize)
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

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def close(self) -> None:
        """End every subscription (at shutdown, so streaming responses finish)."""
        self.closed = True
        for sub in tuple(self._subs):
            sub.close()
        self._subs.clear()
