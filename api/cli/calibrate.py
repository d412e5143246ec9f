"""``calibrate``: measure ``m_per_pulse`` for a pulse sensor (``pulse://`` or ``gpio://``).

Push the belt a known number of full turns by hand (a chalk mark on the belt shows a turn); the
command counts the sensor's pulses until Enter, takes the belt's length (``--belt-m`` or a
prompt), and prints ``m_per_pulse`` = belt length × turns / pulses with the driver URL and the
config line that use it (docs/firmware.md). No daemon: it opens the driver itself, so stop the
daemon first if it holds the port or the pin.

Run on its own: ``python -m retrotread.api.cli.calibrate --driver pulse:///dev/ttyACM0``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit

from retrotread.api.cli.common import CliError
from retrotread.drivers import BeltSample, ConfigError, TreadError, Update, open_driver
from retrotread.drivers.base import Driver

SCHEMES = ("pulse", "gpio")
MAX_BELT_M = 20.0  # the longest treadmill belt loop is about 7 m; anything past this is a typo


def configure(sp: argparse.ArgumentParser) -> None:
    """The ``calibrate`` subcommand's arguments (api/cli/__init__.py builds the parser)."""
    sp.add_argument("--driver", required=True, help="the sensor: pulse:///dev/ttyACM0 or gpio://17")
    sp.add_argument("--turns", type=int, default=1, help="full turns of the belt you will push (default 1)")
    sp.add_argument("--belt-m", type=float, help="the belt's length in metres (asked for if not given)")
    sp.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    url: str = args.driver
    if urlsplit(url).scheme not in SCHEMES:
        raise CliError(f"calibrate counts pulses: give a pulse:// or gpio:// driver URL, not {url!r}")
    if args.turns < 1:
        raise CliError(f"--turns must be 1 or more, got {args.turns}")
    if args.belt_m is not None:
        _belt_length(str(args.belt_m))  # refuse a bad length before the belt is pushed
    try:
        driver = open_driver(url)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    out = sys.stdout
    pulses = asyncio.run(_count(driver, args.turns, sys.stdin, out))
    if pulses == 0:
        raise CliError(
            "no pulse counted: is the sensor wired to the board and the magnet on the roller? (docs/firmware.md)"
        )
    belt_m = _belt_length(str(args.belt_m)) if args.belt_m is not None else _ask_belt(sys.stdin, out)
    m_per_pulse = float(f"{belt_m * args.turns / pulses:.5g}")
    new_url = with_option(url, "m_per_pulse", f"{m_per_pulse:g}")
    turns = "turn" if args.turns == 1 else "turns"
    print(f"{pulses} pulses in {args.turns} {turns} of a {belt_m:g} m belt: m_per_pulse = {m_per_pulse:g}", file=out)
    print(f"driver URL: {new_url}", file=out)
    print(f'config: [daemon] driver = "{new_url}"', file=out)
    return 0


def _settle(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)


async def _count(driver: Driver, turns: int, stdin: TextIO, out: TextIO) -> int:
    """Pulses from the first sample until Enter (or the end of input)."""
    loop = asyncio.get_running_loop()
    entered: asyncio.Future[str] = loop.create_future()

    def wait_enter() -> None:
        # A daemon thread, not the loop's executor: asyncio.run would wait for a thread still
        # blocked in readline if the driver failed first.
        line = stdin.readline()
        loop.call_soon_threadsafe(_settle, entered, line)

    m_per_pulse: float = getattr(driver, "m_per_pulse")  # noqa: B009  # pulse:// and gpio:// both have it
    try:
        async with driver:
            print(
                f"Push the belt {turns} full {'turn' if turns == 1 else 'turns'} by hand, then press Enter.",
                file=out,
                flush=True,
            )
            threading.Thread(target=wait_enter, name="calibrate stdin", daemon=True).start()
            base: float | None = None
            pulses = 0
            samples = aiter(driver.samples())
            while not entered.done():
                nxt: asyncio.Future[Update] = asyncio.ensure_future(anext(samples))
                waits: set[asyncio.Future[Any]] = {nxt, entered}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    break
                item = nxt.result()
                if not isinstance(item, BeltSample) or item.distance_m is None:
                    continue
                if base is None:
                    base = item.distance_m
                counted = round((item.distance_m - base) / m_per_pulse)
                if counted != pulses:
                    pulses = counted
                    print(f"pulses: {pulses}", file=out, flush=True)
    except StopAsyncIteration:
        raise CliError(f"{driver.url} closed before Enter") from None
    except TreadError as exc:
        raise CliError(f"{driver.url}: {exc}") from None
    if entered.result() == "":
        raise CliError("the input ended before Enter: nothing calibrated")
    return pulses


def _belt_length(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CliError(f"{text.strip()!r} is not a length in metres (e.g. 2.8)") from None
    if not (math.isfinite(value) and 0 < value <= MAX_BELT_M):
        raise CliError(f"a belt length must be above 0 and at most {MAX_BELT_M:g} m, got {text.strip()}")
    return value


def _ask_belt(stdin: TextIO, out: TextIO) -> float:
    """Ask until a length comes (a typo loses nothing: the count is kept); the end of input is an error."""
    while True:
        print("Belt length in metres (the whole loop, e.g. 2.8): ", end="", file=out, flush=True)
        line = stdin.readline()
        if not line:
            raise CliError("the input ended before the belt length: nothing calibrated")
        try:
            return _belt_length(line)
        except CliError as exc:
            print(f"\n{exc}", file=out, flush=True)


def with_option(url: str, key: str, value: str) -> str:
    """``url`` with its ``key`` query option set to ``value`` (the others kept, in order)."""
    parts = urlsplit(url)
    options = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != key]
    options.append((key, value))
    # Not urlunsplit: it drops the empty host of pulse:///dev/ttyACM0 and writes pulse:/dev/ttyACM0.
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(options, safe='/')}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retrotread calibrate", description=__doc__.splitlines()[0])
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"retrotread: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
