"""A simulated CSAFE treadmill console: the real bytes, on the device end of a pseudo-terminal.

It answers what a host polls (GetStatus, GetSpeed, GetGrade, GetHorizontal, GetTWork, GetUnits,
GetVersion, GetErrorCode) and obeys SetSpeed, SetGrade, GoInUse, GoFinished, GoIdle, GoReady,
GoHaveID and Reset, with ``sims.belt`` physics behind it and ``drivers.csafe.codec`` for every byte
(docs/csafe.md). The status byte carries the frame toggle (flips on each accepted frame), the verdict
on the frame it answers (ok, rejected, bad) and the state (Ready, InUse, Finished, Idle, Error ...).
Commands it does not know are answered with the status byte alone, as many consoles do (csafe.md
"Quirks"). The belt moves only in state InUse, toward the last SetSpeed.

Faults (``fault=KIND@SECONDS`` of interfaces.md, or ``strike()`` now):

- ``runaway``: the belt accelerates past its command until a stop (SetSpeed 0, GoFinished, GoIdle).
- ``stall``: the console stops answering anything, and obeys nothing, while the belt keeps moving.
- ``unplug``: the cable is out for ``UNPLUG_S``; the console and its belt carry on meanwhile.
- ``reboot``: the link drops for ``REBOOT_OFFLINE_S`` and the belt coasts; the console comes back
  in Ready and ``REBOOT_RESUME_S`` later resumes the belt at its last speed on its own (state InUse),
  whatever it was told in between: the uncommanded motion of rule S11.
- ``console-stop``: someone presses Stop on the console: state Finished, belt to 0 (S10).
- ``key``: the safety key is pulled: state Error, the motor loses power and the belt coasts to 0;
  stops are accepted, anything that would move the belt is answered "rejected".
- ``garbage``: answers come with noise around them (a stray start flag before, junk after) or, one
  in three, with a checksum that fails instead of the answer.
- ``ignore``: the console stops acknowledging commands: frames that carry any Set*/Go*/Reset are
  neither obeyed nor answered; frames of Get* commands alone are answered as before.

``strict=True`` makes a strict console (hardware.md "CSAFE state machine"): GoHaveID only from
Idle, GoInUse only from HaveID, and SetSpeed above 0 only in InUse; anything else is answered
"rejected" and changes nothing. Stops (SetSpeed 0, GoFinished, GoIdle, GoReady, Reset) halt the belt
in every state and are never refused; GoFinished outside InUse leaves the state as it is. ``lie`` (``sims.belt.Lie``)
makes a console whose unit is not the one it claims: ``kmh-in`` on a console that says mph runs
SetSpeed's number as km/h, ``kmh-out`` reports km/h as mph, ``kmh`` both (the S7 unit check).

Every frame the console receives is recorded (``received``) with its monotonic receive time and its
commands decoded, before any fault decides what to do with it, so tests and the bench see exactly
what reached the device. ``pause_answers()``/``resume_answers()`` hold answers back (a slow console),
for tests that need a poll in flight.

This module must not import anything above ``drivers`` and ``sims``, and never writes a frame that
is not built by the codec (garbage is built from real frames).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrotread.drivers.csafe.codec import (
    Answer,
    BadFrame,
    Command,
    CommandCode,
    CsafeFrameError,
    FrameDecoder,
    MachineState,
    PreviousFrame,
    Response,
    Status,
    Unit,
    UnitSystem,
    decode_grade,
    decode_request,
    decode_speed,
    encode_contents,
    encode_grade,
    encode_speed,
)
from retrotread.drivers.errors import CodecError
from retrotread.drivers.units import Speed
from retrotread.sims.belt import Belt, Lie
from retrotread.sims.faults import Fault, FaultKind, Recovery
from retrotread.sims.link import Manipulator, cycle, flip, prefix, suffix
from retrotread.sims.pty import PtyDevice, TraceSink

VERSION = struct.pack("<BBBHH", 0x52, 3, 1, 1, 0)  # manufacturer "R", class 3, model 1, v1.0
_GETS = frozenset(
    {
        CommandCode.GetStatus,
        CommandCode.GetVersion,
        CommandCode.GetUnits,
        CommandCode.GetErrorCode,
        CommandCode.GetTWork,
        CommandCode.GetHorizontal,
        CommandCode.GetSpeed,
        CommandCode.GetGrade,
        CommandCode.GetUserInfo,
        CommandCode.GetUtilization,
        CommandCode.GetOdometer,
        CommandCode.GetServiceCode,
    }
)
_STOPS = frozenset({CommandCode.GoFinished, CommandCode.GoIdle})
_MAX_ANSWER_MPS = Speed.from_mph(100.0).mps  # a runaway left alone still fits in a u16 answer
_KEY_ERROR_CODE = 0x000101


def garbage() -> Manipulator[bytes]:
    """What ``garbage`` does to the console's answers, in turn (a manipulator of ``sims.link``)."""
    return cycle(
        # Line noise before the answer, with a stray start flag and no end: the host must resync.
        prefix(b"\x00\x55\xaa\xf1\x13\x37"),
        # The answer with one bit flipped in its status byte (never a flag: status < 0xC0), so its
        # checksum fails: a whole frame that must be dropped instead of the answer.
        flip(1, 0x01),
        suffix(b"\x00\xff\x7e"),
    )


