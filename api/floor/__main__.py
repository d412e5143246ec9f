"""``python -m retrotread.api.floor --mqtt URL [--http HOST:PORT]``: the floor view on its own."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from retrotread.api.floor.service import serve
from retrotread.drivers.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retrotread floor", description="the floor view: every treadmill on one page")
    parser.add_argument("--mqtt", required=True, help="broker URL (mqtt:// or mqtts://)")
    parser.add_argument("--http", default="127.0.0.1:8090", help="HOST:PORT to serve the page on (default %(default)s)")
    parser.add_argument("--prefix", default="retrotread", help="base topic prefix (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(args.mqtt, args.http, args.prefix))
    except (ConfigError, ValueError) as exc:
        print(f"retrotread floor: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
