"""What ``retrotread run`` imports (issue 16): a daemon on a serial or simulated belt with no broker
must not pay for the libraries of faces it does not use. Each one is imported where it is used:
aiomqtt and paho with a broker (``api/compose.py``), prometheus-client at the first scrape of
``/metrics`` (``api/app.py``), bleak by the ftms drivers (``drivers/registry.py``), httpx by the
client commands and the FIT writer by exports, inside the functions that use them. And a request
starts no thread pool. The footprint itself is measured by ``bench/imports.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from helpers import free_port

from retrotread.api.app import create_app
from retrotread.daemon.controller import Controller
from retrotread.drivers import open_driver

# Never in a run with --mqtt none on a simulated belt (a serial belt is the same: pyserial only).
NOT_IN_RUN = (
    "aiomqtt",
    "paho",
    "prometheus_client",
    "bleak",
    "httpx",
    "pydantic_settings",
    "garmin_fit_sdk",
    "hypothesis",
    "rich",  # the terminal views only; the parser takes its key map from api/keys.py
    "pydantic.v1",  # FastAPI imports it to refuse v1 models; api/compose.py makes it unimportable
)

# The real entry point, with sys.modules written down as the process exits.
RUN = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(k for k, v in sys.modules.items() if v))))
sys.argv[0] = "retrotread"
from retrotread.api.cli import main
main()
"""


def run_modules(tmp_path: Path, *args: str) -> set[str]:
    """The modules (and their top-level packages) a real ``retrotread run ARGS`` had imported by
    the time it answered its first state request and was stopped."""
    out = tmp_path / "modules.json"
    port = free_port()
    cmd = [sys.executable, "-c", RUN, str(out), "run", *args, "--http", f"127.0.0.1:{port}"]
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RETROTREAD_")}
    env["RETROTREAD_DAEMON__STATE_DIR"] = str(tmp_path / "state")
    log = tmp_path / "stderr.txt"
    with log.open("w") as err, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline()  # the socket listens once the banner is out
            assert banner, log.read_text()
            # The lifespan has run and a request went through the whole stack when this answers.
            assert httpx.get(f"http://127.0.0.1:{port}/api/v1/state", timeout=30).status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    assert proc.returncode == 0, log.read_text()
    modules: set[str] = set(json.loads(out.read_text()))
    return modules | {name.split(".")[0] for name in modules}


@pytest.mark.slow
def test_run_without_a_broker_imports_no_mqtt_metrics_bluetooth_or_client_libraries(tmp_path: Path) -> None:
    loaded = run_modules(tmp_path, "--driver", "sim://motorized", "--mqtt", "none")
    assert {"fastapi", "uvicorn", "retrotread"} <= loaded  # it did run the daemon
    assert sorted(loaded.intersection(NOT_IN_RUN)) == []


@pytest.mark.parametrize(
    ("scheme", "needs_bleak"), [("csafe", False), ("pulse", False), ("none", False), ("sim", False), ("ftms", True)]
)
def test_only_the_ftms_driver_imports_bluetooth(scheme: str, needs_bleak: bool) -> None:
    """The registry imports a driver's module only for its scheme; only ftms:// brings bleak (the
    ftms case shows the check can see it)."""
    code = (
        "import sys; from retrotread.drivers.registry import driver_class; "
        f"driver_class({scheme!r}); print('bleak' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(needs_bleak)


async def test_requests_are_served_on_the_loop_without_starting_a_thread_pool() -> None:
    """The app's dependencies are ``async def``: FastAPI would run a plain ``def`` one in anyio's
    thread pool, a thread hop per dependency per request, and a run's first request would wait for
    that pool to start."""

    def pool() -> set[int | None]:
        return {t.ident for t in threading.enumerate() if t.name.startswith("AnyIO worker")}

    before = pool()  # an earlier test's loop may have left an idle worker behind: not ours
    app = create_app(lambda: Controller(open_driver("sim://motorized"), treadmill_id="t"), token="secret")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            assert (await client.get("/api/v1/state")).status_code == 200  # a read: may_read, ctl
            reset = await client.post("/api/v1/estop/reset", headers={"Authorization": "Bearer secret"})
            assert reset.status_code in (200, 409)  # a control call: need_token, ctl
            assert (await client.post("/api/v1/estop/reset")).status_code == 401
    assert pool() - before == set()
