"""One link state machine: down → opening → greeting → up, and back down, with capped backoff.

Every driver that keeps a link to a device (the serial drivers, the FTMS driver) and the MQTT
bridge keep it the same way, in the manner of aioesphomeapi's ``ReconnectLogic``:

```
           connect() / run()              greeting body returns
  DOWN ─────────────────────▶ OPENING ──▶ GREETING ──────────────▶ UP
   ▲   opening body returns ───┘  │           │                     │ up body ends (the link dropped)
   └──────────────────────────────┴───────────┴─────────────────────┘ any failure: closing body, then backoff
```

The owner gives four bodies: ``opening`` (get a transport), ``greeting`` (the first exchange on
it, e.g. the stop of rule S9), ``up`` (runs until the link drops: return or raise), and
``closing`` (release what an attempt or a dropped link left behind). Each is a coroutine, and is
cancelled with ``run()``. Cancelling ``run()`` while up leaves the link to the owner's own close:
only the owner knows what must drain first (a last stop).

Between attempts the machine waits ``Backoff.next()``: ``initial_s`` doubling up to ``ceiling_s``,
reset when the link is up again. ``retry_now()`` skips one wait (a device announced itself, a
person asked). Failures go to ``on_failure`` with the exception and the state they happened in;
every transition goes to the ``on_change`` listeners, and ``wait_for(state)`` waits without polling.

Logging: one WARNING when the link drops, one on the first failed attempt, one on recovery; the
repeats are DEBUG. The URL in every record has no credentials (``public_url``).

This module must know nothing of any device, protocol or safety rule: the bodies do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit

from retrotread.drivers.errors import LinkLost, TreadError

__all__ = ["Backoff", "LinkChange", "LinkFailure", "LinkMachine", "LinkState", "public_url"]

_log = logging.getLogger(__name__)

Body = Callable[[], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]

_SECRETS = frozenset({"password", "pass", "passwd", "token", "secret", "key", "psk"})


class LinkState(Enum):
    DOWN = "down"
    OPENING = "opening"
    GREETING = "greeting"
    UP = "up"


@dataclass(frozen=True, slots=True)
class LinkFailure:
    """What went wrong, and in which state: a failed open or greeting, or an up link that dropped."""

    state: LinkState
    error: BaseException
    attempt: int
    """Failed attempts since the link was last up (0 for the drop of an up link)."""


@dataclass(frozen=True, slots=True)
class LinkChange:
    before: LinkState
    after: LinkState
    recovered: bool = False
    """True when ``after`` is UP and the link had been up before (a reconnect, not the first open)."""


def public_url(url: str) -> str:
    """``url`` without credentials: no user or password, no secret query option.

    ``mqtt://u:p@host:1883?password=x&qos=1`` → ``mqtt://host:1883?qos=1``; the path, the rest of
    the query and the case of a Bluetooth address are kept as written.
    """
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() not in _SECRETS])
    # Built by hand: urlunsplit drops the "//" of an empty netloc (csafe:///dev/ttyUSB0).
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


class Backoff:
    """Capped exponential delays: ``initial_s``, ``initial_s * factor``, ... up to ``ceiling_s``."""

    def __init__(self, initial_s: float = 0.05, ceiling_s: float = 1.0, factor: float = 2.0) -> None:
        if not (0 < initial_s <= ceiling_s) or factor < 1:
            raise ValueError(
                f"backoff needs 0 < initial_s <= ceiling_s and factor >= 1, got {initial_s}, {ceiling_s}, {factor}"
            )
        self.initial_s = initial_s
        self.ceiling_s = ceiling_s
        self.factor = factor
        self._next = initial_s

    def next(self) -> float:
        delay = self._next
        self._next = min(self.ceiling_s, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


async def _nothing() -> None:
    return None


class LinkMachine:
    """Keeps one link up (see the module docstring). One owner; ``run()`` once at a time."""

    def __init__(
        self,
        url: str,
        *,
        opening: Body,
        greeting: Body = _nothing,
        up: Body,
        closing: Body = _nothing,
        backoff: Backoff | None = None,
        retry_on: tuple[type[Exception], ...] = (Exception,),
        expected: tuple[type[Exception], ...] = (),
        on_failure: Callable[[LinkFailure], None] | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = _log,
    ) -> None:
        self.url = public_url(url)
        self._opening = opening
        self._greeting = greeting
        self._up = up
        self._closing = closing
        self.backoff = backoff or Backoff()
        self._retry_on = retry_on
        # Failures that tell their whole story in the message (ours, the OS's, the transport
        # library's): logged without a traceback; anything else gets one.
        self._expected: tuple[type[Exception], ...] = (TreadError, OSError, EOFError, *expected)
        self._on_failure = on_failure
        self._sleep = sleep
        self._clock = clock
        self._log = logger
        self._state = LinkState.DOWN
        self._listeners: list[Callable[[LinkChange], None]] = []
        self._waiters: list[tuple[LinkState, asyncio.Future[None]]] = []
        self._retry_now = False
        self._wake: asyncio.Event | None = None
        self._down_since: float | None = None
        self._attempted = False
        self.ups = 0
        """How many times the link came up."""
        self.failures = 0
        """Failed attempts since the link was last up."""

    # -- what the owner reads --------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def is_up(self) -> bool:
        return self._state is LinkState.UP

    def add_listener(self, listener: Callable[[LinkChange], None]) -> Callable[[], None]:
        """Call ``listener`` on every transition; returns the function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def wait_for(self, state: LinkState) -> None:
        """Return once the machine is in ``state`` (at once if it is). Bound it with a timeout."""
        if self._state is state:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (state, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def retry_now(self) -> None:
        """Skip the next backoff wait once (or the one under way): try again at once."""
        self._retry_now = True
        if self._wake is not None:
            self._wake.set()

    def closed(self) -> None:
        """The owner closed the link itself (after cancelling ``run()``): DOWN, backoff from the start."""
        self._set(LinkState.DOWN)
        self.backoff.reset()
        self._retry_now = False

    # -- running ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        """One attempt, opening then greeting: UP, or DOWN with the failure raised (never retried).

        The first open of a driver is this: a wrong port or a console that is off is the caller's
        error to see at once, not a reason to retry for ever.
        """
        await self._attempt()
        self._log.debug("%s: link up", self.url)

    async def run(self) -> NoReturn:
        """Keep the link: serve it while up, and bring it back with backoff when it drops.

        Runs until cancelled, or until a body raises an exception outside ``retry_on`` (a bug of
        ours: it propagates, after the closing body ran).
        """
        while True:
            if self._state is LinkState.UP:
                await self._serve()
                continue
            await self._pause()
            try:
                await self._attempt()
            except self._retry_on as exc:
                self._attempt_failed(exc)
                continue
            self._recovered()

    async def _attempt(self) -> None:
        self._attempted = True
        state = LinkState.OPENING
        try:
            self._set(LinkState.OPENING)
            await self._opening()
            state = LinkState.GREETING
            self._set(LinkState.GREETING)
            await self._greeting()
        except BaseException as exc:
            self.failures += 1
            self._set(LinkState.DOWN)
            if self._on_failure is not None and isinstance(exc, Exception):
                self._on_failure(LinkFailure(state, exc, self.failures))
            await self._closing()
            raise
        self._set(LinkState.UP)

    async def _serve(self) -> None:
        try:
            await self._up()
        except self._retry_on as exc:
            error: Exception = exc
        except asyncio.CancelledError:
            self._set(LinkState.DOWN)
            raise  # the owner closes the link itself (see the module docstring)
        except BaseException:
            self._set(LinkState.DOWN)
            await self._closing()
            raise
        else:
            error = LinkLost(f"{self.url}: the link dropped")
        self.failures = 0
        self._down_since = self._clock()
        self._set(LinkState.DOWN)
        self._log.warning("%s: link lost (%s); reconnecting", self.url, error)
        if self._on_failure is not None:
            self._on_failure(LinkFailure(LinkState.UP, error, 0))
        await self._closing()

    def _attempt_failed(self, exc: Exception) -> None:
        if self.failures == 1:
            self._log.warning(
                "%s: cannot %s (%s); retrying with backoff up to %g s",
                self.url,
                "reconnect" if self.ups else "connect",
                exc,
                self.backoff.ceiling_s,
                exc_info=not isinstance(exc, self._expected),
            )
        else:
            self._log.debug("%s: reconnect attempt %d failed: %s", self.url, self.failures, exc)

    def _recovered(self) -> None:
        if self.failures == 0 and self._down_since is None:
            # run() from DOWN that connected at the first try: nothing was lost, nothing to warn of.
            self._log.info("%s: link up", self.url)
            return
        down_for = self._clock() - self._down_since if self._down_since is not None else 0.0
        self._log.warning(
            "%s: connected again (link back after %d failed attempt(s), %.1f s down)",
            self.url,
            self.failures,
            max(0.0, down_for),
        )
        self.failures = 0
        self._down_since = None

    async def _pause(self) -> None:
        """The backoff wait before the next attempt, cut short by ``retry_now()``."""
        if not self._attempted:
            return  # run() from DOWN: the very first attempt goes at once
        delay = self.backoff.next()
        if self._retry_now:
            self._retry_now = False
            return
        wake = self._wake = asyncio.Event()
        sleeping = asyncio.ensure_future(self._sleep(delay))
        woken = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._wake = None
            for task in (sleeping, woken):
                task.cancel()
            await asyncio.gather(sleeping, woken, return_exceptions=True)
        self._retry_now = False

    def _set(self, state: LinkState) -> None:
        before, self._state = self._state, state
        if before is state:
            return
        recovered = False
        if state is LinkState.UP:
            self.ups += 1
            recovered = self.ups > 1
            self.backoff.reset()
        change = LinkChange(before, state, recovered)
        for listener in list(self._listeners):
            listener(change)
        for wanted, waiter in list(self._waiters):
            if wanted is state and not waiter.done():
                waiter.set_result(None)
