"""Link faults as transport manipulators (``sims.link``): packets in, packets out, no device."""

from __future__ import annotations

import pytest

from retrotread.drivers.csafe import codec
from retrotread.sims.csafe_device import garbage
from retrotread.sims.faults import FaultKind
from retrotread.sims.link import FaultyLink, cycle, drop, drop_every, flip, prefix, replace, suffix


def link(**kw: object) -> tuple[FaultyLink[bytes], list[bytes]]:
    sent: list[bytes] = []
    return FaultyLink(sent.append, **kw), sent  # type: ignore[arg-type]


def test_manipulators_are_pure_packets_in_packets_out() -> None:
    assert drop([b"a", b"b"]) == []
    assert prefix(b"<")([b"a", b"b"]) == [b"<a", b"<b"]
    assert suffix(b">")([b"a"]) == [b"a>"]
    assert flip(1, 0x01)([b"\x10\x20\x30", b"\x10"]) == [b"\x10\x21\x30", b"\x10"]  # too short: as is
    make = replace(lambda n: bytes((n,)))
    assert (make([b"a", b"b"]), make([b"c"]), make([])) == ([b"\x01"], [b"\x02"], [])
    lose = drop_every(3)
    assert lose([b"1", b"2", b"3", b"4", b"5", b"6", b"7"]) == [b"2", b"3", b"5", b"6"]
    turns = cycle(prefix(b"<"), suffix(b">"))
    assert turns([b"a", b"b", b"c"]) == [b"<a", b"b>", b"<c"]
    with pytest.raises(ValueError):
        drop_every(0)


def test_a_clean_link_passes_everything_and_manipulators_apply_in_order() -> None:
    wire, sent = link()
    assert wire.write([b"a", b"b"]) == 2
    wire.set_manipulator(prefix(b"1"))
    wire.set_manipulator(prefix(b"2"))
    wire.write([b"c"])
    assert sent == [b"a", b"b", b"21c"]
    assert wire.kinds == frozenset({FaultKind.STALL, FaultKind.UNPLUG})  # no garbage of its own


def test_stall_lets_nothing_through_and_counts_what_it_lost() -> None:
    wire, sent = link()
    wire.strike(FaultKind.STALL)
    assert wire.write([b"a", b"b"]) == 0
    assert (sent, wire.sent, wire.lost) == ([], 0, 2)
    wire.clear()
    wire.write([b"c"])
    assert sent == [b"c"]


def test_unplug_runs_the_transport_hooks_once_and_loses_writes_until_the_replug() -> None:
    hooks: list[str] = []
    wire, sent = link(unplug=lambda: hooks.append("out"), plug=lambda: hooks.append("in"))
    wire.strike(FaultKind.UNPLUG)
    wire.unplug()  # already out: the cable cannot be pulled twice
    assert wire.write([b"a"]) == 0 and not wire.plugged
    wire.replug()
    wire.replug()
    wire.write([b"b"])
    assert (hooks, sent, wire.lost) == (["out", "in"], [b"b"], 1)


def test_garbage_is_the_devices_own_noise() -> None:
    wire, sent = link(garbage=suffix(b"#"))
    assert FaultKind.GARBAGE in wire.kinds
    wire.strike(FaultKind.GARBAGE)
    wire.write([b"a"])
    assert sent == [b"a#"]
    with pytest.raises(ValueError, match="ignore"):
        wire.strike(FaultKind.IGNORE)


def test_delay_holds_packets_until_release_in_order() -> None:
    wire, sent = link()
    wire.delay()
    wire.write([b"a"])
    wire.write([b"b"])
    assert sent == []
    wire.release()
    assert sent == [b"a", b"b"]


def test_the_csafe_consoles_garbage_makes_every_answer_unusable_or_resyncable() -> None:
    # An answer as the console writes it: status 0x81 (toggle 1, ok, Ready) and no data.
    answer = codec.encode_contents(bytes((0x81,)))
    out = garbage()([answer, answer, answer, answer])
    assert out[0] == b"\x00\x55\xaa\xf1\x13\x37" + answer  # a stray start flag, then the answer
    assert out[1][:1] == answer[:1] and out[1][1] == answer[1] ^ 0x01 and out[1][2:] == answer[2:]
    assert out[2] == answer + b"\x00\xff\x7e"
    assert out[3] == out[0]  # and round again
    decoder = codec.FrameDecoder()
    decoder.feed(b"".join(out[:3]))
    frames = [item for item in decoder if not isinstance(item, codec.BadFrame)]
    assert [f.contents for f in frames] == [bytes((0x81,)), bytes((0x81,))]  # the flipped one is dropped
