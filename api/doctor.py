"""``retrotread doctor``: check what a deployment needs, and say how to fix each failure.

Each check returns a ``Finding`` (ok, warn or fail, what was found, how to fix it). Checks only
look (files, permissions, a TCP connect, an HTTP GET); they change nothing and never move a belt.

The machine's own description (maker, model, firmware, CSAFE hours of use, odometer, error and
service codes) comes from a running daemon's ``GET /api/v1/state`` ``device`` block, never from the
device itself: a serial port or a Bluetooth link the daemon holds must not be opened by a second
program (a second CSAFE master garbles both conversations; an FTMS machine takes one client).
"""

from __future__ import annotations

import grp
import json
import os
import socket
import ssl
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from retrotread.api.http_guard import loopback
from retrotread.daemon.auth import read_token, token_path
from retrotread.daemon.config import Settings, load_settings, parse_listen
from retrotread.drivers.errors import TreadError
from retrotread.drivers.registry import open_driver

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    what: str
    fix: str = ""

    def line(self) -> str:
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[self.level]
        return f"{mark} {self.what}" + (f"\n     fix: {self.fix}" if self.fix else "")


def run_checks(config: Path | None) -> list[Finding]:
    try:
        settings = load_settings(config)
    except TreadError as exc:
        return [Finding("fail", f"config: {exc}", "correct the key it names (retrotread.toml or the environment)")]
    found = [Finding("ok", f"config: driver {settings.daemon.driver}, mode {settings.daemon.mode}")]
    for check in CHECKS:
        found.extend(check(settings))
    return found


def check_driver(settings: Settings) -> Iterator[Finding]:
    url = settings.daemon.driver
    if not url:
        yield Finding(
            "fail",
            "driver: no driver configured",
            "set daemon.driver (or RETROTREAD_DAEMON__DRIVER), e.g. csafe:///dev/ttyUSB0; see docs/configuration.md",
        )
        return
    try:
        open_driver(url)
    except TreadError as exc:
        yield Finding("fail", f"driver: {exc}", "fix daemon.driver; see docs/configuration.md, driver URLs")
        return
    parts = urlsplit(url)
    if parts.scheme in ("csafe", "pulse"):
        yield from check_serial(Path(parts.path))
    elif parts.scheme == "ftms":
        yield from check_bluetooth()
    else:
        yield Finding("ok", f"driver: {parts.scheme}:// needs no device")


def check_serial(path: Path) -> Iterator[Finding]:
    if not path.exists():
        yield Finding(
            "fail",
            f"serial port {path} does not exist",
            "plug the adapter in; `retrotread scan` lists ports; see systemd/99-retrotread.rules",
        )
        return
    target = path.resolve()
    if not stat.S_ISCHR(target.stat().st_mode):
        yield Finding("warn", f"{path} is not a character device ({target})")
    if os.access(target, os.R_OK | os.W_OK):
        yield Finding("ok", f"serial port {path} → {target} is readable and writable")
        return
    group = grp.getgrgid(target.stat().st_gid).gr_name
    yield Finding(
        "fail",
        f"serial port {target} is not writable by this user (group {group})",
        f"sudo usermod -aG {group} $USER, then log in again (the systemd unit has SupplementaryGroups=dialout)",
    )


def check_bluetooth() -> Iterator[Finding]:
    adapters = sorted(p.name for p in Path("/sys/class/bluetooth").glob("hci*"))
    if not adapters:
        yield Finding(
            "fail",
            "no Bluetooth adapter (/sys/class/bluetooth is empty)",
            "plug in a Bluetooth LE adapter or enable the board's radio",
        )
    else:
        yield Finding("ok", f"Bluetooth adapters: {', '.join(adapters)}")
    if not Path("/run/dbus/system_bus_socket").exists():
        yield Finding(
            "fail",
            "D-Bus system bus is not running (bleak talks to BlueZ over it)",
            "sudo apt-get install dbus bluez && sudo systemctl enable --now bluetooth",
        )


