"""``sim://motorized`` and ``sim://manual``: the simulated belt as a driver.

Query options: ``rate_hz`` (samples per second, default 10), ``noise_mph`` (standard deviation of
the measurement noise, default 0), ``fault`` (``KIND@SECONDS,...``, see ``sims.faults``), ``push``
(manual belts: the walker's pushing profile, ``MPH`` or ``MPH@S,...``, default 1.5), ``initial_mph``
(the belt is already moving when the daemon connects), ``unit`` (``kmh`` for a 0.1 km/h grid like
most FTMS machines, or ``mph`` for a 0.1 mph grid like CSAFE gym consoles), ``seed`` (noise),
``trace`` (a file that gets one JSON line per command the simulated device receives), ``lie``
(a machine whose unit is not the one it claims, ``sims.belt.Lie``: ``mph``, ``mph-in``, ``mph-out``
on the default km/h grid, ``kmh``, ``kmh-in``, ``kmh-out`` with ``unit=mph``; the S7 unit check).

Samples are taken on monotonic deadlines (``t0 + k / rate_hz``), never by summing sleeps.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator
from typing import IO, Self
from urllib.parse import SplitResult

from retrotread.drivers.base import Driver, cancel_and_wait, drain
from retrotread.drivers.errors import CommandRejected, ConfigError, NotConnected, Unsupported
from retrotread.drivers.registry import float_option
from retrotread.drivers.types import BeltSample, Capabilities, DeviceEvent, DeviceEventKind, Update
from retrotread.drivers.units import Speed, SpeedGrid, SpeedUnit
from retrotread.sims.belt import Belt, Lie, PushSegment, parse_push
from retrotread.sims.faults import Fault, FaultKind, FaultSchedule, Recovery, parse_faults
from retrotread.sims.link import FaultyLink

IGNORE_TIMEOUT_S = 0.05  # a real device would be given 1 s; the sim need not make tests wait


def _garbled(samples: list[BeltSample]) -> list[BeltSample]:
    # What a decoder makes of corrupt bytes that slipped through: nothing believable.
    return [BeltSample(s.t, Speed(math.nan), None, None) for s in samples]


class SimBeltDriver(Driver):
    """A simulated belt behind the ``Driver`` interface."""

    def __init__(
        self,
        *,
        motorized: bool,
        rate_hz: float = 10.0,
        noise_mph: float = 0.0,
        faults: tuple[Fault, ...] = (),
        push: tuple[PushSegment, ...] = (),
        initial_mph: float = 0.0,
        imperial_grid: bool = False,
        seed: int | None = None,
        trace_path: str | None = None,
        lie: Lie = Lie.NONE,
    ) -> None:
        self.url = "sim://motorized" if motorized else "sim://manual"
        self.lie = lie
        self.motorized = motorized
        self.rate_hz = rate_hz
        self.noise_mph = noise_mph
        self.faults = faults
        self.push = push
        self.initial_mph = initial_mph
        self._rng = random.Random(seed)
        self._trace_path = trace_path
        self._trace: IO[str] | None = None
        self._caps = Capabilities(
            can_drive=motorized,
            speed_grid=SpeedGrid(
                SpeedUnit.MPH_TENTHS if imperial_grid else SpeedUnit.KMH_TENTHS,
                minimum=Speed.from_mph(0.5) if motorized else Speed.zero(),
                maximum=Speed.from_mph(12.0) if motorized else Speed.from_mph(10.0),
            ),
            incline_min_pct=0.0,
            incline_max_pct=15.0 if motorized else 0.0,
            incline_increment_pct=0.5,
            nominal_period_s=1.0 / rate_hz,
        )
        self.belt: Belt | None = None
        self._queue: asyncio.Queue[Update | None] = asyncio.Queue()
        self._ticker: asyncio.Task[None] | None = None
        self._connected = False
        # The simulated device's "transport" is its stream of samples: stall, garbage and unplug
        # are manipulators on it (sims.link), the rest is the belt's (on_fault).
        self.link: FaultyLink[BeltSample] = FaultyLink(self._queue.put_nowait, garbage=_garbled)
        self.schedule = FaultSchedule(faults, self, link=self.link, device=self.url)
        self._t0 = 0.0
        self._resume_mps = 0.0
        self.commands: list[tuple[float, str, float | None]] = []
        """Every command the simulated device received: (monotonic t, kind, mph or pct)."""

    @classmethod
    def from_url(cls, url: SplitResult, options: dict[str, str]) -> Self:
        kind = url.netloc or url.path.strip("/")
        if kind not in ("motorized", "manual"):
            raise ConfigError(f"sim://{kind}: expected sim://motorized or sim://manual")
        known = {"rate_hz", "noise_mph", "fault", "push", "initial_mph", "unit", "seed", "trace", "lie"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"sim:// has no option {unknown[0]!r}; known: {', '.join(sorted(known))}")
        unit = options.get("unit", "kmh")
        if unit not in ("kmh", "mph"):
            raise ConfigError(f"sim:// option unit={unit!r}: allowed kmh or mph")
        try:
            push = parse_push(options.get("push", "1.5" if kind == "manual" else ""))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            lie = Lie.parse(options.get("lie", ""), claims=unit)
        except ValueError as exc:
            raise ConfigError(f"sim:// option {exc}") from None
        seed = options.get("seed")
        if seed is not None and not seed.isdigit():
            raise ConfigError(f"sim:// option seed={seed!r}: expected a whole number")
        return cls(
            motorized=kind == "motorized",
            rate_hz=float_option(options, "rate_hz", 10.0, minimum=0.5, maximum=200.0),
            noise_mph=float_option(options, "noise_mph", 0.0, maximum=1.0),
            faults=parse_faults(options.get("fault", "")),
            push=push,
            initial_mph=float_option(options, "initial_mph", 0.0, maximum=12.0),
            imperial_grid=unit == "mph",
            seed=int(seed) if seed is not None else None,
            trace_path=options.get("trace"),
            lie=lie,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def connected(self) -> bool:
        return self._connected and self.link.plugged

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._ticker is not None:
            return
        now = time.monotonic()
        self._t0 = now
        self.belt = Belt(motorized=self.motorized, t=now, push=self.push, push_started_at=now)
        if self.initial_mph:
            self.belt.speed_mps = self.belt.command_mps = Speed.from_mph(self.initial_mph).mps
        if self._trace_path:
            # Opened once at start, line-buffered: a debugging and test aid, not a hot path.
            self._trace = open(self._trace_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115, ASYNC230
        self._connected = True
        self.link.clear()
        self.link.plugged = True
        self.schedule.start(now)
        self._ticker = asyncio.create_task(self._run(), name=f"sim-belt {self.url}")

    async def close(self) -> None:
        ticker, self._ticker = self._ticker, None
        await cancel_and_wait(ticker)
        self.schedule.stop()
        self._connected = False
        self._queue.put_nowait(None)
        if self._trace is not None:
            self._trace.close()
            self._trace = None

    def samples(self) -> AsyncIterator[Update]:
        return drain(self._queue)

    # -- the device --------------------------------------------------------------------------

    async def _run(self) -> None:
        period = 1.0 / self.rate_hz
        k = 0
        while True:
            k += 1
            deadline = self._t0 + k * period
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            # Faults strike and recover on the sample clock: what a sample shows is what was due.
            self.schedule.advance_to(now)
            belt = self._belt()
            belt.advance_to(now)
            if self._connected:
                self.link.write([self._sample(now)])

    def _sample(self, now: float) -> BeltSample:
        belt = self._belt()
        mph = Speed(belt.speed_mps).mph * self.lie.reports
        if self.noise_mph and mph > 0:
            mph = max(0.0, mph + self._rng.gauss(0.0, self.noise_mph))
        return BeltSample(now, Speed.from_mph(mph), belt.incline_pct, belt.distance_m)

    # -- faults (sims.faults.FaultTarget) -------------------------------------------------------

    def strike(self, kind: FaultKind) -> None:
        """Make ``kind`` happen now (tests and demos)."""
        self.schedule.strike(kind, time.monotonic())

    def on_fault(self, kind: FaultKind, now: float) -> None:
        belt = self._belt()
        belt.advance_to(now)
        self._log(now, f"fault:{kind.value}", None)
        match kind:
            case FaultKind.RUNAWAY:
                belt.run_away()
            case FaultKind.KEY:
                belt.powered = False
                self._event(now, DeviceEventKind.SAFETY_KEY, "safety key pulled")
            case FaultKind.CONSOLE_STOP:
                # Stop pressed on the machine: it stops its own motor and says so, the way a
                # CSAFE console goes Finished or an FTMS machine reports 0x02 (S10).
                belt.stop_motor()
                self._event(now, DeviceEventKind.STOPPED_BY_USER, "console went Finished by itself")
            case FaultKind.UNPLUG:
                self._event(now, DeviceEventKind.DISCONNECTED, "cable unplugged")
            case FaultKind.REBOOT:
                # The device loses power for a moment: the motor coasts down, the link drops.
                self._drop_link(now, "device rebooting")
                self._resume_mps = belt.command_mps
                belt.powered = False
            # stall and garbage are the link's alone; ignore is read by _command.

    def on_recovery(self, step: Recovery, now: float) -> None:
        belt = self._belt()
        belt.advance_to(now)
        if step is Recovery.REPLUG:
            self._event(now, DeviceEventKind.CONNECTED, "cable back")
        elif step is Recovery.BACK:
            belt.powered = True
            belt.command_mps = 0.0
            self.link.replug()
            self._event(now, DeviceEventKind.CONNECTED, "device back after reboot")
        elif step is Recovery.RESUME:
            # The device restores its last program and starts the belt with nobody asking (S11).
            belt.command_mps = self._resume_mps
            self._log(now, "device:resume", Speed(self._resume_mps).mph)

    def _drop_link(self, now: float, why: str) -> None:
        self.link.unplug()
        self._event(now, DeviceEventKind.DISCONNECTED, why)

    def _event(self, now: float, kind: DeviceEventKind, detail: str) -> None:
        self._queue.put_nowait(DeviceEvent(now, kind, detail))

    def _belt(self) -> Belt:
        if self.belt is None:
            raise NotConnected(f"{self.url} is not open")
        return self.belt

    def _log(self, now: float, kind: str, value: float | None) -> None:
        self.commands.append((now, kind, value))
        if self._trace is not None:
            self._trace.write(json.dumps({"t": now, "cmd": kind, "value": value}) + "\n")

    # -- commands ------------------------------------------------------------------------------

    async def _command(self, kind: str, value: float | None) -> Belt:
        belt = self._belt()
        if not self.connected:
            raise NotConnected(f"{self.url}: link is down")
        if not self.motorized and kind != "stop" and kind != "estop":
            raise Unsupported(f"{self.url} has no motor: it can only be measured")
        if self.schedule.active(FaultKind.IGNORE):
            await asyncio.sleep(IGNORE_TIMEOUT_S)
            raise CommandRejected(f"{self.url}: no acknowledgement for {kind}")
        now = time.monotonic()
        belt.advance_to(now)
        self._log(now, kind, value)
        return belt

    async def start(self, speed: Speed) -> None:
        belt = await self._command("start", speed.mph)
        belt.command_mps = speed.mps * self.lie.takes

    async def set_speed(self, speed: Speed) -> None:
        belt = await self._command("speed", speed.mph)
        belt.command_mps = speed.mps * self.lie.takes

    async def set_incline(self, incline_pct: float) -> None:
        belt = await self._command("incline", incline_pct)
        belt.incline_pct = incline_pct

    async def stop(self) -> None:
        belt = await self._command("stop", 0.0)
        belt.stop_motor()
        self.schedule.clear(FaultKind.RUNAWAY)

    async def emergency_stop(self) -> None:
        belt = await self._command("estop", 0.0)
        belt.stop_motor()
        self.schedule.clear(FaultKind.RUNAWAY)

    # -- for tests and demos ---------------------------------------------------------------------

    def push_now(self, mph: float | None) -> None:
        """Make the simulated walker push at ``mph`` from now on (``None``: back to the profile)."""
        belt = self._belt()
        belt.advance_to(time.monotonic())
        belt.push_now(None if mph is None else Speed.from_mph(mph))
