"""A real Home Assistant Core for the opt-in test ``test_ha_core.py`` (``RETROTREAD_HA_CORE=1``).

Discovery is otherwise checked only against Home Assistant's rules as read from its source
(``test_discovery.ha_rules``); this runs the real thing, so what a user sees is what the test sees:

- ``ensure_venv``: once, cached under ``~/.cache/retrotread/ha-core-<version>/``, a venv with
  pyenv's Python 3.13 and ``homeassistant==<version>`` from PyPI, plus the requirements of every
  integration Home Assistant sets up here (its ``DEFAULT_INTEGRATIONS`` and ``mqtt`` with their
  dependencies, read from their manifests), so it never installs anything at start-up.
- ``seed_config``: a config directory that starts headless: onboarding done, an owner with a
  long-lived access token, ``http``/``api`` on a free loopback port and no ``default_config`` (no
  cloud, zeroconf, ssdp or bluetooth), and an MQTT config entry for the test's private Mosquitto.
  The storage formats are Home Assistant's own (``auth/auth_store.py``,
  ``auth/providers/homeassistant.py``, ``components/onboarding``, ``config_entries.py``).
- ``HomeAssistant``: the ``hass`` process, its REST API, and a websocket that records every state
  change and reads the entity and device registries.
- ``Broker``, ``MqttTap``, ``retrotread_run``: a private Mosquitto, an MQTT client that keeps every
  message with its QoS, and a real ``retrotread run`` on it. All synchronous (threads), so one
  Home Assistant serves the whole module.

Waits are conditions with deadlines (on messages, websocket events or REST answers), never sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import paho.mqtt.client as paho
from daemon_proc import RETROTREAD as RETROTREAD  # test_ha_core takes these two from here
from daemon_proc import Daemon, daemon
from daemon_proc import run_cli as run_cli
from helpers import free_port, poll_until
from mqtt_broker import mosquitto_path
from paho.mqtt.enums import CallbackAPIVersion
from websockets.sync.client import ClientConnection, connect

ENABLE_ENV = "RETROTREAD_HA_CORE"
VERSION_ENV = "RETROTREAD_HA_VERSION"
HA_VERSION = os.environ.get(VERSION_ENV, "2025.4.4")
"""The newest Home Assistant Core that installs on Python 3.13.0 (pyenv's 3.13 here): 2025.5 and
later want 3.13.2. Another one: ``RETROTREAD_HA_VERSION=...``."""
START_S = 180.0  # a cold start on a loaded 2-core machine, frontend included
OWNER = "owner"
PASSWORD = "retrotread"
_HASH = (
    "import base64, bcrypt, sys; "
    "print(base64.b64encode(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(12))).decode())"
)


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV) == "1"


def cache_dir(version: str = HA_VERSION) -> Path:
    return Path.home() / ".cache" / "retrotread" / f"ha-core-{version}"


def python313() -> Path:
    """The newest Python 3.13 that pyenv has (``$(pyenv root)/versions/3.13.*``)."""
    root = os.environ.get("PYENV_ROOT")
    if not root and shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    root = root or str(Path.home() / ".pyenv")
    found = sorted(
        (p for p in (Path(root) / "versions").glob("3.13.*") if (p / "bin" / "python3").exists()),
        key=lambda p: tuple(int(x) for x in re.findall(r"\d+", p.name)),
    )
    if not found:
        raise RuntimeError(f"Home Assistant needs Python 3.13: none in {root}/versions (pyenv install 3.13)")
    return found[-1] / "bin" / "python3"


# Run inside Home Assistant's venv: the requirements of what it will set up, from the manifests.
_REQUIREMENTS = """
import json, pathlib, homeassistant, homeassistant.bootstrap as b
components = pathlib.Path(homeassistant.__file__).parent / "components"
todo = [*b.CORE_INTEGRATIONS, *b.DEFAULT_INTEGRATIONS, "http", "api", "mqtt"]
seen, requirements = set(), set()
while todo:
    domain = todo.pop()
    if domain in seen:
        continue
    seen.add(domain)
    manifest = json.loads((components / domain / "manifest.json").read_text())
    requirements.update(manifest.get("requirements", []))
    todo += manifest.get("dependencies", [])
print("\\n".join(sorted(requirements)))
"""


def ensure_venv(version: str = HA_VERSION) -> Path:
    """Home Assistant's venv (built once, under a lock so two test runs do not build it at once);
    the path of its ``hass``."""
    where = cache_dir(version)
    where.mkdir(parents=True, exist_ok=True)
    venv = where / "venv"
    hass = venv / "bin" / "hass"
    ready = where / "ready"
    with (where / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists() and hass.exists():
            return hass
        shutil.rmtree(venv, ignore_errors=True)
        log = (where / "install.log").open("w")
        py = venv / "bin" / "python"

        def run(*cmd: str | Path) -> str:
            out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)
            log.write(f"$ {' '.join(map(str, cmd))}\n{out.stdout}{out.stderr}\n")
            log.flush()
            if out.returncode != 0:
                raise RuntimeError(f"{cmd[0]} ... failed ({out.returncode}); see {where / 'install.log'}")
            return out.stdout

        run(python313(), "-m", "venv", venv)
        run(py, "-m", "pip", "install", "-q", "--upgrade", "pip")
        run(py, "-m", "pip", "install", "-q", f"homeassistant=={version}")
        constraints = next((venv / "lib").glob("python3.13/site-packages/homeassistant/package_constraints.txt"))
        requirements = run(py, "-c", _REQUIREMENTS).split()
        run(py, "-m", "pip", "install", "-q", "-c", constraints, *requirements)
        log.close()
        ready.write_text(version + "\n")
        return hass


# ---------------------------------------------------------------------------------- configuration


def _store(key: str, data: Any, version: int = 1, minor: int = 1) -> str:
    return json.dumps({"version": version, "minor_version": minor, "key": key, "data": data}, indent=2)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def access_token(token_id: str, jwt_key: str, lifetime_s: int = 10 * 365 * 86400) -> str:
    """The JWT Home Assistant would make for a refresh token (``auth/__init__.py``
    ``async_create_access_token``: HS256 over ``iss``/``iat``/``exp`` with the token's jwt_key)."""
    now = int(time.time())
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps({"iss": token_id, "iat": now, "exp": now + lifetime_s}).encode())
    signature = hmac.new(jwt_key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(signature)}"


def seed_config(config: Path, python: Path, *, http_port: int, broker_port: int, version: str = HA_VERSION) -> str:
    """Write a config directory Home Assistant (whose venv Python is ``python``) starts from with
    no onboarding; the owner's access token."""
    storage = config / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat()
    user_id, credential_id, token_id = (uuid.uuid4().hex for _ in range(3))
    jwt_key = secrets.token_hex(64)
    (storage / "onboarding").write_text(
        _store("onboarding", {"done": ["user", "core_config", "analytics", "integration"]}, version=4)
    )
    owner = {
        "id": user_id,
        "group_ids": ["system-admin"],
        "is_owner": True,
        "is_active": True,
        "name": "Owner",
        "system_generated": False,
        "local_only": False,
    }
    credential = {
        "id": credential_id,
        "user_id": user_id,
        "auth_provider_type": "homeassistant",
        "auth_provider_id": None,
        "data": {"username": OWNER},
    }
    token = {
        "id": token_id,
        "user_id": user_id,
        "client_id": None,
        "client_name": "retrotread test",
        "client_icon": None,
        "token_type": "long_lived_access_token",
        "created_at": now,
        "access_token_expiration": 10 * 365 * 86400.0,
        "token": secrets.token_hex(64),
        "jwt_key": jwt_key,
        "last_used_at": None,
        "last_used_ip": None,
        "expire_at": None,
        "credential_id": None,
        "version": version,
    }
    (storage / "auth").write_text(
        _store("auth", {"users": [owner], "groups": [], "credentials": [credential], "refresh_tokens": [token]})
    )
    # The owner's UI password, PASSWORD, as the provider stores it: base64 of a bcrypt hash, made
    # with Home Assistant's own bcrypt (a person may log in to look at what the test left).
    hashed = subprocess.run(
        [str(python), "-c", _HASH, PASSWORD], capture_output=True, text=True, check=True
    ).stdout.strip()
    (storage / "auth_provider.homeassistant").write_text(
        _store("auth_provider.homeassistant", {"users": [{"username": OWNER, "password": hashed}]})
    )
    entry: dict[str, Any] = {
        "created_at": now,
        "data": {"broker": "127.0.0.1", "port": broker_port},
        "discovery_keys": {},
        "disabled_by": None,
        "domain": "mqtt",
        "entry_id": uuid.uuid4().hex,
        "minor_version": 2,
        "modified_at": now,
        "options": {"discovery": True, "discovery_prefix": "homeassistant"},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "subentries": [],
        "title": "private Mosquitto",
        "unique_id": None,
        "version": 1,
    }
    (storage / "core.config_entries").write_text(_store("core.config_entries", {"entries": [entry]}, minor=5))
    # No default_config: only what the test needs (Home Assistant still sets up its DEFAULT_INTEGRATIONS).
    (config / "configuration.yaml").write_text(
        "homeassistant:\n"
        "  name: retrotread test\n"
        "  unit_system: metric\n"
        "  time_zone: UTC\n"
        "  latitude: 52.37\n"
        "  longitude: 4.89\n"
        "  elevation: 0\n"
        "  currency: EUR\n"
        "  country: NL\n"
        f"  internal_url: http://127.0.0.1:{http_port}\n"
        "http:\n"
        "  server_host: 127.0.0.1\n"
        f"  server_port: {http_port}\n"
        "api:\n"
        "logger:\n"
        "  default: info\n"
        "  logs:\n"
        "    homeassistant.components.mqtt: debug\n"
    )
    return access_token(token_id, jwt_key)


# ---------------------------------------------------------------------------------- Home Assistant


class HaSocket:
    """Home Assistant's websocket API: commands (registries) and every ``state_changed`` event."""

    def __init__(self, url: str, token: str) -> None:
        self._ws: ClientConnection = connect(url, open_timeout=10, max_size=None)
        hello = json.loads(self._ws.recv(10))
        assert hello["type"] == "auth_required", hello
        self._ws.send(json.dumps({"type": "auth", "access_token": token}))
        answer = json.loads(self._ws.recv(10))
        if answer["type"] != "auth_ok":
            raise AssertionError(f"websocket auth: {answer}")
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._results: dict[int, dict[str, Any]] = {}
        self.changes: list[tuple[str, dict[str, Any] | None]] = []
        """(entity_id, new state or None when removed), in order."""
        self._thread = threading.Thread(target=self._read, daemon=True, name="ha websocket")
        self._thread.start()
        self.call("subscribe_events", event_type="state_changed")

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for raw in self._ws:
                msg = json.loads(raw)
                with self._cond:
                    if msg.get("type") == "event":
                        data = msg["event"]["data"]
                        self.changes.append((data["entity_id"], data.get("new_state")))
                    elif "id" in msg:
                        self._results[msg["id"]] = msg
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def call(self, kind: str, **fields: Any) -> Any:
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "type": kind, **fields}))
        with self._cond:
            if not self._cond.wait_for(lambda: msg_id in self._results, 15):
                raise AssertionError(f"websocket {kind}: no answer")
            answer = self._results.pop(msg_id)
        if not answer.get("success"):
            raise AssertionError(f"websocket {kind}: {answer}")
        return answer.get("result")

    def wait_change(
        self, ok: Callable[[str, dict[str, Any] | None], bool], *, since: int = 0, within: float = 20.0
    ) -> tuple[str, dict[str, Any] | None]:
        """The first state change from index ``since`` on for which ``ok(entity_id, new_state)``."""
        with self._cond:
            found: list[tuple[str, dict[str, Any] | None]] = []

            def seen() -> bool:
                found[:] = [c for c in self.changes[since:] if ok(*c)][:1]
                return bool(found)

            if not self._cond.wait_for(seen, within):
                tail = self.changes[since:][-8:]
                raise AssertionError(f"no such state change within {within} s; the last ones: {tail}")
            return found[0]

    def close(self) -> None:
        self._ws.close()
        self._thread.join(5)