@dataclass(frozen=True, slots=True)
class ReceivedFrame:
    """A frame as it reached the console: when, its contents, and its commands decoded."""

    index: int
    t: float
    contents: bytes
    commands: tuple[Command, ...]
    error: str | None = None
    """Why the contents did not split into commands (the console answers "bad")."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.commands)

    @property
    def speed(self) -> Speed | None:
        """The speed of its SetSpeed, if it carries one that decodes."""
        for command in self.commands:
            if command.code == CommandCode.SetSpeed:
                try:
                    return decode_speed(command)
                except CodecError:
                    return None
        return None

    @property
    def is_stop(self) -> bool:
        """SetSpeed 0 with GoFinished or GoIdle: the stop of csafe.md "Stopping"."""
        speed = self.speed
        codes = {c.code for c in self.commands}
        return speed is not None and speed.mps == 0 and bool(codes & _STOPS)

    @property
    def is_poll(self) -> bool:
        """Only Get* commands: nothing that changes the console."""
        return bool(self.commands) and all(c.code in _GETS for c in self.commands)

    def describe(self) -> dict[str, Any]:
        speed = self.speed
        return {
            "t": self.t,
            "event": "frame",
            "index": self.index,
            "hex": self.contents.hex(" "),
            "commands": list(self.names),
            "stop": self.is_stop,
            "speed_mph": None if speed is None else round(speed.mph, 4),
            "error": self.error,
        }


FrameMatch = Callable[[ReceivedFrame], bool]


class CsafeDevice(PtyDevice):
    """The simulated console. ``async with CsafeDevice(link) as device:`` serves it at ``link``."""

    kind = "CSAFE console"

    def __init__(
        self,
        link: Path,
        *,
        faults: Sequence[Fault] = (),
        speed_unit: Unit = Unit.MPH_HUNDREDTHS,
        trace: TraceSink | None = None,
        strict: bool = False,
        lie: Lie = Lie.NONE,
    ) -> None:
        super().__init__(link, faults=faults, trace=trace, garbage=garbage())
        self.speed_unit = speed_unit
        self.strict = strict
        self.lie = lie
        self.refused_walk: list[str] = []
        """What a strict console refused: ``"GoInUse in Idle"``, ``"SetSpeed in Ready"`` ..."""
        self.belt = Belt(motorized=True, t=time.monotonic())
        self.state = MachineState.READY
        self.toggle = 0
        self.received: list[ReceivedFrame] = []
        self.bad_frames = 0
        self.answers_sent = 0
        self._decoder = FrameDecoder()
        self._target_mps = 0.0
        self._in_use_s = 0.0
        self._in_use_since: float | None = None
        self._key_out = False
        self._resume_mps = 0.0
        self._held: list[ReceivedFrame] | None = None
        self._frame_waiters: list[tuple[int, FrameMatch, asyncio.Future[ReceivedFrame]]] = []

    async def open(self) -> None:
        if not self.endpoint.plugged:
            self.belt = Belt(motorized=True, t=time.monotonic())
        await super().open()

    async def close(self) -> None:
        await super().close()
        for _, _, waiter in self._frame_waiters:
            if not waiter.done():
                waiter.cancel()

    # -- for tests and the bench ---------------------------------------------------------------

    def pause_answers(self) -> None:
        """Record frames but hold their answers back until ``resume_answers()``."""
        if self._held is None:
            self._held = []

    def resume_answers(self) -> None:
        """Answer the held frames, in the order they came."""
        held, self._held = self._held, None
        for frame in held or ():
            self._answer(frame)

    async def next_frame(
        self, match: FrameMatch | None = None, *, after: int = 0, within: float = 10.0
    ) -> ReceivedFrame:
        """The first received frame with ``index >= after`` that ``match`` accepts, waiting for it."""
        accept: FrameMatch = match or (lambda _: True)
        for frame in self.received[after:]:
            if accept(frame):
                return frame
        waiter: asyncio.Future[ReceivedFrame] = asyncio.get_running_loop().create_future()
        entry = (after, accept, waiter)
        self._frame_waiters.append(entry)
        try:
            async with asyncio.timeout(within):
                return await waiter
        finally:
            self._frame_waiters.remove(entry)

    @property
    def speed(self) -> Speed:
        self.belt.advance_to(time.monotonic())
        return Speed(self.belt.speed_mps)

    def press_start(self, speed: Speed) -> None:
        """Someone presses Start on the console: InUse at ``speed``, with no host asking (S11)."""
        now = time.monotonic()
        self.belt.advance_to(now)
        self._target_mps = speed.mps
        self._enter(MachineState.IN_USE, now)
        self.belt.command_mps = speed.mps
        self.note("button:start", speed_mph=round(speed.mph, 3))

    def press_stop(self) -> None:
        """Someone presses Stop on the console: Finished, belt to 0 (a device-reported stop, S10)."""
        now = time.monotonic()
        self.belt.advance_to(now)
        self._halt()
        self._enter(MachineState.FINISHED, now)
        self.note("button:stop")

    # -- faults --------------------------------------------------------------------------------

    def _on_fault(self, kind: FaultKind, now: float) -> None:
        belt = self.belt
        belt.advance_to(now)
        match kind:
            case FaultKind.RUNAWAY:
                belt.run_away()
            case FaultKind.KEY:
                self._key_out = True
                belt.powered = False  # the key cuts the motor, no software involved
                self._halt()
                self._enter(MachineState.ERROR, now)
            case FaultKind.CONSOLE_STOP:
                self.press_stop()
            case FaultKind.REBOOT:
                self._resume_mps = max(belt.command_mps, self._target_mps if self.state is MachineState.IN_USE else 0)
                self.unplug("console rebooting")
                belt.powered = False
            # stall, garbage and unplug are the link's (sims.link); ignore is read in _on_bytes.

    def _on_recovery(self, step: Recovery, now: float) -> None:
        if step is Recovery.BACK:
            self._rebooted()
        elif step is Recovery.RESUME:
            self._resume()

    def _rebooted(self) -> None:
        now = time.monotonic()
        self.belt.advance_to(now)
        self.belt.powered = True
        self.belt.command_mps = 0.0
        self._target_mps = 0.0
        self.toggle = 0
        self._decoder = FrameDecoder()
        self._enter(MachineState.READY, now)
        self.replug("console back after reboot")

    def _resume(self) -> None:
        # The console restores its last program and starts the belt with nobody asking (S11).
        now = time.monotonic()
        self.belt.advance_to(now)
        self._target_mps = self._resume_mps
        self._enter(MachineState.IN_USE, now)
        self.belt.command_mps = self._resume_mps
        self.note("resumed", speed_mph=round(Speed(self._resume_mps).mph, 3))

    # -- the line ------------------------------------------------------------------------------

    def _on_bytes(self, data: bytes, t: float) -> None:
        self._decoder.feed(data)
        for item in self._decoder:
            if isinstance(item, BadFrame):
                self.bad_frames += 1
                continue
            try:
                commands, error = decode_request(item.contents), None
            except CsafeFrameError as exc:
                commands, error = (), str(exc)
            frame = ReceivedFrame(len(self.received), t, item.contents, commands, error)
            self._record(frame)
            if self.schedule.active(FaultKind.STALL):
                continue  # a hung console obeys nothing either (its answers are dropped on the link)
            if self.schedule.active(FaultKind.IGNORE) and not frame.is_poll:
                continue
            if self._held is not None:
                self._held.append(frame)
                continue
            self._answer(frame)

    def _record(self, frame: ReceivedFrame) -> None:
        self.received.append(frame)
        self.trace(frame.describe())
        for after, accept, waiter in self._frame_waiters:
            if frame.index >= after and not waiter.done() and accept(frame):
                waiter.set_result(frame)

    def _answer(self, frame: ReceivedFrame) -> None:
        if not self.wire.plugged:
            return
        now = time.monotonic()
        self.belt.advance_to(now)
        response = self._process(frame, now)
        self.wire.write([encode_contents(response.encode_contents())])
        self.answers_sent += 1

    # -- the console ---------------------------------------------------------------------------

    def _process(self, frame: ReceivedFrame, now: float) -> Response:
        if frame.error is not None:
            return Response(Status(self.toggle, PreviousFrame.BAD, self.state))
        previous = PreviousFrame.OK
        answers: list[Answer] = []
        belt = self.belt
        for command in frame.commands:
            code = command.code
            if code in _GETS:
                answer = self._get(code, now)
                if answer is not None:
                    answers.append(answer)
            elif code == CommandCode.SetSpeed:
                try:
                    speed = decode_speed(command)
                except CodecError:
                    previous = PreviousFrame.REJECTED
                    continue
                if speed.mps > 0 and self._key_out:
                    previous = PreviousFrame.REJECTED
                    continue
                if speed.mps > 0 and not self._walk_allows(code):
                    previous = PreviousFrame.REJECTED
                    continue
                self._target_mps = speed.mps * self.lie.takes
                if self.state is MachineState.IN_USE:
                    belt.command_mps = self._target_mps
                if speed.mps == 0:
                    self._halt()
            elif code == CommandCode.SetGrade:
                try:
                    belt.incline_pct = decode_grade(command)
                except CodecError:
                    previous = PreviousFrame.REJECTED
            elif code == CommandCode.GoInUse:
                if self._key_out or not self._walk_allows(code):
                    previous = PreviousFrame.REJECTED
                    continue
                self._enter(MachineState.IN_USE, now)
                belt.command_mps = self._target_mps
            elif code in (CommandCode.GoFinished, CommandCode.GoIdle, CommandCode.GoReady, CommandCode.Reset):
                self._halt()  # a stop, in every state, and never refused (S5)
                if code == CommandCode.GoFinished and self.strict and self.state not in _FINISHABLE:
                    continue  # a strict console has nothing to finish: it stays where it is
                state = {
                    CommandCode.GoFinished: MachineState.FINISHED,
                    CommandCode.GoIdle: MachineState.IDLE,
                }.get(CommandCode(code), MachineState.READY)
                self._enter(state, now)
            elif code == CommandCode.GoHaveID:
                if not self._walk_allows(code):
                    previous = PreviousFrame.REJECTED
                    continue
                self._enter(MachineState.HAVE_ID, now)
            # SetTimeout, SetTWork and commands we do not know: accepted, nothing to answer (csafe.md
            # "Quirks": unsupported commands are answered with the status byte alone).
        if previous is PreviousFrame.OK:
            self.toggle ^= 1
        return Response(Status(self.toggle, previous, self.state), tuple(answers))

    def _walk_allows(self, code: int) -> bool:
        """A strict console's state diagram (hardware.md); a lenient one takes anything."""
        if not self.strict:
            return True
        allowed = _STRICT_FROM.get(code)
        if allowed is None or self.state in allowed:
            return True
        self.refused_walk.append(f"{CommandCode(code).name} in {self.state.name}")
        self.note("refused", command=CommandCode(code).name, state=self.state.name)
        return False

    def _get(self, code: int, now: float) -> Answer | None:
        belt = self.belt
        match code:
            case CommandCode.GetSpeed:
                speed = Speed(min(belt.speed_mps * self.lie.reports, _MAX_ANSWER_MPS))
                return Answer(code, encode_speed(speed, self.speed_unit))
            case CommandCode.GetGrade:
                return Answer(code, encode_grade(belt.incline_pct, Unit.GRADE_TENTHS_PERCENT))
            case CommandCode.GetHorizontal:
                return Answer(code, struct.pack("<HB", int(belt.distance_m) % 0x10000, Unit.METRE))
            case CommandCode.GetTWork:
                total = int(self._in_use_s + (now - self._in_use_since if self._in_use_since is not None else 0))
                hours, rest = divmod(total, 3600)
                return Answer(code, bytes((min(hours, 255), rest // 60, rest % 60)))
            case CommandCode.GetUnits:
                english = self.speed_unit in (Unit.MPH, Unit.MPH_TENTHS, Unit.MPH_HUNDREDTHS)
                return Answer(code, bytes((UnitSystem.ENGLISH if english else UnitSystem.METRIC,)))
            case CommandCode.GetVersion:
                return Answer(code, VERSION)
            case CommandCode.GetUtilization:
                hours = int(self._in_use_s // 3600)
                return Answer(code, hours.to_bytes(3, "little"))
            case CommandCode.GetOdometer:
                return Answer(code, struct.pack("<IB", int(belt.distance_m), Unit.METRE))
            case CommandCode.GetServiceCode:
                return Answer(code, (0).to_bytes(3, "little"))
            case CommandCode.GetErrorCode:
                return Answer(code, (_KEY_ERROR_CODE if self._key_out else 0).to_bytes(3, "little"))
        return None  # GetStatus is the status byte itself; GetUserInfo is not simulated

    def _halt(self) -> None:
        self._target_mps = 0.0
        self.belt.stop_motor()
        self.schedule.clear(FaultKind.RUNAWAY)

    def _enter(self, state: MachineState, now: float) -> None:
        if self._key_out and state is not MachineState.ERROR:
            return  # the key is out: the console stays in Error
        if self.state is MachineState.IN_USE and self._in_use_since is not None:
            self._in_use_s += now - self._in_use_since
            self._in_use_since = None
        if state is MachineState.IN_USE:
            self._in_use_since = now
        else:
            self.belt.command_mps = 0.0
        if state is not self.state:
            self.note("state", state=state.name)
        self.state = state


_STRICT_FROM: dict[int, frozenset[MachineState]] = {
    # The states each command is taken in by a strict console (CSAFE state diagram, hardware.md).
    CommandCode.GoHaveID: frozenset({MachineState.IDLE, MachineState.HAVE_ID}),
    CommandCode.GoInUse: frozenset({MachineState.HAVE_ID, MachineState.PAUSE}),
    CommandCode.SetSpeed: frozenset({MachineState.IN_USE}),
}
_FINISHABLE = frozenset({MachineState.IN_USE, MachineState.PAUSE, MachineState.FINISHED})

__all__ = ["CsafeDevice", "ReceivedFrame"]
