"""The fault engine of the simulators (``sims.faults.FaultSchedule``) on an injected clock.

No device and no event loop: a target that writes down what it is told, a link that does the same,
and time passed in by hand. What each device does with a fault is tested with the device; here is
the lifecycle every device shares (pending, struck, cleared) and who gets told what, when.
"""

from __future__ import annotations

import asyncio

import pytest

from retrotread.drivers.errors import ConfigError
from retrotread.drivers.types import DeviceEvent, DeviceEventKind
from retrotread.drivers.units import Speed
from retrotread.sims.driver import SimBeltDriver
from retrotread.sims.faults import (
    UNPLUG_S,
    Fault,
    FaultKind,
    FaultSchedule,
    FaultTimings,
    Phase,
    Recovery,
    parse_faults,
)
from retrotread.sims.link import FaultyLink

TIMINGS = FaultTimings(unplug_s=2.0, reboot_offline_s=1.0, reboot_resume_s=0.5)


class Device:
    """A ``FaultTarget`` that records what it is told, with the time."""

    def __init__(self) -> None:
        self.told: list[tuple[float, str]] = []

    def on_fault(self, kind: FaultKind, now: float) -> None:
        self.told.append((now, f"fault:{kind.value}"))

    def on_recovery(self, step: Recovery, now: float) -> None:
        self.told.append((now, f"recover:{step.value}"))


def schedule(spec: str, target: Device, **kw: object) -> FaultSchedule:
    return FaultSchedule(parse_faults(spec), target, timings=TIMINGS, **kw)  # type: ignore[arg-type]


def test_faults_strike_at_their_time_after_the_start_and_not_before() -> None:
    device = Device()
    s = schedule("runaway@20,key@5", device)
    s.start(100.0)
    assert s.next_due() == 105.0
    s.advance_to(104.999)
    assert device.told == []
    s.advance_to(125.0)  # one late call strikes both, in time order, each at its own time
    assert device.told == [(105.0, "fault:key"), (120.0, "fault:runaway")]
    assert [st.phase for st in s.states] == [Phase.STRUCK, Phase.STRUCK]
    assert s.next_due() is None


def test_unplug_is_struck_then_cleared_at_the_replug() -> None:
    device = Device()
    s = schedule("unplug@1", device)
    s.start(0.0)
    s.advance_to(1.0)
    assert s.active(FaultKind.UNPLUG) and s.next_due() == 3.0
    s.advance_to(2.9)
    assert device.told == [(1.0, "fault:unplug")]
    s.advance_to(3.0)
    assert device.told[-1] == (3.0, "recover:replug")
    (state,) = s.states
    assert (state.phase, state.struck_at, state.cleared_at) == (Phase.CLEARED, 1.0, 3.0)
    assert not s.active(FaultKind.UNPLUG)


def test_reboot_comes_back_then_resumes_and_only_then_is_cleared() -> None:
    device = Device()
    s = schedule("reboot@2", device)
    s.start(10.0)
    s.advance_to(12.0)
    s.advance_to(13.0)
    assert s.active(FaultKind.REBOOT)
    s.advance_to(13.5)
    assert device.told == [(12.0, "fault:reboot"), (13.0, "recover:back"), (13.5, "recover:resume")]
    assert s.states[0].phase is Phase.CLEARED and s.states[0].cleared_at == 13.5


def test_the_device_clears_what_only_it_can_end_and_stall_never_clears() -> None:
    device = Device()
    s = schedule("runaway@1,stall@1", device)
    s.start(0.0)
    s.advance_to(1.0)
    s.clear(FaultKind.RUNAWAY, 4.0)  # a stop ended it
    assert not s.active(FaultKind.RUNAWAY) and s.active(FaultKind.STALL)
    assert s.struck == frozenset({FaultKind.STALL})
    s.clear(FaultKind.KEY, 5.0)  # nothing struck of that kind: nothing happens
    assert [st.cleared_at for st in s.states] == [4.0, None]


def test_strike_next_brings_the_next_pending_fault_forward_and_it_never_strikes_twice() -> None:
    device = Device()
    s = schedule("key@200,runaway@100", device)
    assert s.strike_next(0.0) is None  # not started: there is no "next" yet
    s.start(0.0)
    assert s.strike_next(1.0) is FaultKind.RUNAWAY
    assert s.next_due() == 200.0
    s.advance_to(150.0)
    assert device.told == [(1.0, "fault:runaway")]
    assert s.strike_next(151.0) is FaultKind.KEY
    assert s.strike_next(152.0) is None
    s.advance_to(300.0)
    assert [t for t, _ in device.told] == [1.0, 151.0]


