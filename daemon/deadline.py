"""A wake-up at a monotonic time that can be moved without waking anyone (issue 16).

The safety evaluation runs when a sample arrives, and a deadline timer guarantees one when samples
are late or absent (S17). Each evaluation moves the deadline; done with a sleeping task, every move
would wake that task (a cancelled sleep is a loop turn, a lapsed one a wake-up for nothing). Here
the deadline is one timer handle of the event loop, replaced on each move: the loop drops a
cancelled handle without waking, so while samples come on time the timer never fires at all.

A controller on a test's clock passes its own ``sleep``; then the waiter sleeps to the deadline and,
if it moved meanwhile, on to the new one: the same deadlines on the test's time, more naps.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

__all__ = ["Deadline"]

EARLY_S = 1e-6
"""A wake this close to the deadline counts as on it (the loop runs a timer up to its clock's
resolution early; the supervisor allows the same, S5's repeat)."""


class Deadline:
    """One waiter (``wait``) and any number of moves (``arm``); times are ``clock``'s (monotonic)."""

    def __init__(self, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        """``sleep`` None: the event loop's own timers, so ``clock`` must tell real monotonic time."""
        self._clock = clock
        self._sleep = sleep
        self._when = -math.inf
        self._waiter: asyncio.Future[None] | None = None
        self._handle: asyncio.TimerHandle | None = None

    @property
    def when(self) -> float:
        """The armed time (minus infinity before the first ``arm``: already due)."""
        return self._when

    def arm(self, when: float) -> None:
        """Wake the waiter at ``when`` instead of the time armed before (earlier or later)."""
        self._when = when
        if self._waiter is not None and not self._waiter.done():
            self._schedule(self._waiter)

    async def wait(self) -> None:
        """Return once the clock has reached the armed time (within EARLY_S), following any move made
        meanwhile; at once if it already has."""
        while (delay := self._when - self._clock()) > EARLY_S:
            if self._sleep is not None:
                await self._sleep(delay)
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            self._schedule(waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if self._handle is not None:
                    self._handle.cancel()
                    self._handle = None

    def _schedule(self, waiter: asyncio.Future[None]) -> None:
        if self._handle is not None:
            self._handle.cancel()
        delay = max(0.0, self._when - self._clock())
        self._handle = waiter.get_loop().call_later(delay, _release, waiter)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
