"""The MQTT bridge keeps its broker link with the drivers' one link machine (issue 11 point 4).

Against a real, private Mosquitto that is stopped (killed, as in a crash) and started again: the
bridge's ``link_state`` and ``connected`` follow the machine's transitions, and the loss and the
recovery are each logged once as a warning naming the broker's URL. Waiting is on the machine's
states, with a bound, never on sleeps.
"""

from __future__ import annotations

import logging

import pytest
from mqtt_broker import Mosquitto, broker_fixture  # noqa: F401  (the ``broker`` fixture)

from retrotread.api.mqtt import LinkState, MqttBridge
from retrotread.daemon.controller import Controller
from retrotread.drivers import link_state, open_driver
from retrotread.drivers.link_state import LinkChange

BOUND_S = 20.0  # a bound on waits for a state, never a threshold


def test_the_bridge_link_state_is_the_drivers_enum() -> None:
    assert LinkState is link_state.LinkState


async def test_bridge_states_follow_the_link_machine_through_a_broker_stop(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[LinkChange, LinkState, bool]] = []
    caplog.set_level(logging.DEBUG, logger="retrotread.api.mqtt")
    async with Controller(open_driver("sim://motorized?rate_hz=20"), treadmill_id="lk") as controller:
        async with MqttBridge(controller, broker.url, backoff_max_s=1.0) as mqtt:
            machine = mqtt.link_machine
            # What the bridge says at each of the machine's transitions (its own listener ran first).
            machine.add_listener(lambda change: seen.append((change, mqtt.link_state, mqtt.connected)))
            await mqtt.wait_link(LinkState.UP, within=BOUND_S)
            assert mqtt.connected and mqtt.connections == 1

            await broker.stop()
            await mqtt.wait_link(LinkState.DOWN, within=BOUND_S)
            assert not mqtt.connected
            await broker.start()
            await mqtt.wait_connected(count=2, within=BOUND_S)
            assert mqtt.link_state is LinkState.UP and machine.state is LinkState.UP

    # The bridge's state was the machine's at every transition, and connected exactly when up.
    assert seen, "no transition seen"
    assert all(state is change.after for change, state, _ in seen), seen
    assert all(connected == (change.after is LinkState.UP) for change, _, connected in seen), seen
    # The very first run may have passed opening and greeting before the listener was added.
    path = [change.after for change, _, _ in seen]
    ups = [i for i, s in enumerate(path) if s is LinkState.UP]
    assert len(ups) == 2, path
    first, second = ups
    assert path[first + 1] is LinkState.DOWN  # the broker stopped: up → down
    # Back: one or more tries (opening, then down on a refusal), then opening → greeting → up.
    assert path[second - 2 : second + 1] == [LinkState.OPENING, LinkState.GREETING, LinkState.UP], path
    assert seen[second][0].recovered
    assert path[-1] is LinkState.DOWN  # closed

    where = f"mqtt://127.0.0.1:{broker.port}"
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("retrotread.api.mqtt") and r.levelno >= logging.WARNING
    ]
    assert len([m for m in warnings if "link lost" in m]) == 1, warnings
    assert len([m for m in warnings if "connected again" in m]) == 1, warnings
    assert all(where in m for m in warnings), warnings  # each names the broker, no credentials


async def test_first_connect_passes_opening_and_greeting(broker: Mosquitto) -> None:
    """From down, the first connection goes opening → greeting → up, with no failure logged."""
    async with Controller(open_driver("sim://motorized?rate_hz=20"), treadmill_id="lk1") as controller:
        bridge = MqttBridge(controller, broker.url)
        seen: list[LinkState] = []
        bridge.link_machine.add_listener(lambda change: seen.append(change.after))
        async with bridge as mqtt:
            await mqtt.wait_connected(within=BOUND_S)
            assert mqtt.link_machine.failures == 0
        assert seen == [LinkState.OPENING, LinkState.GREETING, LinkState.UP, LinkState.DOWN]
        assert mqtt.link_state is LinkState.DOWN
