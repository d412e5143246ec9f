"""``run``, ``demo`` and ``mqtt forget``: the commands that start or tend a daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from retrotread.api.cli.common import (
    DEMO_DRIVER,
    CliError,
    demo_token,
    redact,
    settings_from,
)
from retrotread.api.compose import serve
from retrotread.daemon.config import Settings, load_settings


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if not settings.daemon.driver:
        # A daemon that silently ran a simulator would put made-up numbers in a real user's history.
        print(
            "retrotread: no driver configured: pass --driver URL (e.g. csafe:///dev/ttyUSB0, none) or set "
            "daemon.driver in the config (RETROTREAD_DAEMON__DRIVER); `retrotread demo` runs a simulator",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(
        serve(
            settings,
            banner=f"retrotread: {settings.daemon.driver} in {settings.daemon.mode} mode, "
            f"http://{settings.http.listen}/, mqtt {redact(settings.mqtt.url) or 'off (--mqtt URL to publish)'}",
        )
    )


def cmd_demo(args: argparse.Namespace) -> int:
    settings = settings_from(args, driver=DEMO_DRIVER)
    url = f"http://{settings.http.listen}"
    banner = "\n".join(
        [
            f"retrotread demo: a simulated motorized treadmill in {settings.daemon.mode} mode",
            f"  state:      curl {url}/api/v1/state",
            f"  live:       curl -N {url}/api/v1/events",
            f"  start belt: curl -X POST {url}/api/v1/belt/start -H 'content-type: application/json' "
            f"-H 'Authorization: Bearer {demo_token(settings)}' -d '{{\"speed_mph\": 1.0}}'",
            f"  session:    retrotread session start 3x20s/10s --url {url}",
            f"  watch:      retrotread status --watch --url {url}   (space = emergency stop)",
            f"  stop:       retrotread estop --url {url}",
            f"  dashboard:  {url}/",
            f"  API docs:   {url}/docs",
        ]
    )
    return asyncio.run(_demo(settings, banner))


async def _demo(settings: Settings, banner: str) -> int:
    from retrotread.api.broker import demo_broker, subscribe_hint

    async with demo_broker(settings.mqtt.url or None) as choice:
        lines = [banner, f"  {choice.note}"]
        if choice.url:
            lines.append(f"  mqtt:       {subscribe_hint(choice.url, settings.daemon.id)}")
        lines.append("Ctrl-C stops the belt and exits.")
        return await serve(settings, banner="\n".join(lines), mqtt_url=choice.url or "none")


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