def check_broker(settings: Settings) -> Iterator[Finding]:
    url = settings.mqtt.url
    if not url or url == "none":
        yield Finding("ok", "mqtt: not configured (HTTP and safety do not need it)")
        return
    parts = urlsplit(url)
    port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    host = parts.hostname or "127.0.0.1"
    try:
        with socket.create_connection((host, port), timeout=2.0):
            pass
    except OSError as exc:
        yield Finding(
            "fail",
            f"mqtt broker {host}:{port} is not reachable: {exc.strerror or exc}",
            "start the broker (sudo apt-get install mosquitto) or fix mqtt.url",
        )
        return
    yield Finding("ok", f"mqtt broker {host}:{port} accepts connections")
    if settings.mqtt.control == "full":
        yield from check_anonymous(host, port, parts.scheme == "mqtts")


def check_anonymous(host: str, port: int, tls: bool) -> Iterator[Finding]:
    """S16: with mqtt.control = "full" the broker's ACL is the only guard on driving the belt, so a
    broker that lets anonymous clients in lets anyone on the network drive it."""
    accepted = _anonymous_accepted(host, port, tls)
    if accepted is None:
        yield Finding("warn", f'mqtt.control = "full": could not tell whether {host}:{port} admits anonymous clients')
    elif accepted:
        yield Finding(
            "warn",
            f'mqtt.control = "full" on a broker that admits anonymous clients ({host}:{port}): '
            "anyone who reaches it can drive the belt",
            "set allow_anonymous false with a password_file and an acl_file (only the daemon and Home "
            'Assistant may write retrotread/+/cmd/#), or set mqtt.control = "stop"; see docs/home-assistant.md',
        )
    else:
        yield Finding("ok", f'mqtt broker {host}:{port} refuses anonymous clients (mqtt.control = "full")')


def _anonymous_accepted(host: str, port: int, tls: bool) -> bool | None:
    """Whether the broker accepts an MQTT 3.1.1 CONNECT without user name or password (its CONNACK
    return code 0), None when it cannot be told. The client disconnects at once; it publishes and
    subscribes nothing."""
    client_id = b"retrotread-doctor"
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a"  # protocol 3.1.1, clean session, keepalive 10 s
    body = variable + len(client_id).to_bytes(2, "big") + client_id
    connect = bytes([0x10, len(body)]) + body
    try:
        with socket.create_connection((host, port), timeout=2.0) as raw:
            sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host) if tls else raw
            sock.sendall(connect)
            ack = b""
            while len(ack) < 4:
                chunk = sock.recv(4 - len(ack))
                if not chunk:
                    return False  # closed on us: not admitted
                ack += chunk
            if ack[0] != 0x20:
                return None
            if ack[3] == 0:
                sock.sendall(b"\xe0\x00")  # DISCONNECT
                return True
            return False
    except (OSError, ssl.SSLError):
        return None


def check_token(settings: Settings) -> Iterator[Finding]:
    state = settings.daemon.state_dir
    if not settings.http.auth:
        yield Finding("warn", "http.auth is off: anyone who reaches the API can drive the belt", "set http.auth = true")
        return
    path = token_path(state)
    if not path.exists():
        writable = os.access(state if state.exists() else state.parent, os.W_OK)
        yield Finding(
            "ok" if writable else "fail",
            f"API token: none yet; made on first run in {state}",
            "" if writable else f"make {state} writable, or set daemon.state_dir",
        )
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        yield Finding("fail", f"API token {path} is readable by others (mode {mode:o})", f"chmod 600 {path}")
    else:
        yield Finding("ok", f"API token {path} (mode 600)")


