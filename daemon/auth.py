"""The API token and the state directory that holds it (and the history).

The token is generated on first run into the state directory, mode 0600. Every control call but
the stop needs it (S16). ``retrotread token`` prints it; ``--rotate`` replaces it, and a running
daemon follows at once: ``LiveToken`` stats the file on each check (one ``stat``, no read unless the
file changed) and re-reads it when its inode, size or mtime moved, so the new token works and the
old one is refused from the next request on (issue 12).

The state directory is trusted only if no one else can write to it: a directory others may write
lets them plant a token of their choosing, or swap a file for a link to one of ours. So start-up
refuses such a directory (or token) with a line that says how to fix it, and the token is written
through a fresh file that never follows a link.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from retrotread.drivers.errors import ConfigError

log = logging.getLogger(__name__)

TOKEN_FILE = "token"


class Token(str):
    """A token that knows the file it came from, so whoever checks it can follow a rotation."""

    path: Path

    def __new__(cls, value: str, path: Path) -> Token:
        token = super().__new__(cls, value)
        token.path = path
        return token


def token_path(state_dir: Path) -> Path:
    return state_dir / TOKEN_FILE


def check_state_dir(state_dir: Path, *, token: bool = True) -> None:
    """Make the state directory (0700) if it is missing; refuse one that others could write to, or
    (with ``token``) a token file that is a link, not ours, or writable by others."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.stat(state_dir, follow_symlinks=False)
    except OSError as exc:
        raise ConfigError(
            f"state directory {state_dir}: {exc.strerror}; set daemon.state_dir to a directory this user owns"
        ) from None
    if stat.S_ISLNK(st.st_mode):
        st = os.stat(state_dir)  # a link to a directory is fine if the directory itself is safe
    _refuse_if_unsafe(state_dir, st, "directory")
    if not token:
        return
    path = token_path(state_dir)
    try:
        tst = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"API token {path}: {exc.strerror}") from None
    if not stat.S_ISREG(tst.st_mode):
        raise ConfigError(f"API token {path} is not a plain file (a link?); replace it: retrotread token --rotate")
    _refuse_if_unsafe(path, tst, "file")


def _refuse_if_unsafe(path: Path, st: os.stat_result, what: str) -> None:
    me = os.geteuid()
    if st.st_uid != me:
        raise ConfigError(
            f"state {what} {path} is owned by uid {st.st_uid}, not by this user (uid {me}); "
            f"fix: chown {me} {path}, or set daemon.state_dir to a directory this user owns"
        )
    if st.st_mode & 0o022:
        mode = stat.S_IMODE(st.st_mode)
        raise ConfigError(
            f"state {what} {path} is writable by others (mode {mode:04o}); anyone could plant a token there; "
            f"fix: chmod go-w {path}"
        )


def read_token(state_dir: Path) -> str | None:
    """The token, or None if there is none yet or this user may not read it."""
    return _read(token_path(state_dir))


def _read(path: Path) -> Token | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, encoding="utf-8") as f:
        text = f.read().strip()
    return Token(text, path) if text else None


def _signature(path: Path) -> tuple[int, ...] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class LiveToken:
    """The token a daemon checks, following its file: ``retrotread token --rotate`` takes effect at
    once, with no restart (issue 12).

    Each check stats the file (cheap); only when the inode, size or times changed is it re-read.
    A file that is gone, empty, a link or writable by others is not adopted: the last good token
    stays (never none: that would open every control call; never refusing all: that would lock the
    person out), and a warning says why. A ``str`` token with no file stays fixed.
    """

    def __init__(self, token: str) -> None:
        self._token = str(token)
        self._path: Path | None = token.path if isinstance(token, Token) else None
        self._sig = _signature(self._path) if self._path is not None else None

    def current(self) -> str:
        if self._path is None:
            return self._token
        sig = _signature(self._path)
        if sig is not None and sig != self._sig:
            self._sig = sig
            self._reload(self._path)
        return self._token

    def _reload(self, path: Path) -> None:
        try:
            check_state_dir(path.parent)  # the same trust rule as start-up: no planted token
        except ConfigError as exc:
            log.warning("API token file changed but is not safe to use, keeping the old token: %s", exc)
            return
        new = _read(path)
        if new is None:
            log.warning("API token file %s changed but holds no token; keeping the old one", path)
            return
        if new != self._token:
            log.info("API token file %s changed: the new token is in effect", path)
            self._token = str(new)

    def matches(self, given: bytes | str) -> bool:
        raw = given.encode() if isinstance(given, str) else given
        return hmac.compare_digest(raw, self.current().encode())


def load_or_create_token(state_dir: Path) -> Token:
    path = token_path(state_dir)
    check_state_dir(state_dir)
    try:
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                # Someone loosened it: the token is a password, so take it back to owner-only.
                os.chmod(path, 0o600)  # a plain file: check_state_dir made sure
            token = _read(path)
            if token:
                return token
        return _write(path)
    except OSError as exc:
        raise ConfigError(f"API token {path}: {exc.strerror}; set daemon.state_dir to a writable directory") from None


def rotate_token(state_dir: Path) -> Token:
    path = token_path(state_dir)
    check_state_dir(state_dir, token=False)  # rotating is how a bad token file is replaced
    try:
        return _write(path)
    except OSError as exc:
        raise ConfigError(f"API token {path}: {exc.strerror}") from None


def _write(path: Path) -> Token:
    """Write a new token atomically: a fresh, unpredictable file (O_EXCL, O_NOFOLLOW: a planted file
    or link there is never opened), then renamed over the old one (rename replaces a link, never
    writes through it)."""
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Token(token, path)
