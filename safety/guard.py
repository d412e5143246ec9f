"""The guard: the only way to a driver's motion commands, and the supervisor's executor.

Everything the supervisor hears goes through here (samples, ticks, device events, requests), and
every command it decides is carried out here, so no face ever holds a raw driver. Stops never wait:
they skip the lock that orders motion commands, and any motion command still waiting for that lock
when a stop goes out is dropped, never replayed (S5, S9).

The guard does I/O through the driver but decides nothing: every rule lives in the supervisor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from retrotread.drivers.base import Driver
from retrotread.drivers.errors import DriverError, LinkLost, NotConnected
from retrotread.drivers.types import BeltSample, DeviceEvent, DeviceEventKind
from retrotread.safety.supervisor import CommandKind, Decision, DriveCommand, Request, SafetyEvent, Supervisor

log = logging.getLogger(__name__)

EventSink = Callable[[tuple[SafetyEvent, ...]], None]


class Guard:
    """Wraps one driver and its supervisor. All methods take the monotonic time from ``clock``."""

    def __init__(self, driver: Driver, supervisor: Supervisor, clock: Callable[[], float], publish: EventSink) -> None:
        self._driver = driver
        self.supervisor = supervisor
        self._clock = clock
        self._publish = publish
        self._motion_lock = asyncio.Lock()
        self._stops = 0  # bumps on every stop: motion queued before it is dropped
        self.commands_sent: list[tuple[float, DriveCommand]] = []
        self.last_stop_sent_at: float | None = None
        self.command_errors = 0
        self._pending: set[asyncio.Task[None]] = set()
        self._speed_decisions = 0  # bumps on every decided speed change: older unsent ones lapse

    # -- inputs ------------------------------------------------------------------------------

    async def boot(self) -> Decision:
        now = self._clock()
        d = self.supervisor.boot(now)
        d += self.supervisor.arm(self._driver.capabilities, now)
        return await self._carry_out(d)

    async def observe(self, sample: BeltSample) -> Decision:
        return await self._carry_out(self.supervisor.observe(sample, self._clock()), wait=False)

    async def device_event(self, event: DeviceEvent) -> Decision:
        now = self._clock()
        d = self.supervisor.device_event(event, now)
        if event.kind is DeviceEventKind.CONNECTED:
            # A reconnected device may report other ranges (its firmware restarted): arm on them.
            d += self.supervisor.arm(self._driver.capabilities, now)
        return await self._carry_out(d, wait=False)

    async def tick(self) -> Decision:
        return await self._carry_out(self.supervisor.tick(self._clock()), wait=False)

    async def request(self, req: Request, *, wait: bool = True) -> Decision:
        """A request; with ``wait`` it returns once its commands were handed to the driver (faces);
        the controller's own loops pass ``wait=False`` so a slow device never holds them up."""
        return await self._carry_out(self.supervisor.request(req, self._clock()), wait=wait)

    async def aclose(self) -> None:
        """Cancel motion commands still waiting to be sent (the controller is shutting down)."""
        tasks = tuple(self._pending)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- carrying out ----------------------------------------------------------------------------

    async def _carry_out(self, decision: Decision, *, wait: bool = True) -> Decision:
        """Stops first, at once; then the events; then motion commands, in order, behind a lock.

        ``wait=False`` (samples, device events, ticks) hands motion commands to a task, so a device
        that is slow to acknowledge a ramp step never holds up the safety loop (S17). Faces wait.
        """
        for cmd in decision.commands:
            if cmd.kind.is_stop:
                self._stops += 1
                await self._send(cmd)
        if decision.events:
            self._publish(decision.events)
        motion = [cmd for cmd in decision.commands if not cmd.kind.is_stop]
        if motion:
            generation = self._stops  # what this decision puts after its own stop still goes
            if any(cmd.kind is CommandKind.SET_SPEED for cmd in motion):
                self._speed_decisions += 1
            if wait:
                await self._send_motion(motion, generation)
            else:
                task = asyncio.get_running_loop().create_task(self._send_motion(motion, generation))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
        return decision

    async def _send_motion(self, commands: list[DriveCommand], generation: int) -> None:
        speed_decision = self._speed_decisions
        # asyncio.Lock wakes waiters first come, first served: motion keeps its decided order.
        async with self._motion_lock:
            for cmd in commands:
                if generation != self._stops:
                    log.info("dropped %s: a stop went out after it was decided (S5)", cmd.kind.value)
                    continue
                if cmd.kind is CommandKind.SET_SPEED and speed_decision != self._speed_decisions:
                    # A newer speed was decided while this one waited (a ramp on a slow link): only
                    # the newest matters, and every step the supervisor decides is inside the ramp.
                    continue
                await self._send(cmd)
                if generation != self._stops:
                    # A stop went out while this command was in flight and the device may have
                    # taken this one after it: the stop must have the last word (S5).
                    log.warning("%s finished after a stop; stopping again", cmd.kind.value)
                    await self._send(DriveCommand(CommandKind.ESTOP))

    async def _send(self, cmd: DriveCommand) -> None:
        now = self._clock()
        try:
            match cmd.kind:
                case CommandKind.ESTOP:
                    await self._driver.emergency_stop()
                case CommandKind.STOP:
                    await self._driver.stop()
                case CommandKind.START:
                    assert cmd.speed is not None
                    await self._driver.start(cmd.speed)
                case CommandKind.SET_SPEED:
                    assert cmd.speed is not None
                    await self._driver.set_speed(cmd.speed)
                case CommandKind.SET_INCLINE:
                    assert cmd.incline_pct is not None
                    await self._driver.set_incline(cmd.incline_pct)
        except (NotConnected, LinkLost) as exc:
            # The driver reports the link loss itself (S9); a stop is repeated once it is back.
            self.command_errors += 1
            log.warning("%s not sent: %s", cmd.kind.value, exc)
            return
        except DriverError as exc:
            self.command_errors += 1
            log.warning("%s failed: %s", cmd.kind.value, exc)
            if not cmd.kind.is_stop and not self._driver.reports_rejections:
                # A refused motion command moves the daemon to the stopped state (S10).
                event = DeviceEvent(self._clock(), DeviceEventKind.REJECTED, f"{cmd.kind.value}: {exc}")
                await self._carry_out(self.supervisor.device_event(event, self._clock()))
            return
        self.commands_sent.append((now, cmd))
        if len(self.commands_sent) > 1000:
            del self.commands_sent[:500]
        if cmd.kind.is_stop:
            self.last_stop_sent_at = now
