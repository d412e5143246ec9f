"""retrotread doctor: each failure is found and comes with its fix."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from daemon_proc import daemon
from helpers import free_port, sim_console

from retrotread.api.doctor import describe_machine, run_checks


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETROTREAD_DAEMON__STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RETROTREAD_HTTP__LISTEN", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("RETROTREAD_DAEMON__DRIVER", "sim://motorized")


def lines(config: Path | None = None) -> dict[str, str]:
    return {f.what: f.level for f in run_checks(config)}


def fails(config: Path | None = None) -> list[str]:
    return [f"{f.what} | {f.fix}" for f in run_checks(config) if f.level == "fail"]


def test_a_simulated_setup_passes() -> None:
    assert fails() == []


def test_no_driver_is_a_failure_that_says_where_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETROTREAD_DAEMON__DRIVER")
    [problem] = fails()
    assert "no driver configured" in problem and "daemon.driver" in problem


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[safety]\nenvelope_min_mph = 0.5\n")
    [problem] = fails(cfg)
    assert "safety.envelope_min_mph" in problem


def test_missing_serial_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETROTREAD_DAEMON__DRIVER", "csafe:///dev/ttyNOPE9")
    [problem] = fails()
    assert "/dev/ttyNOPE9 does not exist" in problem and "retrotread scan" in problem


def test_broker_reachable_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        monkeypatch.setenv("RETROTREAD_MQTT__URL", f"mqtt://127.0.0.1:{listener.getsockname()[1]}")
        assert fails() == []
    monkeypatch.setenv("RETROTREAD_MQTT__URL", f"mqtt://127.0.0.1:{free_port()}")
    [problem] = fails()
    assert "not reachable" in problem and "mosquitto" in problem


def test_token_readable_by_others(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "token").write_text("x\n")
    (state / "token").chmod(0o644)
    [problem] = fails()
    assert "chmod 600" in problem


def test_http_port_taken_by_another_program(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        monkeypatch.setenv("RETROTREAD_HTTP__LISTEN", f"127.0.0.1:{other.getsockname()[1]}")
        [problem] = fails()
    assert "another program" in problem


def test_listening_beyond_loopback_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETROTREAD_HTTP__LISTEN", f"0.0.0.0:{free_port()}")
    warned = [f for f in run_checks(None) if f.level == "warn" and "beyond loopback" in f.what]
    assert warned and "allowed_hosts" in warned[0].fix
    assert not [f for f in fails() if f.startswith("http")]  # a warning, not a failure
    monkeypatch.setenv("RETROTREAD_HTTP__LISTEN", f"127.0.0.1:{free_port()}")
    assert not [f for f in run_checks(None) if "beyond loopback" in f.what]


@pytest.mark.slow
def test_the_machine_a_running_daemon_reads_is_shown_without_opening_the_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 14.4: maker, model, firmware and the CSAFE counters, from the daemon's /api/v1/state;
    # doctor never opens the serial port the daemon holds.
    link = tmp_path / "ttyTREAD"
    with sim_console(link), daemon("--driver", f"csafe://{link}", "--mode", "reverse") as d:
        state = d.until(lambda s: s["connected"] and s["device"] and "odometer_m" in s["device"])
        device = state["device"]
        monkeypatch.setenv("RETROTREAD_DAEMON__DRIVER", f"csafe://{link}")
        monkeypatch.setenv("RETROTREAD_HTTP__LISTEN", d.url.removeprefix("http://"))
        monkeypatch.setenv("RETROTREAD_DAEMON__STATE_DIR", d.env["RETROTREAD_DAEMON__STATE_DIR"])
        opened: list[str] = []
        monkeypatch.setattr("retrotread.drivers.base.Driver.open", lambda self: opened.append(self.url))
        found = run_checks(None)
    assert opened == []
    [machine] = [f for f in found if f.what.startswith("machine:")]
    assert machine.level == "ok"
    assert device["model"] in machine.what and f"firmware {device['firmware']}" in machine.what
    assert f"{device['hours_of_use']:g} h of use" in machine.what and "odometer" in machine.what
    assert [f for f in found if f.level == "fail"] == []
    assert any("in use by a running retrotread daemon" in f.what for f in found)  # recognised, not "another program"


def test_without_a_running_daemon_doctor_says_it_does_not_ask_the_device() -> None:
    [machine] = [f for f in run_checks(None) if f.what.startswith("machine:")]
    assert machine.level == "ok" and "no daemon answers" in machine.what and "never opens" in machine.what


def test_the_machines_own_warnings_are_findings() -> None:
    state = {
        "connected": True,
        "device": {"model": "C956i", "error_code": 0x101, "service_code": 0, "units_warning": "console says mph"},
    }
    found = list(describe_machine(state))
    assert [f.level for f in found] == ["ok", "warn", "warn"]
    assert "0x000101" in found[2].what and "stop clip" in found[2].fix
    assert "console says mph" in found[1].what
    assert [f.level for f in describe_machine({"connected": False, "device": None})] == ["warn"]
    assert [f.level for f in describe_machine({"connected": True, "device": None})] == ["ok"]
