"""Helpers the tests share (fixtures live in conftest.py; import these by name, never conftest)."""

from __future__ import annotations

from pathlib import Path


def fill_disk(disk: Path) -> Path:
    """Fill a tmpfs to the last page; the returned file frees it all again."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    return filler
