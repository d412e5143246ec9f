"""``retrotread``: the command line.

Exit codes: 0 ok, 1 refused or failed, 2 usage. Errors are one line on stderr; ``--debug`` shows
tracebacks. The daemon itself is built by ``api.compose``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from retrotread.api.compose import build_controller, serve
from retrotread.daemon.auth import load_or_create_token, read_token, rotate_token
from retrotread.daemon.config import Settings, load_settings
from retrotread.daemon.history import SqliteHistory
from retrotread.daemon.plans import PlanError, parse_plan
from retrotread.drivers.errors import TreadError

log = logging.getLogger("retrotread")

DEFAULT_URL = "http://127.0.0.1:8000"
DEMO_DRIVER = "sim://motorized?noise_mph=0.01"


class CliError(Exception):
    """A failure to report as one line, exit 1."""


def _redact(url: str) -> str:
    """A broker URL without its password, for printing."""
    if not url or url.strip().lower() == "none":
        return ""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _settings_from(args: argparse.Namespace, **defaults: Any) -> Settings:
    daemon: dict[str, Any] = {"driver": args.driver or defaults.get("driver"), "mode": args.mode}
    return load_settings(
        Path(args.config) if getattr(args, "config", None) else None,
        daemon=daemon,
        http={"listen": args.http or defaults.get("http")},
        mqtt={"url": getattr(args, "mqtt", None)},
    )


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    asyncio.run(
        serve(
            settings,
            banner=f"retrotread: {settings.daemon.driver} in {settings.daemon.mode} mode, "
            f"http://{settings.http.listen}/, mqtt {_redact(settings.mqtt.url) or 'off (--mqtt URL to publish)'}",
        )
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    settings = _settings_from(args, driver=DEMO_DRIVER)
    url = f"http://{settings.http.listen}"
    banner = "\n".join(
        [
            f"retrotread demo: a simulated motorized treadmill in {settings.daemon.mode} mode",
            f"  state:      curl {url}/api/v1/state",
            f"  live:       curl -N {url}/api/v1/events",
            f"  start belt: curl -X POST {url}/api/v1/belt/start -H 'content-type: application/json' "
            f"-H 'Authorization: Bearer {_demo_token(settings)}' -d '{{\"speed_mph\": 1.0}}'",
            f"  session:    retrotread session start 3x20s/10s --url {url}",
            f"  watch:      retrotread status --watch --url {url}   (space = emergency stop)",
            f"  stop:       retrotread estop --url {url}",
            f"  dashboard:  {url}/",
            f"  API docs:   {url}/docs",
        ]
    )
    asyncio.run(_demo(settings, banner))
    return 0


async def _demo(settings: Settings, banner: str) -> None:
    from retrotread.api.broker import demo_broker, subscribe_hint

    async with demo_broker(settings.mqtt.url or None) as choice:
        lines = [banner, f"  {choice.note}"]
        if choice.url:
            lines.append(f"  mqtt:       {subscribe_hint(choice.url, settings.daemon.id)}")
        lines.append("Ctrl-C stops the belt and exits.")
        await serve(settings, banner="\n".join(lines), mqtt_url=choice.url or "none")


def cmd_mqtt(args: argparse.Namespace) -> int:
    from retrotread.api.mqtt import forget, parse_broker_url

    settings = load_settings(
        Path(args.config) if args.config else None, daemon={"id": args.id}, mqtt={"url": args.mqtt}
    )
    url = settings.mqtt.url
    if not url or url.strip().lower() == "none":
        raise CliError("mqtt forget needs a broker: --mqtt URL or mqtt.url in the config")
    asyncio.run(forget(url, settings.daemon.id))
    print(
        f"removed treadmill {settings.daemon.id} (Home Assistant device, retained state/timer/status) "
        f"from {parse_broker_url(url).where}"
    )
    return 0


# ------------------------------------------------------------------ standalone deadmill


def cmd_deadmill(args: argparse.Namespace) -> int:
    from retrotread.api.termview import render_summary

    try:
        plan = parse_plan(args.plan)
    except PlanError as exc:
        raise CliError(str(exc)) from None
    settings = load_settings(
        Path(args.config) if args.config else None, daemon={"driver": args.driver, "mode": "deadmill"}
    )
    record = asyncio.run(_deadmill(settings, plan, plain=args.plain or not sys.stdout.isatty()))
    sets = [s.model_dump() for s in record.sets] if record else []
    if args.json:
        print(json.dumps(record.model_dump(mode="json") if record else None))
    else:
        from rich.console import Console

        Console().print(render_summary(sets, f"{plan.name}: {record.outcome if record else 'not run'}"))
    return 0 if record and record.outcome == "completed" else 1


async def _deadmill(settings: Settings, plan: Any, *, plain: bool) -> Any:
    from rich.console import Console
    from rich.live import Live

    from retrotread.api.termview import keys, render_live

    console = Console(stderr=True)
    async with build_controller(settings) as controller:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        actions: set[asyncio.Task[Any]] = set()

        def act(coro: Coroutine[Any, Any, Any]) -> None:
            task = loop.create_task(coro)
            actions.add(task)
            task.add_done_callback(actions.discard)

        def on_key(ch: str) -> None:
            session = controller.session
            if ch == " " and session is not None:
                act(controller.resume_session() if session.paused_at is not None else controller.pause_session())
            elif ch in ("q", "Q"):
                if session is not None:
                    act(controller.abort_session())
                done.set()

        sub = controller.hub.subscribe(("state", "timer", "event"))
        view = await controller.start_session(plan)
        sid = view.id
        with keys(on_key) as interactive:
            hint = "space pause/resume · q end session" if interactive else ""
            live = None if plain else Live(console=console, refresh_per_second=8, transient=True)
            with live if live is not None else contextlib.nullcontext():
                while not done.is_set():
                    try:
                        update = await sub.next(within=0.5)
                    except TimeoutError:
                        update = None
                    snap = controller.snapshot().model_dump(mode="json")
                    timer = snap.get("session")
                    if live is not None:
                        live.update(render_live(snap, timer, hint))
                    if update is not None and update.kind == "event" and plain:
                        ev = update.payload
                        if ev.kind in ("set_started", "set_completed", "session_completed", "session_ended"):
                            console.print(f"{ev.ts} {ev.kind} {ev.set or ''}".rstrip())
                    if controller.session is None:
                        done.set()
        if actions:
            await asyncio.wait(actions, timeout=1.0)
        return controller.history.get(sid)


# ------------------------------------------------------------------ client commands


def _demo_token(settings: Settings) -> str:
    return load_or_create_token(settings.daemon.state_dir) if settings.http.auth else "(auth off)"


def _token(args: argparse.Namespace) -> str | None:
    """RETROTREAD_TOKEN, else --token-file, else the token file in the configured state directory."""
    if tok := os.environ.get("RETROTREAD_TOKEN"):
        return tok
    if getattr(args, "token_file", None):
        path = Path(args.token_file)
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"cannot read the token file {path}: {exc.strerror}") from None
    try:
        settings = load_settings(Path(args.config) if getattr(args, "config", None) else None)
    except TreadError:
        return None
    return read_token(settings.daemon.state_dir)


def cmd_doctor(args: argparse.Namespace) -> int:
    from retrotread.api.doctor import run_checks

    findings = run_checks(Path(args.config) if args.config else None)
    for f in findings:
        print(f.line())
    failed = sum(f.level == "fail" for f in findings)
    print(f"{failed} problem{'s' if failed != 1 else ''} found" if failed else "all checks passed")
    return 1 if failed else 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.config) if args.config else None)
    state_dir = settings.daemon.state_dir
    token = rotate_token(state_dir) if args.rotate else load_or_create_token(state_dir)
    print(token)
    if args.rotate:
        print("rotated: restart the daemon for it to take effect", file=sys.stderr)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    import csv

    settings = load_settings(Path(args.config) if args.config else None)
    path = settings.daemon.state_dir / "history.sqlite3"
    if not path.exists():
        raise CliError(f"no history yet at {path}")
    store = SqliteHistory(path)
    try:
        if args.weekly:
            rows = store.weekly()
            if args.json:
                print(json.dumps([{"week": w, "plan": p, "sessions": n} for w, p, n in rows]))
            else:
                writer = csv.writer(sys.stdout)
                writer.writerow(["week", "plan", "sessions"])
                writer.writerows(rows)
            return 0
        records = store.recent(args.limit)
    finally:
        store.close()
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(
            [
                "session",
                "plan",
                "mode",
                "started_at",
                "outcome",
                "set",
                "set_started_at",
                "work_s",
                "distance_m",
                "avg_mph",
                "max_mph",
                "set_outcome",
            ]
        )
        for r in records:
            for st in r.sets or ():
                writer.writerow(
                    [
                        r.id,
                        r.plan,
                        r.mode,
                        r.started_at,
                        r.outcome,
                        st.set,
                        st.started_at,
                        st.work_s,
                        st.distance_m,
                        st.avg_mph,
                        st.max_mph,
                        st.outcome,
                    ]
                )
    else:
        print(json.dumps([r.model_dump(mode="json") for r in records]))
    return 0


def _client(args: argparse.Namespace) -> Any:
    import httpx

    headers = {}
    if tok := _token(args):
        headers["Authorization"] = f"Bearer {tok}"
    return httpx.Client(base_url=args.url, headers=headers, timeout=5.0)


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    import httpx

    try:
        with _client(args) as client:
            resp = client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the daemon at {args.url}: {exc}; is `retrotread run` running?") from None
    try:
        data = resp.json()
    except ValueError:
        data = resp.text
    if resp.status_code >= 400:
        if isinstance(data, dict):
            msg = data.get("error") or data.get("detail") or data
            rule = data.get("rule")
            raise CliError(f"refused ({resp.status_code}){' ' + rule if rule else ''}: {msg}")
        raise CliError(f"refused ({resp.status_code}): {data}")
    return data


def cmd_status(args: argparse.Namespace) -> int:
    if args.watch:
        return asyncio.run(_watch(args))
    state = _call(args, "GET", "/api/v1/state")
    if args.json:
        print(json.dumps(state))
        return 0
    belt = state.get("belt") or {}
    stop = state["stop"]
    print(
        f"{state['id']}: {state['mode']} on {state['driver']} ({'connected' if state['connected'] else 'DISCONNECTED'})"
    )
    print(
        f"  belt {belt.get('speed_mph', 0):.2f} mph, target {state.get('target_mph')}, "
        f"envelope {state.get('envelope_mph')}"
    )
    print(
        f"  stop: {'LATCHED ' + str(stop['reason']) + ' (' + str(stop['rule']) + ')' if stop['latched'] else 'clear'}"
    )
    if s := state.get("session"):
        print(
            f"  session {s['id']} {s['plan']}: {s['phase']} set {s['set']}/{s['sets']}, {s['remaining_s']:.0f} s left"
        )
    return 0


async def _watch(args: argparse.Namespace) -> int:
    import httpx
    from rich.console import Console
    from rich.live import Live

    from retrotread.api.termview import keys, render_live

    headers = {"Authorization": f"Bearer {tok}"} if (tok := _token(args)) else {}
    loop = asyncio.get_running_loop()
    quit_ = asyncio.Event()
    pending: set[asyncio.Task[Any]] = set()
    state: dict[str, Any] = {}
    timer: dict[str, Any] | None = None
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=None) as client:

        def on_key(ch: str) -> None:
            if ch in (" ", "s", "S"):
                task = loop.create_task(client.post("/api/v1/estop", json={"reason": "keyboard"}))
                pending.add(task)
                task.add_done_callback(pending.discard)
            elif ch in ("q", "Q"):
                quit_.set()

        async def stream(live: Live) -> None:
            nonlocal state, timer
            async with client.stream("GET", "/api/v1/events") as resp:
                kind = ""
                async for line in resp.aiter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:])
                        if kind == "state":
                            state = data
                            timer = data.get("session")
                        elif kind == "timer":
                            timer = data if data.get("phase") not in ("done", "aborted") else None
                        live.update(render_live(state, timer, "space/s EMERGENCY STOP · q quit"))

        with keys(on_key), Live(console=Console(), refresh_per_second=8) as live:
            task = loop.create_task(stream(live))
            waiter = loop.create_task(quit_.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (task, waiter):
                    t.cancel()
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await task
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
                if pending:
                    await asyncio.wait(pending, timeout=2.0)
            if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                raise CliError(f"lost the daemon at {args.url}: {exc}")
    return 0


def cmd_session(args: argparse.Namespace) -> int:
    if args.action == "start":
        if not args.plan:
            raise CliError("session start needs a PLAN: a preset (deadmill, phase1, ...) or e.g. 3x60s/60s")
        body: dict[str, Any] = {"plan": args.plan}
        if args.speed is not None:
            body["speed_mph"] = args.speed
        out = _call(args, "POST", "/api/v1/session", body)
    else:
        out = _call(args, "POST", f"/api/v1/session/{args.action}")
    print(json.dumps(out))
    return 0


def cmd_estop(args: argparse.Namespace) -> int:
    if args.reset:
        _call(args, "POST", "/api/v1/estop/reset")
        print("emergency stop reset; the belt stays stopped until started")
    else:
        _call(args, "POST", "/api/v1/estop", {"reason": args.reason} if args.reason else None)
        print("EMERGENCY STOP sent")
    return 0


# ------------------------------------------------------------------ decode


def cmd_decode(args: argparse.Namespace) -> int:
    lines: Sequence[str] = sys.stdin.read().splitlines() if args.hex == ["-"] else args.hex
    status = 0
    for line in lines:
        text = line.strip().replace(" ", "").replace(":", "")
        if not text or text.startswith("#"):
            continue
        try:
            data = bytes.fromhex(text)
            out = _decode(args.kind, data)
        except (ValueError, TreadError) as exc:
            print(json.dumps({"error": str(exc), "hex": text}))
            status = 1
            continue
        print(json.dumps(out))
    return status


def _decode(kind: str, data: bytes) -> Any:
    if kind == "csafe":
        from retrotread.drivers.csafe import codec as csafe

        return csafe.describe_frame(data)
    from retrotread.drivers.ftms import codec as ftms

    return ftms.describe(kind, data)


# ------------------------------------------------------------------ devices


def cmd_sim_device(args: argparse.Namespace) -> int:
    from retrotread.sims.serial_serve import run_device

    return run_device(args.kind, Path(args.link), fault=args.fault or "", push=args.push)


def cmd_scan(args: argparse.Namespace) -> int:
    from retrotread.drivers.scan import serial_ports

    ports = serial_ports()
    print("serial ports:" if ports else "serial ports: none found")
    for port in ports:
        print(f"  {port.describe()}")
    try:
        from retrotread.drivers.ftms.scan import scan_ftms

        found = asyncio.run(scan_ftms(args.timeout))
    except TreadError as exc:
        print(f"bluetooth: {exc}")
        return 0
    print("bluetooth FTMS devices:" if found else "bluetooth FTMS devices: none found")
    for dev in found:
        print(f"  {dev.describe()}")
    return 0


# ------------------------------------------------------------------ parser


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="retrotread",
        description="Treadmill controller and deadmill telemetry "
        "for retro-walking. The treadmill's own safety key stays the first stop.",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def daemon_opts(sp: argparse.ArgumentParser, with_config: bool = True) -> None:
        if with_config:
            sp.add_argument("--config", help="TOML file (default /etc/retrotread/retrotread.toml if present)")
        sp.add_argument("--driver", help="driver URL, e.g. sim://motorized, csafe:///dev/ttyUSB0")
        sp.add_argument("--mode", choices=["reverse", "deadmill"])
        sp.add_argument("--http", help="HOST:PORT for the API (default 127.0.0.1:8000)")
        sp.add_argument("--mqtt", help="mqtt://[user:pass@]host[:port] or 'none'")

    sp = sub.add_parser("run", help="the daemon (what systemd runs)")
    daemon_opts(sp)
    sp.set_defaults(func=cmd_run)
    sp = sub.add_parser("demo", help="zero-setup demo on a simulated motorized belt")
    daemon_opts(sp)
    sp.set_defaults(func=cmd_demo)

    def client_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--url", default=os.environ.get("RETROTREAD_URL", DEFAULT_URL), help="daemon URL")
        sp.add_argument("--token-file", help="file holding the API token (or set RETROTREAD_TOKEN)")
        sp.add_argument("--config", help="TOML file, to find the token in its state_dir")

    sp = sub.add_parser("status", help="state of a running daemon")
    client_opts(sp)
    sp.add_argument("--watch", action="store_true", help="live view; space or s = emergency stop, q = quit")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("session", help="drive sessions on a running daemon")
    client_opts(sp)
    sp.add_argument("action", choices=["start", "pause", "resume", "skip", "abort"])
    sp.add_argument("plan", nargs="?", help="with start: a preset name or e.g. 3x60s/60s")
    sp.add_argument("--speed", type=float, help="belt speed for sets in reverse mode, mph")
    sp.set_defaults(func=cmd_session)

    sp = sub.add_parser("estop", help="emergency stop (or --reset) on a running daemon")
    client_opts(sp)
    sp.add_argument("--reset", action="store_true")
    sp.add_argument("--reason")
    sp.set_defaults(func=cmd_estop)

    sp = sub.add_parser("deadmill", help="time a deadmill session in the terminal, no daemon needed")
    sp.add_argument("--config")
    sp.add_argument("--driver", default="sim://manual")
    sp.add_argument("--plan", default="deadmill", help="preset or e.g. 3x60s/60s (default: deadmill)")
    sp.add_argument("--json", action="store_true", help="print the session record as JSON at the end")
    sp.add_argument("--plain", action="store_true", help="plain lines instead of the live view")
    sp.set_defaults(func=cmd_deadmill)

    sp = sub.add_parser("sim-device", help="serve a simulated serial device on a pseudo-terminal")
    sp.add_argument("kind", choices=["csafe", "pulse"])
    sp.add_argument("--link", required=True, help="symlink to create for the device, e.g. /tmp/ttyTREAD")
    sp.add_argument("--fault", help="faults, e.g. runaway@20,unplug@40")
    sp.add_argument("--push", help="pulse board: the walker's push profile, MPH or MPH@S,... (default 1.5)")
    sp.set_defaults(func=cmd_sim_device)

    sp = sub.add_parser("scan", help="serial ports and Bluetooth FTMS treadmills")
    sp.add_argument("--timeout", type=float, default=5.0, help="seconds to listen for Bluetooth adverts")
    sp.set_defaults(func=cmd_scan)

    sp = sub.add_parser("mqtt", help="MQTT housekeeping: forget removes a treadmill from the broker and Home Assistant")
    sp.add_argument("action", choices=["forget"])
    sp.add_argument("--config")
    sp.add_argument("--mqtt", help="broker URL (default: mqtt.url from the config)")
    sp.add_argument("--id", help="treadmill id (default: daemon.id from the config)")
    sp.set_defaults(func=cmd_mqtt)

    sp = sub.add_parser("doctor", help="check config, devices, broker, token; say how to fix each")
    sp.add_argument("--config")
    sp.set_defaults(func=cmd_doctor)

    sp = sub.add_parser("token", help="print the API token (made on first use), or --rotate it")
    sp.add_argument("--config")
    sp.add_argument("--rotate", action="store_true")
    sp.set_defaults(func=cmd_token)

    sp = sub.add_parser("history", help="past sessions from the state directory (JSON, --csv, --weekly)")
    sp.add_argument("--config")
    sp.add_argument("--limit", type=int, default=100)
    fmt = sp.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="one row per set")
    fmt.add_argument("--json", action="store_true", help="with --weekly: JSON instead of CSV")
    sp.add_argument("--weekly", action="store_true", help="sessions per week per plan")
    sp.set_defaults(func=cmd_history)

    sp = sub.add_parser("decode", help="decode frames to JSON, one line per frame")
    sp.add_argument("kind", choices=["ftms-treadmill", "ftms-status", "ftms-control", "ftms-speed-range", "csafe"])
    sp.add_argument("hex", nargs="+", help="hex frames, or - to read hex lines from stdin")
    sp.set_defaults(func=cmd_decode)
    return p


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Each HTTP request logged at INFO would scroll through the terminal views.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        code = 130
    except (CliError, TreadError, PlanError) as exc:
        if args.debug:
            raise
        print(f"retrotread: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)
