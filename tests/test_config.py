"""The configuration's sources and their order (docs/configuration.md): defaults, the TOML file,
``RETROTREAD_<SECTION>__<KEY>`` variables, the command line, each beating the one before; and a bad
value from any of them is one line naming the key.

``daemon/config.py`` merges these itself (no pydantic-settings, issue 16), so these pin every
behaviour the library used to give.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from retrotread.api.discovery import SPEED_UNITS
from retrotread.daemon.config import MqttSection, Settings, load_settings
from retrotread.daemon.events import CueKind
from retrotread.drivers.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No configuration from the machine running the tests: no variables, no /etc file."""
    for name in list(os.environ):
        if name.upper().startswith("RETROTREAD_") or name == "STATE_DIRECTORY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("retrotread.daemon.config.DEFAULT_CONFIG", tmp_path / "absent.toml")


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "retrotread.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment(tmp_path: Path) -> None:
    s = load_settings()
    assert (s.daemon.id, s.daemon.driver, s.daemon.mode) == ("treadmill", "", "reverse")
    assert s.daemon.state_dir == tmp_path / "xdg" / "retrotread"
    assert (s.http.listen, s.http.auth, s.http.allowed_hosts) == ("127.0.0.1:8000", True, [])
    assert (s.mqtt.url, s.mqtt.control, s.mqtt.speed_unit) == ("", "stop", "km/h")
    assert s.cues.enabled == list(CueKind) and s.cues.remaining_s == [10.0]


def test_systemd_state_directory_is_the_default_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/retrotread:/var/lib/other")
    assert load_settings().daemon.state_dir == Path("/var/lib/retrotread")


def test_the_environment_beats_the_file_and_the_command_line_beats_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = toml(tmp_path, "[daemon]\ndriver = 'csafe:///dev/ttyUSB0'\nid = 'file'\nmode = 'deadmill'\n")
    assert load_settings(cfg).daemon.driver == "csafe:///dev/ttyUSB0"
    monkeypatch.setenv("RETROTREAD_DAEMON__DRIVER", "pulse:///dev/ttyACM0")
    monkeypatch.setenv("RETROTREAD_DAEMON__ID", "env")
    s = load_settings(cfg)
    assert (s.daemon.driver, s.daemon.id, s.daemon.mode) == ("pulse:///dev/ttyACM0", "env", "deadmill")
    s = load_settings(cfg, daemon={"driver": "sim://motorized", "mode": None})
    # --driver wins; an option not given (None) leaves the environment's and the file's values.
    assert (s.daemon.driver, s.daemon.id, s.daemon.mode) == ("sim://motorized", "env", "deadmill")


def test_an_empty_variable_is_a_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETROTREAD_MQTT__URL", "")
    assert load_settings(toml(tmp_path, "[mqtt]\nurl = 'mqtt://broker'\n")).mqtt.url == ""


def test_variable_names_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("retrotread_daemon__mode", "deadmill")
    monkeypatch.setenv("RETROTREAD_Http__Public_Reads", "yes")
    s = load_settings()
    assert s.daemon.mode == "deadmill" and s.http.public_reads is True


def test_scalar_variables_are_read_as_the_file_would_be(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETROTREAD_SAFETY__ENVELOPE_MAX_MPH", "1.1")
    monkeypatch.setenv("RETROTREAD_HTTP__AUTH", "false")
    monkeypatch.setenv("RETROTREAD_DAEMON__STATE_DIR", "/srv/retrotread")
    s = load_settings()
    assert s.safety.envelope_max_mph == 1.1 and s.http.auth is False
    assert s.daemon.state_dir == Path("/srv/retrotread")


def test_list_variables_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETROTREAD_CUES__ENABLED", '["go", "session_done"]')
    monkeypatch.setenv("RETROTREAD_CUES__REMAINING_S", "[30, 10]")
    monkeypatch.setenv("RETROTREAD_HTTP__ALLOWED_HOSTS", '["treadmill.local"]')
    s = load_settings()
    assert s.cues.enabled == [CueKind.GO, CueKind.SESSION_DONE] and s.cues.remaining_s == [30.0, 10.0]
    assert s.http.allowed_hosts == ["treadmill.local"]


def test_a_whole_section_as_one_json_variable_under_its_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETROTREAD_DAEMON", '{"id": "whole", "mode": "deadmill"}')
    monkeypatch.setenv("RETROTREAD_DAEMON__ID", "key")
    s = load_settings()
    assert (s.daemon.id, s.daemon.mode) == ("key", "deadmill")


def test_variables_of_the_client_commands_are_not_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RETROTREAD_URL", "RETROTREAD_TOKEN", "RETROTREAD_HW_URL", "RETROTREAD_SIM_TRACE"):
        monkeypatch.setenv(name, "x")
    assert load_settings().daemon.id == "treadmill"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("RETROTREAD_DAEMON__MODE", "sideways", "daemon.mode = 'sideways': Input should be 'reverse' or 'deadmill'"),
        ("RETROTREAD_SAFETY__ENVELOPE_MAX_MPH", "1.5", "safety.envelope_max_mph = '1.5': the envelope may be narrowed"),
        ("RETROTREAD_SAFETY__ENVELOPE_MAX_MPH", "fast", "safety.envelope_max_mph = 'fast': Input should be a valid"),
        ("RETROTREAD_HTTP__LISTEN", "nowhere", "http.listen = 'nowhere': expected HOST:PORT"),
        ("RETROTREAD_DAEMON__NOPE", "1", "unknown key 'daemon.nope' (or RETROTREAD_DAEMON__NOPE)"),
        ("RETROTREAD_CUES__ENABLED", '["go", "dance"]', "cues.enabled.1 = 'dance'"),
        ("RETROTREAD_HTTP__ALLOWED_HOSTS", "a.local", "http.allowed_hosts = 'a.local': expected JSON, a list"),
        ("RETROTREAD_CUES__ENABLED", "", "cues.enabled = '': expected JSON, a list"),
        ("RETROTREAD_DAEMON", "notjson", "daemon = 'notjson': expected JSON, an object"),
        ("RETROTREAD_MQTT__SPEED_UNIT", "kph", "mqtt.speed_unit = 'kph': Input should be 'km/h' or 'mph'"),
        ("RETROTREAD_MQTT__SPEED_UNIT", "MPH", "mqtt.speed_unit = 'MPH': Input should be 'km/h' or 'mph'"),
        ("RETROTREAD_MQTT__TELEMETRY_HZ", "inf", "mqtt.telemetry_hz = 'inf': Input should be a finite number"),
        ("RETROTREAD_MQTT__TELEMETRY_HZ", "0", "mqtt.telemetry_hz = '0': Input should be greater than 0"),
    ],
)
def test_a_bad_variable_is_one_line_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    line = str(caught.value)
    assert says in line and "\n" not in line
    assert name in line  # where to change it


