"""Link faults as transport manipulators, written once for every simulated device.

A ``FaultyLink`` wraps what a device sends on (the pty endpoint of a serial device, the Treadmill
Data notifications of the FTMS radio, the sample queue of ``sim://``). Everything the device sends
goes through ``write(packets)``, then through the link's manipulators in order, then to the real
sink, in the way of pymodbus's ``NullModem.set_manipulator``: a manipulator takes the list of packets
about to be sent and returns the list to send instead (fewer, more, changed, none).

The link faults of ``sims.faults`` are manipulators installed by ``strike(kind)``:

- ``stall``: nothing gets through (``drop``), the device carries on behind it;
- ``garbage``: the device's own noise (it knows what corrupt bytes look like on its wire; the
  helpers here build the usual ones: noise before, noise after, one bit flipped, a packet replaced);
- ``unplug``: the cable is out until ``replug()``: nothing gets through, and the device's ``unplug``
  and ``plug`` hooks do what pulling a cable does to its transport (a pty closed, a radio link
  dropped).

``delay`` holds packets back until ``release()`` (a slow device); ``drop_every`` loses one in N.

This module must not know any protocol: bytes or samples in, bytes or samples out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import count
from typing import Generic, TypeVar

from retrotread.sims.faults import FaultKind

T = TypeVar("T")

Manipulator = Callable[[list[T]], list[T]]
"""Packets about to be sent in, packets to send out (pymodbus ``NullModem.set_manipulator``)."""


def drop(packets: list[T]) -> list[T]:
    """A stalled stream: nothing gets through."""
    return []


def cycle(*manipulators: Manipulator[T]) -> Manipulator[T]:
    """Each packet through the next of ``manipulators`` in turn (noise that varies)."""
    turn: Iterator[int] = count()

    def manipulate(packets: list[T]) -> list[T]:
        out: list[T] = []
        for packet in packets:
            out += manipulators[next(turn) % len(manipulators)]([packet])
        return out

    return manipulate


def prefix(noise: bytes) -> Manipulator[bytes]:
    """Noise before each packet."""
    return lambda packets: [noise + p for p in packets]


def suffix(noise: bytes) -> Manipulator[bytes]:
    """Noise after each packet."""
    return lambda packets: [p + noise for p in packets]


def flip(index: int, mask: int) -> Manipulator[bytes]:
    """Byte ``index`` of each packet XORed with ``mask`` (a bit hit by noise); shorter packets pass."""

    def manipulate(packets: list[bytes]) -> list[bytes]:
        out = []
        for packet in packets:
            bad = bytearray(packet)
            if index < len(bad):
                bad[index] ^= mask
            out.append(bytes(bad))
        return out

    return manipulate


def replace(make: Callable[[int], T]) -> Manipulator[T]:
    """The packets of one write replaced by the single one ``make(n)`` builds (n = 1, 2, ...)."""
    turn = count(1)
    return lambda packets: [make(next(turn))] if packets else []


def drop_every(n: int) -> Manipulator[T]:
    """One packet in ``n`` is lost (the first of each ``n``)."""
    if n < 1:
        raise ValueError(f"drop_every needs n >= 1, got {n}")
    turn = count()
    return lambda packets: [p for p in packets if next(turn) % n]


def _nothing() -> None:
    return None


class FaultyLink(Generic[T]):
    """A transport with manipulators; ``kinds`` are the link faults it takes (``LinkFaults``)."""

    def __init__(
        self,
        send: Callable[[T], object],
        *,
        garbage: Manipulator[T] | None = None,
        unplug: Callable[[], None] = _nothing,
        plug: Callable[[], None] = _nothing,
    ) -> None:
        self._send = send
        self._garbage = garbage
        self._unplug_hook = unplug
        self._plug_hook = plug
        self._manipulators: list[Manipulator[T]] = []
        self._held: list[T] | None = None
        self.plugged = True
        self.sent = 0
        """Packets that reached the sink."""
        self.lost = 0
        """Packets the link's faults kept from it (dropped, or written while unplugged)."""

    @property
    def kinds(self) -> frozenset[FaultKind]:
        kinds = {FaultKind.STALL, FaultKind.UNPLUG}
        if self._garbage is not None:
            kinds.add(FaultKind.GARBAGE)
        return frozenset(kinds)

    def set_manipulator(self, manipulator: Manipulator[T]) -> None:
        """Add ``manipulator`` after those already there."""
        self._manipulators.append(manipulator)

    def remove_manipulator(self, manipulator: Manipulator[T]) -> None:
        if manipulator in self._manipulators:
            self._manipulators.remove(manipulator)

    def write(self, packets: Sequence[T]) -> int:
        """Send ``packets`` through the manipulators; how many reached the sink."""
        out = list(packets)
        for manipulator in self._manipulators:
            out = manipulator(out)
        if not self.plugged:
            self.lost += len(out)
            return 0
        if self._held is not None:
            self._held += out
            return 0
        for packet in out:
            self._send(packet)
        self.sent += len(out)
        self.lost += max(0, len(packets) - len(out))
        return len(out)

    # -- link faults ------------------------------------------------------------------------------

    def strike(self, kind: FaultKind) -> None:
        if kind is FaultKind.STALL:
            self.set_manipulator(drop)
        elif kind is FaultKind.GARBAGE and self._garbage is not None:
            self.set_manipulator(self._garbage)
        elif kind is FaultKind.UNPLUG:
            self.unplug()
        else:
            raise ValueError(f"{kind.value!r} is not a fault of the link")

    def unplug(self) -> None:
        """The cable is out: nothing gets through until ``replug()``."""
        if self.plugged:
            self.plugged = False
            self._unplug_hook()

    def replug(self) -> None:
        if not self.plugged:
            self.plugged = True
            self._plug_hook()

    def clear(self) -> None:
        """Every manipulator off (stall and garbage end), held packets sent."""
        self._manipulators.clear()
        self.release()

    # -- a slow device ----------------------------------------------------------------------------

    def delay(self) -> None:
        """Hold what gets through back until ``release()``."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held, self._held = self._held, None
        if held:
            self.write_through(held)

    def write_through(self, packets: Sequence[T]) -> None:
        """Send ``packets`` to the sink with no manipulator (held ones, already manipulated)."""
        if not self.plugged:
            self.lost += len(packets)
            return
        for packet in packets:
            self._send(packet)
        self.sent += len(packets)


__all__ = [
    "FaultyLink",
    "Manipulator",
    "cycle",
    "drop",
    "drop_every",
    "flip",
    "prefix",
    "replace",
    "suffix",
]
