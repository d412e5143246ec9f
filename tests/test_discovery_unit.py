"""``mqtt.speed_unit`` end to end (issue 13): a real ``retrotread run`` told ``mph`` publishes the
Home Assistant discovery with the Target speed number in mph, its range the envelope in mph, and the
number works as published; a bad value stops start-up like any bad setting.

The daemon is the real process (``helpers.mqtt_daemon``) on a private Mosquitto; what it publishes
is read by a separate client (``helpers.watching``), waiting on messages, never on sleeps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import run_cli
from ha_rules import ha_rules
from helpers import mqtt_daemon, watching
from mqtt_broker import Mosquitto, broker_fixture  # noqa: F401  (the ``broker`` fixture)

from retrotread.safety.envelope import REVERSE_MAX_MPH, REVERSE_MIN_MPH

pytestmark = pytest.mark.slow

MPH_FULL = {"RETROTREAD_MQTT__SPEED_UNIT": "mph", "RETROTREAD_MQTT__CONTROL": "full"}


def _defines_target_speed(config: Any) -> bool:
    return isinstance(config, dict) and len(config.get("cmps", {}).get("target_speed", {})) > 1


async def test_a_daemon_set_to_mph_publishes_its_target_speed_number_in_mph(broker: Mosquitto) -> None:
    tid = "imperial"
    base = f"retrotread/{tid}"
    topic = f"homeassistant/device/{tid}/config"
    # A 0.1 mph grid, so the speed pressed below is kept as it is.
    async with (
        mqtt_daemon(broker.url, tid, "sim://motorized?rate_hz=20&unit=mph", env=MPH_FULL),
        watching(broker, topic, f"{base}/status", f"{base}/state", f"{base}/telemetry", f"{base}/cmd/result") as w,
    ):
        _, msg, config = await w.wait(topic, _defines_target_speed, within=20)
        assert msg.retain
        assert ha_rules(config) == []
        cmps = config["cmps"]
        number = cmps["target_speed"]
        assert (number["p"], number["device_class"], number["unit_of_measurement"]) == ("number", "speed", "mph")
        assert (number["min"], number["max"]) == (REVERSE_MIN_MPH, REVERSE_MAX_MPH) == (0.8, 1.2)
        assert "target_mph" in number["value_template"] and "speed_mph" in number["command_template"]
        belt = cmps["belt_speed"]
        assert (belt["p"], belt["device_class"], belt["unit_of_measurement"]) == ("sensor", "speed", "mph")

        # The number as Home Assistant uses it: its command_template with the value, on its topic.
        await w.wait(f"{base}/status", lambda s: s == "online", within=20)
        # S4: a start needs the belt read still for 1 s; "online" can come before the first reading.
        _, _, first = await w.wait(f"{base}/telemetry", within=20)
        await w.wait(f"{base}/telemetry", lambda t: t["seq"] >= first["seq"] + 40, within=20)
        await w.publish(f"{base}/cmd/start", json.dumps({"speed_mph": 1.0, "id": "go"}))
        assert (await w.result("go", base, within=15))["ok"] is True
        mark = len(w.messages)
        await w.publish(number["command_topic"], number["command_template"].replace("{{ value }}", "1.1"))
        _, _, state = await w.wait(
            f"{base}/state", lambda s: s.get("target_mph") == pytest.approx(1.1), since=mark, within=15
        )
        assert state["envelope_mph"] == [0.8, 1.2]
        await w.publish(f"{base}/cmd/stop", json.dumps({"id": "halt"}))
        assert (await w.result("halt", base))["ok"] is True


# What ``retrotread run`` prints for a bad setting of the [mqtt] table (load_settings' one line).
ONE_LINE = re.compile(
    r"^retrotread: config( in \S+)?: mqtt\.(?P<key>\w+) = '[^']*': Input should be .+ "
    r"\(set in the file or RETROTREAD_MQTT__(?P<env>\w+)\)$"
)


@pytest.mark.parametrize(("where", "value"), [("env", "kph"), ("env", "MPH"), ("file", "mi/h")])
def test_a_bad_speed_unit_stops_start_up_in_one_line_as_a_bad_control_does(
    tmp_path: Path, where: str, value: str
) -> None:
    """Exit 1 and one line naming the key, the value and what is allowed, as for ``mqtt.control``."""
    env = {"RETROTREAD_DAEMON__STATE_DIR": str(tmp_path / "state")}
    args = ["run", "--driver", "sim://motorized", "--mqtt", "mqtt://127.0.0.1:1"]
    if where == "env":
        env["RETROTREAD_MQTT__SPEED_UNIT"] = value
    else:
        cfg = tmp_path / "retrotread.toml"
        cfg.write_text(f'[mqtt]\nspeed_unit = "{value}"\n')
        args += ["--config", str(cfg)]
    out = run_cli(*args, env=env)
    assert out.returncode == 1, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert f"mqtt.speed_unit = {value!r}: Input should be 'km/h' or 'mph'" in line, line
    said = ONE_LINE.match(line)
    assert said and (said["key"], said["env"]) == ("speed_unit", "SPEED_UNIT"), line

    control = run_cli("run", "--driver", "sim://motorized", env={**env, "RETROTREAD_MQTT__CONTROL": "bogus"})
    assert control.returncode == out.returncode
    [other] = control.stderr.strip().splitlines()
    assert ONE_LINE.match(other), other