class HomeAssistant:
    """One ``hass`` process on a seeded config directory; start, stop and restart keep the directory."""

    def __init__(self, hass: Path, config: Path, broker_port: int) -> None:
        self.hass = hass
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = seed_config(config, hass.with_name("python"), http_port=self.port, broker_port=broker_port)
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: HaSocket | None = None
        self._out: IO[bytes] | None = None
        self.started_in_s: list[float] = []

    @property
    def log_file(self) -> Path:
        return self.config / "home-assistant.log"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def start(self) -> None:
        began = time.monotonic()
        self._out = (self.config / "hass.out").open("ab")
        self.proc = subprocess.Popen(
            [str(self.hass), "-c", str(self.config), "--log-file", str(self.log_file), "--log-no-color"],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = began + START_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"hass exited ({self.proc.returncode}):\n{self.log()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                answer = self.http.get("/api/config", timeout=5)
                if answer.status_code == 200 and answer.json().get("state") == "RUNNING":
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"hass not running within {START_S} s:\n{self.log()[-4000:]}")
            time.sleep(0.25)  # polling a process's readiness with a deadline, not synchronising a test
        self.started_in_s.append(time.monotonic() - began)
        self.ws = HaSocket(f"ws://127.0.0.1:{self.port}/api/websocket", self.token)

    def stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._out is not None:
            self._out.close()
            self._out = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- what a user sees -----------------------------------------------------------------------

    def state(self, entity_id: str) -> dict[str, Any] | None:
        answer = self.http.get(f"/api/states/{entity_id}")
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data

    def states(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        answer = self.http.get("/api/states")
        answer.raise_for_status()
        return {s["entity_id"]: s for s in answer.json() if prefix in s["entity_id"]}

    def until(self, get: Callable[[], Any], ok: Callable[[Any], bool], within: float = 20.0, what: str = "") -> Any:
        """Ask ``get()`` until ``ok`` holds: a condition with a deadline (REST has no push)."""
        return poll_until(get, ok, within, what)

    def service(self, domain: str, name: str, **data: Any) -> httpx.Response:
        return self.http.post(f"/api/services/{domain}/{name}", json=data)

    def entities(self) -> dict[str, dict[str, Any]]:
        """The entity registry's MQTT entries by entity_id (unique_id, category, device)."""
        assert self.ws is not None
        return {e["entity_id"]: e for e in self.ws.call("config/entity_registry/list") if e["platform"] == "mqtt"}

    def device(self, identifier: str) -> dict[str, Any] | None:
        """The device registry entry with ``["mqtt", identifier]`` among its identifiers."""
        assert self.ws is not None
        for dev in self.ws.call("config/device_registry/list"):
            if ["mqtt", identifier] in dev["identifiers"]:
                return dict(dev)
        return None


# ---------------------------------------------------------------------------------- MQTT


class Broker:
    """A private Mosquitto like ``mqtt_broker.Mosquitto``, run from threads: one serves a module."""

    def __init__(self, workdir: Path) -> None:
        exe = mosquitto_path()
        if exe is None:
            raise RuntimeError("mosquitto is not installed (scripts/test installs Debian's mosquitto)")
        self.port = free_port()
        conf = workdir / f"mosquitto-{self.port}.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type all\nconnection_messages true\n" + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True, name="mosquitto log").start()
        with self._cond:
            if not self._cond.wait_for(lambda: any("running" in line for line in self.lines), 10):
                raise RuntimeError("mosquitto did not start:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._cond.notify_all()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


Message = tuple[str, bytes, int, bool]
"""topic, payload, QoS as delivered, retained."""


class MqttTap:
    """A paho client that keeps every message it gets (subscribed at QoS 2: what arrives shows the
    QoS it was published with) and can publish."""

    def __init__(self, port: int, *topics: str) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"tap-{uuid.uuid4().hex[:8]}")
        self._client.on_message = self._on_message
        subscribed = threading.Semaphore(0)
        self._client.on_subscribe = lambda *_: subscribed.release()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        for topic in topics:
            self._client.subscribe(topic, qos=2)
            if not subscribed.acquire(timeout=10):
                raise AssertionError(f"no SUBACK for {topic}")

    def _on_message(self, _client: Any, _userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self._cond.notify_all()

    def wait(
        self, topic: str, ok: Callable[[bytes], bool] = lambda _: True, *, since: int = 0, within: float = 20
    ) -> Message:
        with self._cond:
            found: list[Message] = []

            def seen() -> bool:
                found[:] = [m for m in self.messages[since:] if m[0] == topic and ok(m[1])][:1]
                return bool(found)

            if not self._cond.wait_for(seen, within):
                raise AssertionError(
                    f"nothing on {topic} within {within} s; got {[m[0] for m in self.messages[since:]]}"
                )
            return found[0]

    def publish(self, topic: str, payload: str | bytes, *, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


# ---------------------------------------------------------------------------------- retrotread


@contextlib.contextmanager
def retrotread_run(broker: Broker, tid: str, *args: str, env: dict[str, str] | None = None) -> Iterator[Daemon]:
    """``retrotread run ARGS --mqtt BROKER`` as ``tid`` (``daemon_proc.daemon`` with the broker and the id)."""
    with daemon(*args, env={"RETROTREAD_DAEMON__ID": tid, **(env or {})}, mqtt=broker.url) as d:
        yield d
