"""Run a real ``retrotread`` process for a test, and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
from helpers import free_port, poll_until

RETROTREAD = str(Path(sys.executable).with_name("retrotread"))


class Daemon:
    def __init__(self, proc: subprocess.Popen[str], url: str, errors: IO[str], env: dict[str, str]) -> None:
        self.env = env
        """The environment the daemon runs with (its state directory): pass it to ``run_cli``."""
        self.proc = proc
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)
        self._errors = errors

    def log(self) -> str:
        """What the daemon wrote to stderr so far."""
        self._errors.flush()
        self._errors.seek(0)
        return self._errors.read()

    def state(self) -> dict[str, Any]:
        resp = self.http.get("/api/v1/state")
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.http.post(path, json=body)

    def until(self, predicate: Callable[[dict[str, Any]], Any], within: float = 20.0) -> dict[str, Any]:
        """Poll the state until ``predicate(state)`` holds: a condition with a deadline."""
        return poll_until(self.state, predicate, within, "state condition")

    def wait_log(self, pattern: str, within: float = 20.0, since: int = 0) -> list[str]:
        """Poll the log until a line from line ``since`` on matches ``pattern`` (a regex): the lines
        that match, in order. Another process's words come only this way; the wait has a deadline."""
        rx = re.compile(pattern)

        def matching() -> list[str]:
            return [line for line in self.log().splitlines()[since:] if rx.search(line)]

        try:
            return poll_until(matching, bool, within)
        except AssertionError:
            raise AssertionError(
                f"no log line matching {pattern!r} within {within} s; log:\n{self.log()[-4000:]}"
            ) from None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)


@contextmanager
def daemon(
    *args: str, env: dict[str, str] | None = None, mqtt: str = "none", cwd: Path | None = None
) -> Iterator[Daemon]:
    """``retrotread run ARGS --http 127.0.0.1:PORT --mqtt MQTT`` with a state directory of its own
    (``mqtt`` a broker's URL, or ``none``: most tests need no broker), run in ``cwd`` (a relative
    path in ARGS is the user's, from where they stand).

    Ready once its banner line is printed. stderr goes to a temporary file (a pipe nobody reads
    could fill and stall the daemon); ``Daemon.log()`` reads it. The HTTP client carries the token.
    """
    port = free_port()
    cmd = [RETROTREAD, "run", *args, "--http", f"127.0.0.1:{port}", "--mqtt", mqtt]
    with (
        tempfile.TemporaryDirectory(prefix="retrotread-state-") as state_dir,
        tempfile.TemporaryFile("w+") as errors,
    ):
        full_env = {"RETROTREAD_DAEMON__STATE_DIR": state_dir, **(env or {})}
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=errors, text=True, env={**os.environ, **full_env}, cwd=cwd
        ) as proc:
            d = Daemon(proc, f"http://127.0.0.1:{port}", errors, full_env)
            try:
                assert proc.stdout is not None
                banner = proc.stdout.readline()  # printed once the driver is up and the port is listening
                if not banner:
                    raise AssertionError(f"daemon did not start: {d.log()}")
                token = (Path(full_env["RETROTREAD_DAEMON__STATE_DIR"]) / "token").read_text().strip()
                d.http.headers["Authorization"] = f"Bearer {token}"
                yield d
            finally:
                d.http.close()
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()


def run_cli(
    *args: str, timeout: float = 60, input_text: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RETROTREAD, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        env={**os.environ, **(env or {})},
        check=False,
    )


def args_of(*parts: Sequence[str]) -> list[str]:
    return [p for part in parts for p in part]


Frame = tuple[str, dict[str, Any]]
"""One SSE frame: its ``event:`` kind and its ``data:`` payload."""


class EventTap:
    """Reads a daemon's SSE stream (``GET /api/v1/events``) on a thread and keeps every frame.

    ``wait`` looks at the ``event`` frames' payloads; ``until`` at every frame so far (cues, timers).
    """

    def __init__(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        self.frames: list[Frame] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._client = httpx.Client(base_url=url, headers=dict(headers or {}), timeout=httpx.Timeout(5, read=None))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("event stream did not open")

    @property
    def events(self) -> list[dict[str, Any]]:
        """The payloads of the ``event`` frames so far."""
        with self._cond:
            return [p for k, p in self.frames if k == "event"]

    def _run(self) -> None:
        kind = ""
        try:
            with self._client.stream("GET", "/api/v1/events") as resp:
                self._ready.set()
                for line in resp.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("event:"):
                        kind = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        with self._cond:
                            self.frames.append((kind, json.loads(line.split(":", 1)[1])))
                            self._cond.notify_all()
        except httpx.HTTPError:
            return
        finally:
            self._ready.set()

    def until(self, predicate: Callable[[list[Frame]], bool], within: float = 20.0) -> list[Frame]:
        """Until ``predicate(frames so far)`` holds: a condition with a deadline."""
        deadline = time.monotonic() + within
        with self._cond:
            while not predicate(self.frames):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not seen within {within} s; got {self.frames}")
                self._cond.wait(left)
            return list(self.frames)

    def wait(self, predicate: Callable[[dict[str, Any]], bool], within: float = 20.0) -> dict[str, Any]:
        """The first ``event`` payload for which ``predicate`` holds, waited for with a deadline."""
        frames = self.until(lambda f: any(k == "event" and predicate(p) for k, p in f), within)
        return next(p for k, p in frames if k == "event" and predicate(p))

    def close(self) -> None:
        self._stop.set()
        self._client.close()
