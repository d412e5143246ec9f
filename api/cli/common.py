"""Shared pieces of the command line: its errors, default URLs, settings and token lookup."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from retrotread.daemon.auth import load_or_create_token, read_token
from retrotread.daemon.config import Settings, load_settings
from retrotread.drivers.errors import TreadError

DEFAULT_URL = "http://127.0.0.1:8000"
DEMO_DRIVER = "sim://motorized?noise_mph=0.01"


class CliError(TreadError):
    """A failure to report as one line, exit 1."""


class DaemonUnreachable(CliError):
    """No daemon answered at the URL."""


def redact(url: str) -> str:
    """A broker URL without its password, for printing."""
    if not url or url.strip().lower() == "none":
        return ""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def settings_from(args: argparse.Namespace, **defaults: Any) -> Settings:
    daemon: dict[str, Any] = {"driver": args.driver or defaults.get("driver"), "mode": args.mode}
    return load_settings(
        Path(args.config) if getattr(args, "config", None) else None,
        daemon=daemon,
        http={"listen": args.http or defaults.get("http")},
        mqtt={"url": getattr(args, "mqtt", None)},
    )


def demo_token(settings: Settings) -> str:
    return load_or_create_token(settings.daemon.state_dir) if settings.http.auth else "(auth off)"


def token_for(args: argparse.Namespace) -> str | None:
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
