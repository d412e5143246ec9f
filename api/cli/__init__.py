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
from retrotread.api.cli.local import cmd_doctor, cmd_history, cmd_history_export, cmd_history_progress, cmd_token
from retrotread.api.cli.serve import cmd_demo, cmd_mqtt, cmd_run
from retrotread.api.cli.tools import cmd_decode, cmd_scan, cmd_sim_device
from retrotread.api.keys import key_hint
from retrotread.daemon.commands import SESSION_ACTIONS
from retrotread.daemon.export import FORMATS
from retrotread.drivers.errors import TreadError

__all__ = ["CliError", "main"]

CONFIG_HELP = "TOML file (default /etc/retrotread/retrotread.toml if present)"


def cmd_floor(args: argparse.Namespace) -> int:
    from retrotread.api.floor.__main__ import main as floor_main

    return floor_main(["--mqtt", args.mqtt, "--http", args.http, "--prefix", args.prefix])


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
            sp.add_argument("--config", help=CONFIG_HELP)
        sp.add_argument("--driver", help="driver URL, e.g. sim://motorized, csafe:///dev/ttyUSB0")
        sp.add_argument(
            "--mode",
            choices=["reverse", "deadmill"],
            help="reverse: a motorized belt walked backward; deadmill: motor off, the walker pushes (S13)",
        )
        sp.add_argument("--http", help="HOST:PORT for the API (default 127.0.0.1:8000)")
        sp.add_argument("--mqtt", help="mqtt://[user:pass@]host[:port] or 'none'")

    sp = sub.add_parser("run", help="the daemon (what systemd runs)")
    daemon_opts(sp)
    sp.set_defaults(func=cmd_run)
    sp = sub.add_parser("demo", help="zero-setup demo on a simulated motorized belt")
    daemon_opts(sp)
    sp.set_defaults(func=cmd_demo)

    def client_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--url",
            default=os.environ.get("RETROTREAD_URL", DEFAULT_URL),
            help=f"daemon URL (default $RETROTREAD_URL or {DEFAULT_URL})",
        )
        sp.add_argument("--token-file", help="file holding the API token (or set RETROTREAD_TOKEN)")
        sp.add_argument("--config", help="TOML file, to find the token in its state_dir")

    sp = sub.add_parser("status", help="state of a running daemon")
    client_opts(sp)
    sp.add_argument("--watch", action="store_true", help=f"live view; keys: {key_hint('watch')}")
    sp.add_argument("--json", action="store_true", help="the state as one JSON object")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("session", help="drive sessions on a running daemon")
    client_opts(sp)
    sp.add_argument(
        "action", choices=["start", "extend", *SESSION_ACTIONS], help="what to do with the session (start needs a PLAN)"
    )
    sp.add_argument("plan", nargs="?", help="with start: a preset name or e.g. 3x60s/60s; with extend: e.g. 30s")
    sp.add_argument("--speed", type=float, help="belt speed for sets in reverse mode, mph")
    sp.set_defaults(func=cmd_session)

    sp = sub.add_parser("estop", help="emergency stop (or --reset) on a running daemon")
    client_opts(sp)
    sp.add_argument(
        "--reset", action="store_true", help="clear a latched stop (needs the token); the belt stays stopped"
    )
    sp.add_argument("--reason", help="why, for the log and the history (at most 200 characters are kept)")
    sp.set_defaults(func=cmd_estop)

    sp = sub.add_parser(
        "deadmill",
        help=f"time a deadmill session in the terminal, no daemon needed (keys: {key_hint('deadmill')})",
        description="Time a deadmill session in the terminal, no daemon needed. There is no motor (S13), so "
        f"there is nothing to stop: space does nothing here. Keys: {key_hint('deadmill')}.",
    )
    sp.add_argument("--config", help=CONFIG_HELP)
    sp.add_argument(
        "--driver",
        default="none",
        help="the belt sensor: pulse:///dev/ttyACM0, gpio://17, sim://manual (a simulator, only when named); "
        "default none: a plain set timer that measures nothing",
    )
    sp.add_argument("--plan", default="deadmill", help="preset or e.g. 3x60s/60s (default: deadmill)")
    sp.add_argument("--json", action="store_true", help="print the session record as JSON at the end")
    sp.add_argument("--plain", action="store_true", help="plain lines instead of the live view")
    sp.set_defaults(func=cmd_deadmill)

    sp = sub.add_parser("sim-device", help="serve a simulated serial device on a pseudo-terminal")
    sp.add_argument("kind", choices=["csafe", "pulse"], help="csafe: a CSAFE console; pulse: the belt-sensor board")
    sp.add_argument("--link", required=True, help="symlink to create for the device, e.g. /tmp/ttyTREAD")
    sp.add_argument("--fault", help="faults, e.g. runaway@20,unplug@40")
    sp.add_argument("--push", help="pulse board: the walker's push profile, MPH or MPH@S,... (default 1.5)")
    sp.set_defaults(func=cmd_sim_device)

    configure_calibrate(sub.add_parser("calibrate", help="measure m_per_pulse for a pulse:// or gpio:// sensor"))

    sp = sub.add_parser("scan", help="serial ports and Bluetooth FTMS treadmills")
    sp.add_argument("--timeout", type=float, default=5.0, help="seconds to listen for Bluetooth adverts")
    sp.set_defaults(func=cmd_scan)

    sp = sub.add_parser("mqtt", help="MQTT housekeeping: forget removes a treadmill from the broker and Home Assistant")
    sp.add_argument("action", choices=["forget"], help="forget: remove this treadmill's retained topics")
    sp.add_argument("--config", help=CONFIG_HELP)
    sp.add_argument("--mqtt", help="broker URL (default: mqtt.url from the config)")
    sp.add_argument("--id", help="treadmill id (default: daemon.id from the config)")
    sp.set_defaults(func=cmd_mqtt)

    sp = sub.add_parser("doctor", help="check config, devices, broker, token; say how to fix each")
    sp.add_argument("--config", help=CONFIG_HELP)
    sp.set_defaults(func=cmd_doctor)

    sp = sub.add_parser("token", help="print the API token (made on first use), or --rotate it")
    sp.add_argument("--config", help=CONFIG_HELP)
    sp.add_argument(
        "--rotate", action="store_true", help="make a new token; a running daemon takes it at once, the old one stops"
    )
    sp.set_defaults(func=cmd_token)

    sp = sub.add_parser(
        "history",
        help="past sessions from the state directory: a table (--json, --csv), progress, export",
        description="Past sessions, read from the state directory's history.sqlite3 (works while the daemon runs).",
    )
    sp.add_argument("--config", help=CONFIG_HELP)
    sp.add_argument("--limit", type=int, default=100, help="the newest N sessions (default 100)")
    fmt = sp.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per set")
    fmt.add_argument("--json", action="store_true", help="JSON, one session record a line")
    sp.add_argument("--weekly", action="store_true", help="sessions per week per plan")
    sp.set_defaults(func=cmd_history, history_command=None)
    hsub = sp.add_subparsers(dest="history_command", metavar="[progress|export]")
    hp = hsub.add_parser("progress", help="strength, adherence and program position, as on the history page")
    hp.add_argument("--config", help=CONFIG_HELP, default=argparse.SUPPRESS)
    hp.add_argument("--json", action="store_true", help="the GET /api/v1/progress body", default=argparse.SUPPRESS)
    hp.set_defaults(func=cmd_history_progress)
    he = hsub.add_parser("export", help="one session as a FIT, TCX or CSV file")
    he.add_argument("id", type=int, help="session id (the first column of `retrotread history`)")
    he.add_argument("--format", choices=list(FORMATS), default="fit", help="file format (default fit)")
    he.add_argument("-o", "--output", help="file to write (default retrotread-ID.FORMAT; - for stdout)")
    he.add_argument("--config", help=CONFIG_HELP, default=argparse.SUPPRESS)
    he.set_defaults(func=cmd_history_export)

    sp = sub.add_parser("floor", help="the floor view: every treadmill on the broker on one page, for a wall screen")
    sp.add_argument("--mqtt", required=True, help="broker URL (mqtt:// or mqtts://)")
    sp.add_argument("--http", default="127.0.0.1:8090", help="HOST:PORT to serve the page on (default %(default)s)")
    sp.add_argument("--prefix", default="retrotread", help="base topic prefix (default %(default)s)")
    sp.set_defaults(func=cmd_floor)

    sp = sub.add_parser(
        "decode",
        help="decode a frame to JSON (several: one a line on stdin, or --each)",
        description="Decode hex to JSON. The arguments are one frame however they are spaced "
        "(decode csafe f1 a5 a5 f2); with - each line of stdin is a frame, with --each each argument is.",
    )
    sp.add_argument(
        "kind",
        choices=["ftms-treadmill", "ftms-status", "ftms-control", "ftms-speed-range", "csafe"],
        help="what the bytes are",
    )
    sp.add_argument("hex", nargs="+", help="the frame's hex bytes (spaces and colons allowed), or - for stdin lines")
    sp.add_argument("--each", action="store_true", help="each argument is a frame of its own")
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
    except TreadError as exc:  # the one root: every product error says itself in one line
        if args.debug:
            raise
        print(f"retrotread: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)
