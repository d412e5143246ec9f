"""S15: under systemd, READY=1 once the daemon answers and the watchdog fed from the safety loop."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from daemon_proc import daemon

from retrotread.daemon.notify import SystemdNotifier

pytestmark = pytest.mark.slow


def test_s15_ready_and_watchdog_pings_reach_the_notify_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
        with daemon("--driver", "sim://motorized?rate_hz=20", env=env) as d:
            got: list[str] = []
            while not ({"READY=1", "WATCHDOG=1"} <= {m.split("\n")[0] for m in got}):
                got.append(sock.recv(4096).decode())
            assert d.state()["connected"]
            pings_before_stop = sum(m == "WATCHDOG=1" for m in got)
            assert pings_before_stop >= 1
        # The daemon has exited: whatever it sent is already in the socket's buffer.
        sock.setblocking(False)
        rest = []
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except BlockingIOError:
            pass
        assert "STOPPING=1" in rest


def test_without_systemd_nothing_is_sent() -> None:
    notifier = SystemdNotifier(env={})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    notifier.ready()
    notifier.watchdog()
    notifier.close()


def test_watchdog_pid_for_another_process_is_ignored() -> None:
    notifier = SystemdNotifier(env={"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval_s is None
