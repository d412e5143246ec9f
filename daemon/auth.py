"""The API token: generated on first run into the state directory, mode 0600.

Every control call but the stop needs it (S16). ``retrotread token`` prints it; ``--rotate``
replaces it (a running daemon keeps the old one until restarted).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from retrotread.drivers.errors import ConfigError

TOKEN_FILE = "token"


def token_path(state_dir: Path) -> Path:
    return state_dir / TOKEN_FILE


def read_token(state_dir: Path) -> str | None:
    """The token, or None if there is none yet or this user may not read it."""
    try:
        return token_path(state_dir).read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return None


def load_or_create_token(state_dir: Path) -> str:
    path = token_path(state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                # Someone loosened it: the token is a password, so take it back to owner-only.
                path.chmod(0o600)
            token = path.read_text(encoding="utf-8").strip()
            if token:
                return token
        return _write(path)
    except OSError as exc:
        raise ConfigError(f"API token {path}: {exc.strerror}; set daemon.state_dir to a writable directory") from None


def rotate_token(state_dir: Path) -> str:
    path = token_path(state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return _write(path)
    except OSError as exc:
        raise ConfigError(f"API token {path}: {exc.strerror}") from None


def _write(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return token
