"""The command surface of daemon/commands.py: one model per action, one Outcome, one spelling of
every event kind; and the real controller carrying the commands out on a simulated belt."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from helpers import wait_until
from pydantic import ValidationError

from retrotread.daemon.commands import (
    COMMANDS,
    SESSION_ACTIONS,
    EStopCommand,
    Outcome,
    PauseCommand,
    ResetCommand,
    SessionCommand,
    SpeedCommand,
    StartCommand,
    StopCommand,
    describe_invalid,
)
from retrotread.daemon.controller import Controller
from retrotread.daemon.events import EventKind
from retrotread.daemon.plans import MAX_SETS
from retrotread.daemon.snapshot import Event
from retrotread.drivers import open_driver
from retrotread.safety import Mode, SafetyConfig

ROOT = Path(__file__).resolve().parents[1]


def _supervisor_kinds() -> set[str]:
    """Every kind the safety floor spells: the first argument of each ``SafetyEvent(...)``."""
    kinds = set()
    for path in (ROOT / "safety").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "SafetyEvent"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                kinds.add(node.args[0].value)
    return kinds


def test_every_supervisor_event_kind_has_its_one_spelling() -> None:
    kinds = _supervisor_kinds()
    assert {"estop", "overspeed-alert", "arm-refused", "start-held"} <= kinds
    unknown = sorted(k for k in kinds if EventKind.spelled(k) is None)
    assert not unknown, f"add these to daemon/events.py EventKind: {unknown}"
    assert EventKind.spelled("overspeed-alert") is EventKind.OVERSPEED_ALERT
    assert all("-" not in kind.value for kind in EventKind)  # one spelling: snake_case


def test_an_event_from_an_older_history_reads_in_the_one_spelling() -> None:
    old = Event.model_validate({"kind": "arm-refused", "rule": "S3", "reason": "arm-refused", "ts": "x"})
    assert old.kind is EventKind.ARM_REFUSED and old.reason == "arm-refused"  # the reason keeps safety.md's
    assert Event.model_validate_json(old.model_dump_json()).model_dump()["kind"] == "arm_refused"
    with pytest.raises(ValidationError):
        Event(kind="no-such-kind", ts="x")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["1.0", "fast", True, None, [1.0], {"mph": 1}, 10**400])
def test_a_speed_is_a_json_number_and_a_bad_one_names_s1(bad: object) -> None:
    for model in (StartCommand, SpeedCommand):
        with pytest.raises(ValidationError) as caught:
            model.model_validate({"speed_mph": bad})
        error, rule = describe_invalid(caught.value.errors())
        assert rule == "S1" and error.startswith("speed_mph: ")


def test_nan_and_infinity_parse_and_extra_fields_do_not() -> None:
    # The supervisor refuses them with S1 (409); the command only checks they are numbers.
    assert math.isnan(StartCommand.model_validate({"speed_mph": float("nan")}).speed_mph)
    assert StartCommand.model_validate({"speed_mph": 1}).speed_mph == 1.0
    assert SpeedCommand.model_validate_json('{"speed_mph": Infinity}').speed_mph == math.inf
    with pytest.raises(ValidationError):
        StartCommand.model_validate({"speed_mph": 1.0, "force": True})
    with pytest.raises(ValidationError):
        StopCommand.model_validate({"reason": "x"})  # a stop's body is never parsed: the faces stop first


def test_session_limits_are_the_plans_and_a_bad_plan_is_malformed() -> None:
    assert SessionCommand(sets=MAX_SETS, work_s=60).to_plan().sets == MAX_SETS
    with pytest.raises(ValidationError):
        SessionCommand(sets=MAX_SETS + 1, work_s=60)
    with pytest.raises(ValidationError):
        SessionCommand.model_validate({"sets": "3", "work_s": 60})
    with pytest.raises(ValidationError) as caught:
        SessionCommand(plan="2x")
    error, rule = describe_invalid(caught.value.errors())
    assert "'2x'" in error and "3x60s/60s" in error and rule is None
    with pytest.raises(ValidationError) as caught:
        SessionCommand(sets=2)
    assert "work_s" in describe_invalid(caught.value.errors())[0]


def test_every_action_has_a_model_with_its_name() -> None:
    names = set(COMMANDS) | set(SESSION_ACTIONS)
    belt = {"start", "speed", "stop", "incline", "estop", "reset"}
    assert names == belt | {"session", "pause", "resume", "skip", "abort", "extend"}
    assert all(model.name == name for name, model in {**COMMANDS, **SESSION_ACTIONS}.items())


async def test_the_controller_answers_every_command_with_an_outcome() -> None:
    driver = open_driver("sim://motorized?rate_hz=50")
    async with Controller(driver, treadmill_id="t", safety=SafetyConfig(mode=Mode.REVERSE)) as c:
        sub = c.hub.subscribe(maxsize=10_000)
        await wait_until(lambda: c.supervisor.armed and c.samples_seen > 0, sub, within=10)
        refused = await c.execute(StartCommand(speed_mph=2.0), "test")
        assert refused == Outcome(ok=False, error=refused.error, rule="S1")
        assert (await c.execute(StartCommand(speed_mph=float("nan")), "test")).rule == "S1"
        assert (await c.execute(PauseCommand(), "test")) == Outcome(ok=False, error="no session is running")
        started = await c.execute(SessionCommand(plan="2x5s/3s"), "test")
        assert started.ok and started.session is not None and started.session.phase == "countdown"
        paused = await c.execute(PauseCommand(), "test")
        assert paused.ok and paused.session is not None and paused.session.paused
        assert c.session_paused is True
        stop = await c.execute(EStopCommand(reason="test"), "test")
        assert stop.ok and c.snapshot().stop.latched and c.snapshot().stop.reason == "test"
        assert c.session_paused is None  # a latched stop ends the session
        assert (await c.execute(StartCommand(speed_mph=1.0), "test")).rule == "S6"
        assert (await c.execute(StopCommand(), "test")).ok  # never refused, latched or not (S5)
        seen = c.samples_seen
        await wait_until(lambda: c.samples_seen > seen, sub, within=10)  # the reset reads a fresh 0 (S6)
        assert (await c.execute(ResetCommand(), "test")).ok
        assert not c.snapshot().stop.latched


def test_a_speed_comes_in_mph_or_in_km_h_exactly_one() -> None:
    """Home Assistant's number shows km/h and sends km/h; the conversion is the daemon's, exact."""
    assert SpeedCommand(speed_kmh=1.7).speed.mph == pytest.approx(1.7 / 1.609344)
    assert SpeedCommand(speed_mph=1.0).speed.mph == pytest.approx(1.0)
    for body in ({}, {"speed_mph": 1.0, "speed_kmh": 1.61}):
        with pytest.raises(ValidationError) as err:
            SpeedCommand.model_validate(body)
        message, rule = describe_invalid(err.value.errors())
        assert rule == "S1" and message.startswith("speed_mph: "), message