def test_a_bad_list_item_names_its_variable_not_an_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETROTREAD_HTTP__ALLOWED_HOSTS", "[1]")
    with pytest.raises(
        ConfigError, match=r"http\.allowed_hosts\.0 = 1: .*\(set in the file or RETROTREAD_HTTP__ALLOWED_HOSTS\)$"
    ):
        load_settings()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[daemon]\nnope = 1\n", "unknown key 'daemon.nope'"),
        ("[nope]\nx = 1\n", "unknown key 'nope' (or RETROTREAD_NOPE)"),
        ("[safety]\nenvelope_max_mph = 1.5\n", "safety.envelope_max_mph = 1.5: the envelope may be narrowed"),
        ("[http]\nallowed_hosts = 'x'\n", "http.allowed_hosts = 'x': Input should be a valid list"),
        ("daemon = 5\n", "daemon = 5: Input should be a valid dictionary"),
        ("this is not toml", "Expected '=' after a key"),
        ('[mqtt]\nspeed_unit = "mi/h"\n', "mqtt.speed_unit = 'mi/h': Input should be 'km/h' or 'mph'"),
        ("[mqtt]\nspeed_unit = 1\n", "mqtt.speed_unit = 1: Input should be 'km/h' or 'mph'"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_key_and_the_file(tmp_path: Path, text: str, says: str) -> None:
    cfg = toml(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(cfg)
    line = str(caught.value)
    assert says in line and str(cfg) in line and "\n" not in line


def test_a_bad_table_stays_an_error_under_command_line_options(tmp_path: Path) -> None:
    """``daemon = 5`` with ``--driver``: the file's mistake is reported, not papered over (nor a traceback)."""
    with pytest.raises(ConfigError, match="daemon = 5"):
        load_settings(toml(tmp_path, "daemon = 5\n"), daemon={"driver": "sim://motorized"})


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_mqtt_speed_unit_from_the_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``[mqtt] speed_unit``: Home Assistant's Target speed number in km/h (the default) or mph."""
    cfg = toml(tmp_path, '[mqtt]\nspeed_unit = "mph"\n')
    assert load_settings(cfg).mqtt.speed_unit == "mph"
    monkeypatch.setenv("RETROTREAD_MQTT__SPEED_UNIT", "km/h")
    assert load_settings(cfg).mqtt.speed_unit == "km/h"  # the environment beats the file
    monkeypatch.setenv("RETROTREAD_MQTT__SPEED_UNIT", "mph")
    assert load_settings().mqtt.speed_unit == "mph"


def test_the_speed_units_allowed_are_those_discovery_takes() -> None:
    """Discovery takes the config's list (one copy): the setting and the discovery agree."""
    assert get_args(MqttSection.model_fields["speed_unit"].annotation) == SPEED_UNITS


def test_every_key_is_in_the_configuration_page() -> None:
    """docs/configuration.md has a row for each key of each section, with its variable."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for key in model.model_fields:
            env = f"RETROTREAD_{section}__{key}".upper()
            if not re.search(rf"^\| `{section}\.{key}` \|.*\| `{env}`", page, re.MULTILINE):
                missing.append(f"{section}.{key}")
    assert not missing, f"docs/configuration.md has no row for {missing}"
