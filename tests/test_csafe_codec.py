"""The CSAFE codec against byte vectors from real devices (tests/vectors/csafe.json), the rounding
of rule S2, and properties: frames round-trip, the stream decoder resyncs and only ever reports
errors of its own type."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from retrotread.drivers.csafe.codec import (
    MAX_FRAME_BYTES,
    NEED_MORE,
    Answer,
    BadFrame,
    Command,
    CommandCode,
    CsafeFrameError,
    CsafeUnitError,
    Frame,
    FrameDecoder,
    MachineState,
    PreviousFrame,
    Response,
    Status,
    Unit,
    UnitSystem,
    UserInfo,
    Version,
    WorkTime,
    decode_error_code,
    decode_frame,
    decode_grade,
    decode_horizontal,
    decode_request,
    decode_speed,
    decode_twork,
    decode_units,
    decode_user_info,
    decode_version,
    encode_contents,
    encode_frame,
    get_grade,
    get_speed,
    get_status,
    go_finished,
    go_idle,
    parse_response,
    set_grade,
    set_speed,
    set_timeout,
    set_twork,
    stop_commands,
    unit_for,
)
from retrotread.drivers.csafe.describe import describe_frame
from retrotread.drivers.errors import CodecError, LocalProtocolError, RemoteProtocolError
from retrotread.drivers.units import Rounding, Speed, SpeedUnit

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "vectors" / "csafe.json").read_text(encoding="utf-8"))
FRAME_VECTORS = VECTORS["frames"]
EXCHANGES = VECTORS["exchanges"]

# Line noise seen before a frame: a zero, a stray byte, the end flag of a frame we joined halfway,
# and a byte that would be a long command.
GARBAGE = b"\x00\x55\xf2\x13"

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


PARSERS: tuple[Callable[[bytes], object], ...] = (parse_response, decode_request, describe_frame)
"""Everything that reads bytes from outside: each may refuse them, only with a CodecError."""


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


def _vector_id(vector: dict[str, Any]) -> str:
    return str(vector.get("note") or vector.get("source") or vector.get("request"))


def _frames_of(decoder: FrameDecoder) -> list[Frame | BadFrame]:
    return list(decoder)


def _feed_bytewise(frame: bytes) -> tuple[list[Frame | BadFrame], FrameDecoder]:
    decoder = FrameDecoder()
    found: list[Frame | BadFrame] = []
    for i in range(len(frame)):
        decoder.feed(frame[i : i + 1])
        found.extend(decoder)
    return found, decoder


# --- the 'frames' vectors: host-to-equipment frames with their contents ------------------------


@pytest.mark.parametrize("vector", FRAME_VECTORS, ids=_vector_id)
def test_frame_vector_encodes_contents_to_the_captured_frame(vector: dict[str, Any]) -> None:
    assert encode_contents(_hex(vector["contents"])) == _hex(vector["frame"])


@pytest.mark.parametrize("vector", FRAME_VECTORS, ids=_vector_id)
def test_frame_vector_decodes_back_to_its_contents(vector: dict[str, Any]) -> None:
    assert decode_frame(_hex(vector["frame"])) == Frame(_hex(vector["contents"]))


@pytest.mark.parametrize("vector", FRAME_VECTORS, ids=_vector_id)
def test_frame_vector_fed_one_byte_at_a_time(vector: dict[str, Any]) -> None:
    frame = _hex(vector["frame"])
    found, decoder = _feed_bytewise(frame)
    assert found == [Frame(_hex(vector["contents"]))]
    assert decoder.next_frame() is NEED_MORE
    assert decoder.pending == 0


@pytest.mark.parametrize("vector", FRAME_VECTORS, ids=_vector_id)
def test_frame_vector_found_after_garbage(vector: dict[str, Any]) -> None:
    decoder = FrameDecoder()
    decoder.feed(GARBAGE + _hex(vector["frame"]))
    assert _frames_of(decoder) == [Frame(_hex(vector["contents"]))]
    assert decoder.skipped_bytes == len(GARBAGE)


@pytest.mark.parametrize("vector", FRAME_VECTORS, ids=_vector_id)
def test_frame_vector_found_after_garbage_one_byte_at_a_time(vector: dict[str, Any]) -> None:
    found, _ = _feed_bytewise(GARBAGE + _hex(vector["frame"]))
    assert found == [Frame(_hex(vector["contents"]))]


def test_stop_vector_is_what_stop_commands_builds() -> None:
    # csafe.md "Stopping a CSAFE treadmill": SetSpeed 0 and GoFinished in one frame.
    assert encode_frame(stop_commands(Unit.MPH_HUNDREDTHS)) == _hex("f1 25 03 00 00 12 86 b2 f2")
    assert decode_request(_hex("25 03 00 00 12 86")) == stop_commands(Unit.MPH_HUNDREDTHS)


def test_set_grade_vector_two_percent_in_tenths() -> None:
    command = set_grade(2.0, Unit.GRADE_TENTHS_PERCENT)
    assert encode_frame([command]) == _hex("f1 28 03 14 00 4c 73 f2")
    assert decode_grade(command) == 2.0


def test_set_speed_vector_with_a_data_byte_that_needs_stuffing() -> None:
    command = set_speed(Speed.from_mph(2.4), Unit.MPH_HUNDREDTHS)
    assert encode_frame([command]) == _hex("f1 25 03 f3 00 00 12 c4 f2")


# --- the 'exchanges' vectors: real request/response pairs --------------------------------------


@pytest.mark.parametrize("exchange", EXCHANGES, ids=_vector_id)
def test_exchange_request_decodes_to_one_short_command(exchange: dict[str, Any]) -> None:
    frame = decode_frame(_hex(exchange["request"]))
    (command,) = decode_request(frame.contents)
    assert command.is_short
    assert encode_frame([command]) == _hex(exchange["request"])
    named = [key for key in exchange["expect"] if key in CommandCode.__members__]
    if named:
        assert command.code == CommandCode[named[0]]


@pytest.mark.parametrize("exchange", EXCHANGES, ids=_vector_id)
def test_exchange_response_status_matches(exchange: dict[str, Any]) -> None:
    response = parse_response(decode_frame(_hex(exchange["response"])).contents)
    expected = exchange["expect"].get("status")
    if expected is not None:
        assert response.status.toggle == expected["toggle"]
        assert response.status.previous is PreviousFrame[expected["previous"].upper()]
        assert response.status.state is MachineState[expected["state"].upper()]
    if exchange["expect"].get("commands") == []:
        assert response.answers == ()


@pytest.mark.parametrize("exchange", EXCHANGES, ids=_vector_id)
def test_exchange_response_described_with_expected_values(exchange: dict[str, Any]) -> None:
    described = describe_frame(_hex(exchange["response"]))
    assert described["direction"] == "response"
    expect = exchange["expect"]
    if "status" in expect:
        assert described["status"] == expect["status"]
    answers = {answer["command"]: answer for answer in described["answers"]}
    for name, fields in expect.items():
        if name == "status":
            continue
        if name == "commands":
            assert [a["command"] for a in described["answers"]] == fields
            continue
        assert answers[name].items() >= fields.items()


@pytest.mark.parametrize("exchange", EXCHANGES, ids=_vector_id)
def test_exchange_frames_fed_one_byte_at_a_time_with_garbage(exchange: dict[str, Any]) -> None:
    request, response = _hex(exchange["request"]), _hex(exchange["response"])
    found, decoder = _feed_bytewise(GARBAGE + request + GARBAGE + response)
    assert found == [decode_frame(request), decode_frame(response)]
    assert decoder.skipped_bytes == 2 * len(GARBAGE)
    assert decoder.bad_frames == 0


def test_speed_in_rev_per_minute_is_an_error_naming_the_unit() -> None:
    # qdomyos-zwift #1045: an elliptical answers GetSpeed in rev/min (unit 82).
    response = parse_response(_hex("09 a5 03 39 00 52"))
    answer = response.answer(CommandCode.GetSpeed)
    assert answer is not None
    with pytest.raises(CsafeUnitError, match=r"unit 82 \(rev/min\)") as caught:
        decode_speed(answer)
    assert isinstance(caught.value, RemoteProtocolError)
    assert caught.value.unit == 82


def test_speed_in_an_unknown_unit_is_an_error_not_a_guess() -> None:
    with pytest.raises(CsafeUnitError, match="unit 200"):
        decode_speed(Answer(CommandCode.GetSpeed, _hex("39 00 c8")))


def test_horizontal_vector_reads_570_metres() -> None:
    response = parse_response(_hex("89 a1 03 39 00 23"))
    answer = response.answer(CommandCode.GetHorizontal)
    assert answer is not None
    assert decode_horizontal(answer) == pytest.approx(570.0)


def test_twork_vector_reads_three_minutes_three_seconds() -> None:
    (answer,) = parse_response(_hex("09 a0 03 00 03 03")).answers
    assert decode_twork(answer) == WorkTime(0, 3, 3)
    assert decode_twork(answer).total_s == 183


def test_user_info_vector_reads_82_in_unit_39() -> None:
    (answer,) = parse_response(_hex("09 ab 05 52 00 27 00 00")).answers
    assert decode_user_info(answer) == UserInfo(weight=82, weight_unit=39, age=0, gender=0)


def test_unsupported_command_is_answered_with_the_status_byte_alone() -> None:
    response = parse_response(decode_frame(_hex("f1 89 89 f2")).contents)
    assert response == Response(Status(1, PreviousFrame.OK, MachineState.OFFLINE), ())
    assert response.answer(0xAA) is None


# --- rule S2: rounding on the wire -------------------------------------------------------------


def test_s2_set_speed_1_2_mph_in_hundredths_of_mph_is_120() -> None:
    command = set_speed(Speed.from_mph(1.2), Unit.MPH_HUNDREDTHS, Rounding.DOWN)
    assert command.data == bytes((120, 0, 18))
    assert encode_frame([command]) == _hex("f1 25 03 78 00 12 4c f2")


def test_s2_set_speed_1_2_mph_in_tenths_of_mph_is_12() -> None:
    command = set_speed(Speed.from_mph(1.2), Unit.MPH_TENTHS, Rounding.DOWN)
    assert command.data == bytes((12, 0, 17))
    assert encode_frame([command]) == _hex("f1 25 03 0c 00 11 3b f2")


def test_s2_set_speed_1_2_mph_in_hundredths_of_kmh_rounded_down_is_193() -> None:
    command = set_speed(Speed.from_mph(1.2), Unit.KMH_HUNDREDTHS, Rounding.DOWN)
    assert command.data == (193).to_bytes(2, "little") + bytes((50,))
    assert decode_speed(command).mph <= 1.2


def test_s2_set_speed_0_8_mph_in_hundredths_of_kmh_rounded_up_is_129() -> None:
    command = set_speed(Speed.from_mph(0.8), Unit.KMH_HUNDREDTHS, Rounding.UP)
    assert command.data == (129).to_bytes(2, "little") + bytes((50,))
    assert decode_speed(command).mph >= 0.8


def test_s2_nearest_rounding_is_the_default() -> None:
    assert set_speed(Speed.from_mph(1.2), Unit.KMH_HUNDREDTHS).data[:2] == bytes((193, 0))
    assert set_speed(Speed.from_mph(1.204), Unit.MPH_HUNDREDTHS).data[:2] == bytes((120, 0))


@PROPERTY
@given(
    mph=st.floats(min_value=0.8, max_value=1.2),
    unit=st.sampled_from([Unit.MPH_TENTHS, Unit.MPH_HUNDREDTHS, Unit.KMH_TENTHS, Unit.KMH_HUNDREDTHS]),
)
def test_s2_rounding_toward_the_inside_never_crosses_the_speed_asked(mph: float, unit: Unit) -> None:
    command = set_speed(Speed.from_mph(mph), unit, Rounding.DOWN)
    assert decode_speed(command).mph <= mph + 1e-9
    command = set_speed(Speed.from_mph(mph), unit, Rounding.UP)
    assert decode_speed(command).mph >= mph - 1e-9


# --- commands and their refusals ---------------------------------------------------------------


def test_speed_units_match_the_units_module() -> None:
    assert unit_for(SpeedUnit.MPH_HUNDREDTHS) is Unit.MPH_HUNDREDTHS
    assert unit_for(SpeedUnit.KMH_TENTHS) is Unit.KMH_TENTHS


@pytest.mark.parametrize(
    ("unit", "count", "kmh"),
    [
        (Unit.MPH, 3, 3 * 1.609344),
        (Unit.MPH_TENTHS, 30, 3 * 1.609344),
        (Unit.FEET_PER_MINUTE, 100, 100 * 0.3048 * 60 / 1000),
        (Unit.KMH, 5, 5.0),
        (Unit.KMH_TENTHS, 50, 5.0),
        (Unit.KMH_HUNDREDTHS, 500, 5.0),
        (Unit.METRES_PER_MINUTE, 100, 6.0),
    ],
)
def test_every_speed_unit_reads_and_writes_its_count(unit: Unit, count: int, kmh: float) -> None:
    answer = Answer(CommandCode.GetSpeed, count.to_bytes(2, "little") + bytes((unit,)))
    assert decode_speed(answer).kmh == pytest.approx(kmh)
    assert set_speed(Speed.from_kmh(kmh), unit).data == answer.data


@pytest.mark.parametrize("bad", [Speed(-0.1), Speed(math.nan), Speed(math.inf), Speed.from_mph(700)])
def test_set_speed_refuses_what_cannot_be_on_the_wire(bad: Speed) -> None:
    with pytest.raises(LocalProtocolError):
        set_speed(bad, Unit.MPH_HUNDREDTHS)


@pytest.mark.parametrize("unit", [Unit.REV_PER_MINUTE, Unit.KM, Unit.GRADE_PERCENT, 200])
def test_set_speed_refuses_a_unit_that_is_not_a_speed(unit: int) -> None:
    with pytest.raises(LocalProtocolError, match="not a CSAFE speed unit"):
        set_speed(Speed.from_mph(1.0), unit)


def test_set_grade_refuses_a_decline_and_a_non_grade_unit() -> None:
    with pytest.raises(LocalProtocolError):
        set_grade(-1.0, Unit.GRADE_TENTHS_PERCENT)
    with pytest.raises(LocalProtocolError):
        set_grade(1.0, Unit.MPH)


def test_short_command_with_data_and_overlong_data_are_refused() -> None:
    with pytest.raises(LocalProtocolError, match="short command"):
        Command(CommandCode.GetSpeed, b"\x01")
    with pytest.raises(LocalProtocolError, match="at most 255"):
        Command(0x1A, bytes(256))
    with pytest.raises(LocalProtocolError):
        Command(0x100)


def test_frame_of_96_bytes_or_more_is_refused() -> None:
    # 2 + 91 data bytes + checksum + 2 flags = 96: one byte too many.
    with pytest.raises(LocalProtocolError, match="under 96"):
        encode_frame([Command(0x1A, bytes(91))])
    assert len(encode_frame([Command(0x1A, bytes(90))])) == 95
    # Stuffing counts: 46 bytes of F0 become 92.
    with pytest.raises(LocalProtocolError):
        encode_frame([Command(0x1A, b"\xf0" * 46)])


def test_empty_frame_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame([])
    with pytest.raises(LocalProtocolError):
        encode_contents(b"")


def test_builders_make_the_commands_a_treadmill_uses() -> None:
    assert get_status().encode() == b"\x80"
    assert go_idle().encode() == b"\x82"
    assert go_finished().encode() == b"\x86"
    assert get_speed().encode() == b"\xa5"
    assert get_grade().encode() == b"\xa8"
    assert set_timeout(5).encode() == _hex("13 01 05")
    assert set_twork(0, 30, 0).encode() == _hex("20 03 00 1e 00")
    with pytest.raises(LocalProtocolError):
        set_twork(0, 60, 0)


def test_other_answers_decode() -> None:
    version = Answer(CommandCode.GetVersion, _hex("05 02 07 01 00 0a 00"))
    assert decode_version(version) == Version(5, 2, 7, 1, 10)
    assert decode_units(Answer(CommandCode.GetUnits, b"\x01")) is UnitSystem.ENGLISH
    assert decode_error_code(Answer(CommandCode.GetErrorCode, _hex("01 02 00"))) == 0x0201
    with pytest.raises(CsafeFrameError):
        decode_units(Answer(CommandCode.GetUnits, b"\x07"))
    with pytest.raises(CsafeFrameError, match="3"):
        decode_speed(Answer(CommandCode.GetSpeed, b"\x01\x02"))


# --- status byte -------------------------------------------------------------------------------


@pytest.mark.parametrize("byte", range(256))
def test_every_status_byte_decodes_and_encodes_back(byte: int) -> None:
    status = Status.from_byte(byte)
    # Bit 0x40 means nothing in csafe.md's table: it is read past, and not written back.
    assert status.to_byte() == byte & ~0x40
    assert status.toggle == byte >> 7
    assert status.previous == (byte >> 4) & 0x03
    if byte & 0x0F in (4, 10, 11, 12, 13, 14, 15):
        assert status.state is MachineState.UNKNOWN
        assert status.state_code == byte & 0x0F
    else:
        assert status.state == byte & 0x0F


# --- stream decoder: dropped frames and resync -------------------------------------------------

GOOD = encode_frame([get_speed()])


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (_hex("f1 a5 a4 f2"), "checksum"),
        (_hex("f1 f3 07 00 f2"), "stuffing"),
        (_hex("f1 a5 f3 f2"), "F3 at the end"),
        (_hex("f1 f2"), "without contents"),
        (_hex("f0 01 f2"), "extended frame shorter"),
        (_hex("f1 a5 a5"), "start flag before the end flag"),
    ],
)
def test_bad_frame_is_dropped_and_the_next_frame_found(broken: bytes, reason: str) -> None:
    decoder = FrameDecoder()
    decoder.feed(broken + GOOD)
    first = decoder.next_frame()
    assert isinstance(first, BadFrame)
    assert reason in first.reason
    assert first.raw == broken
    assert decoder.next_frame() == Frame(_hex("a5"))
    assert decoder.next_frame() is NEED_MORE
    assert (decoder.frames, decoder.bad_frames) == (1, 1)


def test_frame_without_end_flag_is_dropped_after_96_bytes() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\xf1" + b"\x01" * (MAX_FRAME_BYTES - 2))
    assert decoder.next_frame() is NEED_MORE  # could still end with F2
    decoder.feed(b"\x01")
    dropped = decoder.next_frame()
    assert isinstance(dropped, BadFrame)
    assert "no end flag" in dropped.reason
    decoder.feed(GOOD)
    assert decoder.next_frame() == Frame(_hex("a5"))


def test_long_run_without_end_flag_resyncs_at_the_next_start_flag() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\xf1" + b"\x01" * 200 + GOOD)
    results = list(decoder)
    assert isinstance(results[0], BadFrame)
    assert results[1:] == [Frame(_hex("a5"))]


def test_extended_frame_keeps_its_addresses() -> None:
    frame = encode_contents(_hex("a5"), dst=0xF1, src=0x00)
    assert frame == _hex("f0 f3 01 00 a5 a5 f2")
    decoder = FrameDecoder()
    decoder.feed(frame)
    decoded = decoder.next_frame()
    assert decoded == Frame(_hex("a5"), dst=0xF1, src=0x00)
    assert isinstance(decoded, Frame)
    assert decoded.extended
    assert describe_frame(frame, "request")["dst"] == 0xF1


def test_decode_frame_refuses_what_is_not_one_frame() -> None:
    for bad in (b"", _hex("a5 a5"), _hex("f1 a5 a4 f2"), _hex("f1 a5 f1 a5 f2")):
        with pytest.raises(CsafeFrameError):
            decode_frame(bad)


def test_decode_request_reports_truncation() -> None:
    with pytest.raises(CsafeFrameError, match="no length byte"):
        decode_request(_hex("25"))
    with pytest.raises(CsafeFrameError, match="says 3 data bytes, 2 follow"):
        decode_request(_hex("25 03 78 00"))
    with pytest.raises(CsafeFrameError):
        parse_response(b"")
    with pytest.raises(CsafeFrameError):
        parse_response(_hex("09 a5 03 39"))


# --- describe (retrotread decode csafe) --------------------------------------------------------


def test_describe_is_json_and_names_commands_with_their_fields() -> None:
    described = describe_frame(_hex("f1 25 03 78 00 12 4c f2"))
    assert json.loads(json.dumps(described)) == described
    assert described["direction"] == "request"
    (command,) = described["commands"]
    assert command["command"] == "SetSpeed"
    assert (command["value"], command["unit"]) == (120, 18)
    assert command["speed_mph"] == pytest.approx(1.2)


def test_describe_lone_short_command_is_a_request_but_says_it_is_ambiguous() -> None:
    described = describe_frame(_hex("f1 a5 a5 f2"))
    assert described["direction"] == "request"
    assert described["ambiguous"] is True
    forced = describe_frame(_hex("f1 a5 a5 f2"), "response")
    assert forced["status"] == {"toggle": 1, "previous": "bad", "state": "in_use"}


def test_describe_accepts_bare_contents() -> None:
    described = describe_frame(_hex("89 a5 03 78 00 12"))
    assert described["direction"] == "response"
    assert described["answers"][0]["speed_mph"] == pytest.approx(1.2)


# --- properties --------------------------------------------------------------------------------

long_commands = st.builds(Command, st.integers(0x00, 0x7F), st.binary(max_size=24))
short_commands = st.builds(Command, st.integers(0x80, 0xFF))
commands = st.lists(st.one_of(long_commands, short_commands), min_size=1, max_size=6)


@PROPERTY
@given(commands=commands)
def test_any_commands_that_fit_a_frame_round_trip(commands: list[Command]) -> None:
    try:
        frame = encode_frame(commands)
    except LocalProtocolError:
        assume(False)
        raise
    assert frame[0] == 0xF1
    assert frame[-1] == 0xF2
    assert not any(0xF0 <= byte <= 0xF2 for byte in frame[1:-1])
    decoder = FrameDecoder()
    decoder.feed(frame)
    decoded = decoder.next_frame()
    assert isinstance(decoded, Frame)
    assert decode_request(decoded.contents) == tuple(commands)


@PROPERTY
@given(commands=commands)
def test_oversized_frames_are_refused_not_truncated(commands: list[Command]) -> None:
    try:
        frame = encode_frame(commands)
    except LocalProtocolError:
        return
    assert len(frame) < MAX_FRAME_BYTES


@PROPERTY
@given(noise=st.binary(max_size=300), chunk=st.integers(1, 17))
def test_random_bytes_never_raise_from_the_decoders(noise: bytes, chunk: int) -> None:
    decoder = FrameDecoder()
    for at in range(0, len(noise), chunk):
        decoder.feed(noise[at : at + chunk])
        for result in decoder:
            if isinstance(result, Frame):
                for parse in PARSERS[:2]:
                    try:
                        parse(result.contents)
                    except CodecError:
                        pass
    for parse in PARSERS:
        try:
            parse(noise)
        except CodecError:
            pass


@PROPERTY
@given(noise=st.binary(max_size=200), chunk=st.integers(1, 9))
def test_a_good_frame_is_found_after_any_garbage(noise: bytes, chunk: int) -> None:
    # Whatever came before, a whole frame that follows is found: the decoder resyncs at its flag.
    stream = noise + GOOD
    decoder = FrameDecoder()
    found: list[Frame | BadFrame] = []
    for at in range(0, len(stream), chunk):
        decoder.feed(stream[at : at + chunk])
        found.extend(decoder)
    assert found[-1] == Frame(_hex("a5"))
    assert decoder.pending == 0


@PROPERTY
@given(
    toggle=st.integers(0, 1),
    previous=st.sampled_from(PreviousFrame),
    state=st.sampled_from([s for s in MachineState if s is not MachineState.UNKNOWN]),
    answers=st.lists(st.builds(Answer, st.integers(0, 255), st.binary(max_size=8)), max_size=5),
)
def test_responses_round_trip(toggle: int, previous: PreviousFrame, state: MachineState, answers: list[Answer]) -> None:
    response = Response(Status(toggle, previous, state), tuple(answers))
    contents = response.encode_contents()
    assert parse_response(decode_frame(encode_contents(contents)).contents) == response


@PROPERTY
@given(contents=st.binary(min_size=1, max_size=45))
def test_any_contents_frame_and_parse_without_foreign_errors(contents: bytes) -> None:
    frame = encode_contents(contents)
    found, _ = _feed_bytewise(frame)
    assert found == [Frame(contents)]
    for parse in PARSERS:
        try:
            parse(contents)
        except CodecError:
            pass
    try:
        described = describe_frame(frame)
    except CodecError:
        return
    assert json.loads(json.dumps(described)) == described


def test_status_with_an_unknown_state_keeps_its_code() -> None:
    status = Status.from_byte(0x8A)
    assert (status.state, status.state_code) == (MachineState.UNKNOWN, 0x0A)
    assert describe_frame(b"\x8a\xa5\x03\x39\x00\x12", "response")["status"]["state_code"] == 0x0A
    with pytest.raises(LocalProtocolError):
        Status(0, PreviousFrame.OK, MachineState.UNKNOWN)
    with pytest.raises(LocalProtocolError):
        Status(0, PreviousFrame.OK, MachineState.READY, state_code=1)


def test_a_gym_operators_counters_decode_from_their_bytes() -> None:
    # hardware.md "What a gym operator reads from CSAFE" (csafe-fitness lib/commands.dart):
    # GetOdometer 0x9B is a u32 and a distance unit, GetUtilization 0x99 and GetServiceCode 0x9D 3 bytes.
    from retrotread.drivers.csafe.codec import (
        Answer,
        CommandCode,
        CsafeUnitError,
        Unit,
        decode_odometer,
        decode_service_code,
        decode_utilization,
    )

    odometer = Answer(CommandCode.GetOdometer, bytes([0xD2, 0x04, 0, 0, Unit.KM_TENTHS]))  # 1234 x 0.1 km
    assert decode_odometer(odometer) == pytest.approx(123_400.0)
    with pytest.raises(CsafeUnitError, match="not a distance unit"):
        decode_odometer(Answer(CommandCode.GetOdometer, bytes([1, 0, 0, 0, Unit.MPH])))
    assert decode_utilization(Answer(CommandCode.GetUtilization, bytes([0x10, 0x27, 0]))) == 10_000
    assert decode_service_code(Answer(CommandCode.GetServiceCode, bytes([7, 0, 0]))) == 7