def test_a_fault_struck_by_hand_has_the_same_lifecycle() -> None:
    device = Device()
    s = schedule("", device)
    s.start(0.0)
    s.strike(FaultKind.UNPLUG, 5.0)
    assert s.next_due() == 7.0
    s.advance_to(7.0)
    assert device.told == [(5.0, "fault:unplug"), (7.0, "recover:replug")]
    assert s.states[0].at_s is None and s.states[0].phase is Phase.CLEARED


def test_start_again_makes_every_fault_pending_and_stop_forgets_recoveries() -> None:
    device = Device()
    s = schedule("unplug@1", device)
    s.start(0.0)
    s.advance_to(1.0)
    s.stop()
    assert s.next_due() is None
    s.advance_to(10.0)
    assert device.told == [(1.0, "fault:unplug")]  # no replug of a device that is off
    s.start(20.0)
    assert [st.phase for st in s.states] == [Phase.PENDING] and s.next_due() == 21.0


def test_kinds_a_device_does_not_simulate_are_refused_with_the_ones_it_does() -> None:
    allowed = frozenset({FaultKind.UNPLUG, FaultKind.STALL})
    with pytest.raises(ConfigError, match=r"no fault 'runaway'; allowed: stall, unplug"):
        schedule("unplug@1,runaway@2", Device(), allowed=allowed, device="pulse board")
    s = schedule("", Device(), allowed=allowed, device="pulse board")
    with pytest.raises(ValueError, match="pulse board has no fault 'key'"):
        s.strike(FaultKind.KEY, 0.0)


def test_link_faults_reach_the_link_before_the_device_and_the_replug_too() -> None:
    order: list[str] = []
    sent: list[bytes] = []
    link: FaultyLink[bytes] = FaultyLink(
        sent.append,
        garbage=lambda ps: [b"!" + p for p in ps],
        unplug=lambda: order.append("link:unplug"),
        plug=lambda: order.append("link:plug"),
    )

    class Ordered(Device):
        def on_fault(self, kind: FaultKind, now: float) -> None:
            order.append(f"device:{kind.value}:plugged={link.plugged}")

        def on_recovery(self, step: Recovery, now: float) -> None:
            order.append(f"device:{step.value}:plugged={link.plugged}")

    s = FaultSchedule(parse_faults("unplug@1,garbage@5,ignore@6"), Ordered(), link=link, timings=TIMINGS)
    s.start(0.0)
    s.advance_to(10.0)
    assert order == [
        "link:unplug",
        "device:unplug:plugged=False",
        "link:plug",
        "device:replug:plugged=True",
        "device:garbage:plugged=True",
        "device:ignore:plugged=True",  # not a link fault: the device's alone
    ]
    link.write([b"x"])
    assert sent == [b"!x"]


async def test_attached_to_a_loop_it_strikes_and_recovers_on_time() -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    class Waiting(Device):
        def on_recovery(self, step: Recovery, now: float) -> None:
            super().on_recovery(step, now)
            done.set()

    device = Waiting()
    s = FaultSchedule((Fault(FaultKind.UNPLUG, 0.01),), device, timings=FaultTimings(unplug_s=0.01), clock=loop.time)
    s.start(loop.time())
    s.attach(loop)
    async with asyncio.timeout(5):
        await done.wait()
    assert [what for _, what in device.told] == ["fault:unplug", "recover:replug"]
    s.stop()


# -- the same lifecycle in a real device ---------------------------------------------------------------


async def test_sim_belt_unplug_runs_the_engines_lifecycle_and_the_link_loses_samples() -> None:
    driver = SimBeltDriver(motorized=True, rate_hz=50, faults=parse_faults("unplug@0.05"))
    async with driver:
        kinds: list[DeviceEventKind] = []
        samples_while_out = 0
        async with asyncio.timeout(10):
            async for item in driver.samples():
                if isinstance(item, DeviceEvent):
                    kinds.append(item.kind)
                    if item.kind is DeviceEventKind.CONNECTED:
                        break
                elif kinds:
                    samples_while_out += 1
        assert kinds == [DeviceEventKind.DISCONNECTED, DeviceEventKind.CONNECTED]
        assert samples_while_out == 0 and driver.link.lost > 0
        (state,) = driver.schedule.states
        assert state.phase is Phase.CLEARED
        assert state.cleared_at is not None and state.struck_at is not None
        assert state.cleared_at - state.struck_at == pytest.approx(UNPLUG_S)
        await driver.start(Speed.from_mph(1.0))
        driver.strike(FaultKind.RUNAWAY)
        assert driver.schedule.active(FaultKind.RUNAWAY)
        await driver.stop()  # a stop ends a runaway, here as on every device
        assert not driver.schedule.active(FaultKind.RUNAWAY)
