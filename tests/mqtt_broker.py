"""A private Mosquitto per test: started on a free loopback port, torn down at the end, restartable.

``broker`` is the fixture (import ``broker_fixture`` into a test module to use it). The broker
logs everything to its stderr, which is read as it comes: readiness is its own "running" line
(never a sleep or a connect-retry loop), and tests may wait for a log line, e.g. to see which
client published what. This module must not talk MQTT itself; tests use aiomqtt for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers import LineLog, free_port

READY_S = 10.0


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class Mosquitto:
    """One private broker: 127.0.0.1 only, anonymous, no persistence (a restart forgets retained)."""

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "") -> None:
        exe = mosquitto_path()
        if exe is None:
            pytest.skip("mosquitto is not installed (scripts/test installs Debian's mosquitto)")
        self.exe = exe
        self.port = port or free_port()
        self.config = workdir / f"mosquitto-{self.port}.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type all\n"
            "connection_messages true\n" + ("user root\n" if os.geteuid() == 0 else "") + extra_config
            # Started as root, Mosquitto would drop to the 'mosquitto' user, who cannot read the test's files.
        )
        self.log = LineLog()
        """Everything the broker logged (across restarts), line by line as it comes."""
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def lines(self) -> list[str]:
        return self.log.lines

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("the broker is running")
        mark = len(self.lines)
        self._proc = await asyncio.create_subprocess_exec(
            self.exe,
            "-c",
            str(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        self._reader = asyncio.get_running_loop().create_task(
            self.log.read(self._proc.stderr), name=f"mosquitto {self.port}"
        )
        try:
            await self.wait_for_log(r"mosquitto version \S+ running", within=READY_S, since=mark)
        except TimeoutError:
            await self.stop()
            raise RuntimeError("mosquitto did not start:\n" + "\n".join(self.lines[mark:])) from None

    async def wait_for_log(self, pattern: str, within: float = 10.0, since: int = 0) -> str:
        """The first log line from index ``since`` on that matches ``pattern`` (a regex)."""
        return await self.log.wait_for(pattern, within, since)

    async def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the broker (killed by default: the clients see the link drop, as in a crash)."""
        proc, self._proc = self._proc, None
        reader, self._reader = self._reader, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            await proc.wait()
        if reader is not None:
            await reader  # ends at EOF, once the process is gone

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@pytest.fixture(name="broker")
async def broker_fixture(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
