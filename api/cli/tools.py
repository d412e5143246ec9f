"""``decode``, ``sim-device`` and ``scan``: protocol and device tools."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrotread.drivers.errors import TreadError


def cmd_decode(args: argparse.Namespace) -> int:
    # The arguments are ONE frame however they are spaced (``f1 a5 a5 f2``, issue 12); several
    # frames come one a line on stdin (``-``) or one an argument with ``--each``.
    lines: Sequence[str]
    if args.hex == ["-"]:
        lines = sys.stdin.read().splitlines()
    elif args.each:
        lines = args.hex
    else:
        lines = ["".join(args.hex)]
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
    # Presentation lives beside the codec, not inside it (issue 11.8).
    if kind == "csafe":
        from retrotread.drivers.csafe.describe import describe_frame

        return describe_frame(data)
    from retrotread.drivers.ftms.describe import describe

    return describe(kind, data)


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
