"""The link state machine on its own: scripted bodies, an injected sleep and clock, no device.

The sleep records each backoff delay and returns at once (or, where a test needs the machine to sit
in a wait, blocks until the test lets it go), so nothing here depends on wall-clock timing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from retrotread.drivers.errors import LinkLost, NotConnected
from retrotread.drivers.link_state import Backoff, LinkChange, LinkFailure, LinkMachine, LinkState, public_url

URL = "mqtt://user:hunter2@broker.local:1883/?password=hunter2&qos=1"
BOUND_S = 5.0  # a bound on waits for events, never a threshold


class Script:
    """Bodies whose outcomes the test decides: a queue of opening failures, an up that drops on cue."""

    def __init__(self, *, open_failures: int = 0, greet_failures: int = 0) -> None:
        self.open_failures = open_failures
        self.greet_failures = greet_failures
        self.opens = 0
        self.greetings = 0
        self.closings = 0
        self.drop = asyncio.Event()
        self.delays: list[float] = []
        self.hold: asyncio.Event | None = None  # when set, sleep blocks until it is set
        self.sleeping = asyncio.Event()
        self.serving = asyncio.Event()
        self.failures: list[LinkFailure] = []
        self.changes: list[LinkChange] = []
        self.now = 100.0

    async def opening(self) -> None:
        self.opens += 1
        if self.open_failures:
            self.open_failures -= 1
            raise NotConnected(f"no port (attempt {self.opens})")

    async def greeting(self) -> None:
        self.greetings += 1
        if self.greet_failures:
            self.greet_failures -= 1
            raise NotConnected("no answer to the stop")

    async def up(self) -> None:
        self.serving.set()
        await self.drop.wait()
        self.drop.clear()
        raise LinkLost("port dropped")

    async def closing(self) -> None:
        self.closings += 1

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        self.now += delay
        self.sleeping.set()
        if self.hold is not None:
            await self.hold.wait()
        await asyncio.sleep(0)

    def clock(self) -> float:
        return self.now

    def machine(self, **kwargs: object) -> LinkMachine:
        machine = LinkMachine(
            URL,
            opening=self.opening,
            greeting=self.greeting,
            up=self.up,
            closing=self.closing,
            backoff=Backoff(1.0, 4.0),
            on_failure=self.failures.append,
            sleep=self.sleep,
            clock=self.clock,
            **kwargs,  # type: ignore[arg-type]
        )
        machine.add_listener(self.changes.append)
        return machine


@pytest.fixture
def running() -> Iterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()


async def start(machine: LinkMachine, tasks: list[asyncio.Task[None]]) -> asyncio.Task[None]:
    task: asyncio.Task[None] = asyncio.create_task(machine.run())  # type: ignore[arg-type]
    tasks.append(task)
    return task


async def wait_for(machine: LinkMachine, state: LinkState) -> None:
    async with asyncio.timeout(BOUND_S):
        await machine.wait_for(state)


async def test_first_attempt_at_once_then_capped_doubling_reset_once_up(running: list[asyncio.Task[None]]) -> None:
    script = Script(open_failures=5)
    machine = script.machine()
    await start(machine, running)
    await wait_for(machine, LinkState.UP)
    # The first attempt goes without a wait; five failures wait 1, 2, 4 (the ceiling), 4, 4.
    assert script.delays == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert script.opens == 6
    assert script.closings == 5  # every failed attempt released what it opened

    script.open_failures = 1
    script.drop.set()
    await wait_for(machine, LinkState.DOWN)
    await wait_for(machine, LinkState.UP)
    # Up again reset the backoff: the drop waits the initial delay, then doubles once.
    assert script.delays[5:] == [1.0, 2.0]


async def test_failure_hook_names_the_state_it_failed_in(running: list[asyncio.Task[None]]) -> None:
    script = Script(open_failures=1, greet_failures=1)
    machine = script.machine()
    await start(machine, running)
    await wait_for(machine, LinkState.UP)
    script.drop.set()
    await wait_for(machine, LinkState.DOWN)
    await wait_for(machine, LinkState.UP)
    assert [(f.state, type(f.error), f.attempt) for f in script.failures] == [
        (LinkState.OPENING, NotConnected, 1),
        (LinkState.GREETING, NotConnected, 2),
        (LinkState.UP, LinkLost, 0),
    ]


async def test_change_notification_and_recovered_flag(running: list[asyncio.Task[None]]) -> None:
    script = Script()
    machine = script.machine()
    await machine.connect()
    await start(machine, running)
    script.drop.set()
    await wait_for(machine, LinkState.DOWN)
    await wait_for(machine, LinkState.UP)
    states = [(c.before, c.after, c.recovered) for c in script.changes]
    down, opening, greeting, up = LinkState.DOWN, LinkState.OPENING, LinkState.GREETING, LinkState.UP
    assert states == [
        (down, opening, False),
        (opening, greeting, False),
        (greeting, up, False),  # the first open is no recovery
        (up, down, False),
        (down, opening, False),
        (opening, greeting, False),
        (greeting, up, True),
    ]


async def test_retry_now_cuts_one_wait_short(running: list[asyncio.Task[None]]) -> None:
    script = Script(open_failures=2)
    script.hold = asyncio.Event()  # a backoff wait that would never end by itself
    machine = script.machine()
    await start(machine, running)
    async with asyncio.timeout(BOUND_S):
        await script.sleeping.wait()
    assert machine.state is LinkState.DOWN
    assert script.opens == 1
    script.sleeping.clear()
    machine.retry_now()
    async with asyncio.timeout(BOUND_S):
        await script.sleeping.wait()  # the second attempt went, failed, and waits again
    assert script.opens == 2
    assert machine.state is LinkState.DOWN  # once only: this wait is not skipped

    machine.retry_now()
    await wait_for(machine, LinkState.UP)
    assert script.opens == 3


async def test_retry_now_while_not_waiting_skips_the_next_wait(running: list[asyncio.Task[None]]) -> None:
    script = Script()
    machine = script.machine()
    await machine.connect()
    await start(machine, running)
    machine.retry_now()
    script.drop.set()
    await wait_for(machine, LinkState.DOWN)
    await wait_for(machine, LinkState.UP)
    assert script.delays == []  # the wait after the drop was skipped


async def test_logs_once_on_failure_and_once_on_recovery_without_credentials(
    running: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="retrotread.drivers.link_state")
    script = Script()
    machine = script.machine()
    await machine.connect()
    await start(machine, running)
    script.open_failures = 3
    script.drop.set()
    await wait_for(machine, LinkState.DOWN)
    await wait_for(machine, LinkState.UP)
    records = [r for r in caplog.records if r.name == "retrotread.drivers.link_state"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "link lost" in warnings[0]
    assert "cannot reconnect" in warnings[1]
    assert "back after 3 failed attempt(s), 11.0 s down" in warnings[2]  # 1 + 2 + 4 + 4 s, injected clock
    assert len([r for r in records if r.levelno == logging.DEBUG and "attempt" in r.getMessage()]) == 2
    for record in records:
        text = record.getMessage()
        assert "hunter2" not in text and "user" not in text
        assert "mqtt://broker.local:1883/?qos=1" in text or record.levelno == logging.DEBUG


async def test_connect_failure_is_raised_not_retried() -> None:
    script = Script(greet_failures=1)
    machine = script.machine()
    with pytest.raises(NotConnected, match="no answer to the stop"):
        await machine.connect()
    assert machine.state is LinkState.DOWN
    assert (script.opens, script.greetings, script.closings) == (1, 1, 1)
    assert script.delays == []


async def test_an_error_outside_retry_on_ends_run_after_closing() -> None:
    script = Script()

    async def broken() -> None:
        raise RuntimeError("a bug of ours")

    machine = script.machine(retry_on=(NotConnected, LinkLost))
    machine._up = broken  # the up body of a buggy owner
    await machine.connect()
    with pytest.raises(RuntimeError, match="a bug of ours"):
        async with asyncio.timeout(BOUND_S):
            await machine.run()
    assert machine.state is LinkState.DOWN
    assert script.closings == 1


async def test_cancelling_run_while_up_leaves_closing_to_the_owner() -> None:
    script = Script()
    machine = script.machine()
    await machine.connect()
    task: asyncio.Task[None] = asyncio.create_task(machine.run())  # type: ignore[arg-type]
    async with asyncio.timeout(BOUND_S):
        await script.serving.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert machine.state is LinkState.DOWN
    assert script.closings == 0


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("mqtt://u:p@host:1883?password=x&qos=1", "mqtt://host:1883?qos=1"),
        ("mqtts://token@host", "mqtts://host"),
        ("csafe:///dev/ttyUSB0", "csafe:///dev/ttyUSB0"),
        ("ftms://AA:BB:CC:DD:EE:FF", "ftms://AA:BB:CC:DD:EE:FF"),
        ("ftms://?name=Tread", "ftms://?name=Tread"),
    ],
)
def test_public_url_drops_credentials(url: str, public: str) -> None:
    assert public_url(url) == public


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="initial_s <= ceiling_s"):
        Backoff(2.0, 1.0)
