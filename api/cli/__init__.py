"""``retrotread``: the command line.

Exit codes: 0 ok, 1 refused or failed, 2 usage. Errors are one line on stderr; ``--debug`` shows
tracebacks. The daemon itself is built by ``api.compose``; each command lives in the module of its
job (``serve``, ``client``, ``local``, ``deadmill``, ``tools``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from retrotread.api.cli.calibrate import configure as configure_calibrate
from retrotread.api.cli.client import cmd_estop, cmd_session, cmd_status
from retrotread.api.cli.common import DEFAULT_URL, CliError
from retrotread.api.cli.deadmill import cmd_deadmill
from retrotread.api.cli.local import cmd_doctor, cmd_history, cmd_token
from retrotread.api.cli.serve import cmd_demo, cmd_mqtt, cmd_run
from retrotread.api.cli.tools import cmd_decode, cmd_scan, cmd_sim_device
from retrotread.daemon.commands import SESSION_ACTIONS
from retrotread.daemon.plans import PlanError
from retrotread.drivers.errors import TreadError

__all__ = ["CliError", "main"]


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
    sp.add_argument("action", choices=["start", "extend", *SESSION_ACTIONS])
    sp.add_argument("plan", nargs="?", help="with start: a preset name or e.g. 3x60s/60s; with extend: e.g. 30s")
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

    configure_calibrate(sub.add_parser("calibrate", help="measure m_per_pulse for a pulse:// or gpio:// sensor"))

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
