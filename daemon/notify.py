"""systemd notification: READY=1, STOPPING=1 and the watchdog ping (sd_notify(3), no library).

The watchdog is pinged from the safety loop itself (S15), so a hung loop stops the pings and
systemd restarts the daemon. Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._addr = env.get("NOTIFY_SOCKET") or None
        if self._addr and self._addr.startswith("@"):
            self._addr = "\0" + self._addr[1:]  # abstract namespace
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        wanted = usec.isdigit() and (not pid or pid == str(os.getpid()))
        # Ping at twice the rate systemd needs, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval_s = int(usec) / 1e6 / 2 if wanted else None
        self._last_ping = -1e9
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def _send(self, message: str) -> None:
        if self._addr is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto(message.encode(), self._addr)
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", message.split("=")[0], exc)

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def watchdog(self) -> None:
        """Called on every safety tick; sends a ping at most every half watchdog interval."""
        if self.watchdog_interval_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval_s:
            self._last_ping = now
            self._send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