def check_http(settings: Settings) -> Iterator[Finding]:
    host, port = parse_listen(settings.http.listen)
    if not loopback(host):
        yield Finding(
            "warn",
            f"http {settings.http.listen} listens beyond loopback: anyone on that network can reach the API",
            "keep http.auth = true (the stop needs no token, S16); list the names you use in "
            "http.allowed_hosts; or listen on 127.0.0.1",
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            if _answers(host, port):
                yield Finding("ok", f"http {settings.http.listen} is in use by a running retrotread daemon")
            else:
                yield Finding(
                    "fail",
                    f"http {settings.http.listen} is in use by another program",
                    "choose another http.listen or stop the other program",
                )
            return
    yield Finding("ok", f"http {settings.http.listen} is free")


def _answers(host: str, port: int) -> bool:
    """Whether a retrotread daemon answers ``/healthz`` there (200 when whole, 503 naming problems:
    both are its ``Health`` JSON, with ``ok``)."""
    try:
        with urlopen(Request(f"http://{host}:{port}/healthz"), timeout=1.0) as resp:
            body = resp.read()
    except HTTPError as exc:
        body = exc.read()
    except (URLError, OSError):
        return False
    try:
        health = json.loads(body)
    except ValueError:
        return False
    return isinstance(health, dict) and "ok" in health


def check_machine(settings: Settings) -> Iterator[Finding]:
    """What the treadmill says about itself, as the daemon running here read it (see the module)."""
    host, port = parse_listen(settings.http.listen)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # a daemon listening everywhere answers on loopback, where reads are free
    where = f"{host}:{port}"
    if not _answers(host, port):
        yield Finding("ok", f"machine: no daemon answers on {where} to ask (doctor never opens the treadmill itself)")
        return
    try:
        state = _daemon_state(host, port, read_token(settings.daemon.state_dir))
    except (OSError, ValueError, TypeError) as exc:
        yield Finding(
            "warn",
            f"machine: the daemon on {where} did not give its state ({exc})",
            "run doctor as the daemon's user, or on the daemon's machine (reads are free on loopback)",
        )
        return
    yield from describe_machine(state)


def describe_machine(state: dict[str, Any]) -> Iterator[Finding]:
    """Findings from a state snapshot's ``device`` block: only what the machine answered."""
    device = state.get("device")
    if not isinstance(device, dict) or not device:
        if not state.get("connected"):
            yield Finding("warn", "machine: the daemon is not connected to its treadmill, so it has no description yet")
        else:
            yield Finding("ok", "machine: the driver reports no description (simulators and sensors have none)")
        return
    named = " ".join(str(device[k]) for k in ("maker", "model") if device.get(k)) or "unnamed"
    parts = [named]
    for key, label in (("firmware", "firmware"), ("serial", "serial"), ("units", "units")):
        if device.get(key):
            parts.append(f"{label} {device[key]}")
    if isinstance(device.get("hours_of_use"), int | float):
        parts.append(f"{device['hours_of_use']:g} h of use")
    if isinstance(device.get("odometer_m"), int | float):
        parts.append(f"odometer {device['odometer_m'] / 1000:g} km")
    quirks = device.get("quirks")
    if isinstance(quirks, list) and quirks:
        parts.append(f"quirks applied: {'; '.join(map(str, quirks))}")
    yield Finding("ok", "machine: " + ", ".join(parts))
    if device.get("units_warning"):
        yield Finding(
            "warn",
            f"machine: {device['units_warning']}",
            "set the unit in daemon.driver to the machine's; see docs/protocols/ for the driver's unit option",
        )
    for key, what in (("error_code", "an error code (CSAFE GetErrorCode)"), ("service_code", "a service code")):
        code = device.get(key)
        if isinstance(code, int) and code:
            yield Finding(
                "warn",
                f"machine: the treadmill reports {what}: 0x{code:06x}",
                "look the code up in the treadmill's service manual; check the stop clip first",
            )


def _daemon_state(host: str, port: int, token: str | None) -> dict[str, Any]:
    request = Request(f"http://{host}:{port}/api/v1/state")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urlopen(request, timeout=2.0) as resp:
            data = json.loads(resp.read())
    except URLError as exc:
        raise OSError(str(exc.reason)) from exc
    if not isinstance(data, dict):
        raise TypeError("the state is not a JSON object")
    return data


CHECKS: list[Callable[[Settings], Iterator[Finding]]] = [
    check_driver,
    check_broker,
    check_token,
    check_http,
    check_machine,
]
