"""What the floor view knows of each treadmill, read only from the broker's topics.

``Floor.apply(topic, payload)`` takes one message of ``<prefix>/<id>/status|state|timer|event``
and updates that treadmill's ``Tile``; anything else, or a payload it cannot read, changes
nothing (a floor screen never fails on a stranger's message). ``Floor.ordered()`` sorts by
attention: a latched stop first, then a treadmill in use, then the idle ones, then those offline.

Pure state (no I/O): the service (``service.py``) feeds it and serves it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

LEAVES = ("status", "state", "timer", "event")
RUNNING_PHASES = frozenset({"countdown", "work", "rest"})
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # as api.mqtt.topics: one topic level, no wildcards
MAX_TILES = 1000  # a floor is tens of treadmills; a flood of made-up ids must not grow without bound


@dataclass(slots=True)
class Tile:
    id: str
    online: bool = False
    mode: str | None = None
    connected: bool | None = None
    speed_mph: float | None = None
    moving: bool = False
    latched: bool = False
    reason: str | None = None
    rule: str | None = None
    phase: str | None = None
    set: int | None = None
    sets: int | None = None
    remaining_s: float | None = None
    paused: bool = False
    last_event: str | None = None
    last_event_ts: str | None = None

    @property
    def running(self) -> bool:
        return self.moving or (self.phase in RUNNING_PHASES and not self.paused)

    @property
    def attention(self) -> int:
        """0 a latched stop, 1 in use, 2 online and idle, 3 offline."""
        if self.latched:
            return 0
        if self.running:
            return 1
        return 2 if self.online else 3

    def view(self) -> dict[str, Any]:
        return {**asdict(self), "running": self.running, "attention": self.attention}


class Floor:
    """The tiles, and a version that grows with every change (long-polling readers wait on it)."""

    def __init__(self, prefix: str = "retrotread") -> None:
        self.prefix = prefix
        self.tiles: dict[str, Tile] = {}
        self.version = 0
        self.broker_up = False
        self._changed = asyncio.Event()

    def topics(self) -> list[str]:
        return [f"{self.prefix}/+/{leaf}" for leaf in LEAVES]

    def apply(self, topic: str, payload: bytes) -> bool:
        """One broker message; True when it changed a tile."""
        parts = topic.split("/")
        head = self.prefix.split("/")
        if len(parts) != len(head) + 2 or parts[: len(head)] != head:
            return False
        tid, leaf = parts[-2], parts[-1]
        if leaf not in LEAVES or not _ID.match(tid):
            return False
        if not payload.strip():
            # An empty retained message clears a topic (``retrotread mqtt forget``): on status,
            # the treadmill is gone for good.
            if leaf == "status" and self.tiles.pop(tid, None) is not None:
                self._bump()
                return True
            return False
        tile = self.tiles.get(tid)
        if tile is None:
            if len(self.tiles) >= MAX_TILES:
                return False
            tile = Tile(tid)
        try:
            changed = _read(tile, leaf, payload)
        except (ValueError, TypeError, KeyError, AttributeError):
            return False  # not the payload of interfaces.md: nothing changes
        if changed:
            self.tiles[tid] = tile
            self._bump()
        return changed

    def set_broker(self, up: bool) -> None:
        if up != self.broker_up:
            self.broker_up = up
            self._bump()

    def ordered(self) -> list[Tile]:
        return sorted(self.tiles.values(), key=lambda t: (t.attention, t.id))

    def snapshot(self) -> dict[str, Any]:
        return {"version": self.version, "broker": self.broker_up, "tiles": [t.view() for t in self.ordered()]}

    async def wait_after(self, version: int, within: float) -> None:
        """Until the version is past ``version``, or ``within`` seconds have gone."""
        try:
            async with asyncio.timeout(within):
                while self.version <= version:
                    await self._changed.wait()
        except TimeoutError:
            pass

    def _bump(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def _read(tile: Tile, leaf: str, payload: bytes) -> bool:
    if leaf == "status":
        text = payload.strip().decode(errors="replace")
        if text not in ("online", "offline"):
            return False
        tile.online = text == "online"
        return True
    data = json.loads(payload)
    if not isinstance(data, dict):
        return False
    if leaf == "state":
        belt = data.get("belt")
        stop = data["stop"]
        tile.mode = _str(data.get("mode"))
        tile.connected = bool(data.get("connected"))
        tile.speed_mph = _num(belt.get("speed_mph")) if isinstance(belt, dict) else None
        tile.moving = bool(belt.get("moving")) if isinstance(belt, dict) else False
        tile.latched = bool(stop["latched"])
        tile.reason = _str(stop.get("reason")) if tile.latched else None
        tile.rule = _str(stop.get("rule")) if tile.latched else None
        return True
    if leaf == "timer":
        tile.phase = _str(data["phase"])
        tile.set = _int(data.get("set"))
        tile.sets = _int(data.get("sets"))
        tile.remaining_s = _num(data.get("remaining_s"))
        tile.paused = bool(data.get("paused"))
        return True
    kind = _str(data.get("kind"))
    if kind is None:
        return False
    tile.last_event = kind
    tile.last_event_ts = _str(data.get("ts"))
    return True


def _str(value: Any) -> str | None:
    return value[:200] if isinstance(value, str) else None


def _num(value: Any) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None  # NaN and infinities parse as JSON numbers here; the page could not show them
    return float(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
