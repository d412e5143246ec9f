"""Shared by the bench scripts: percentiles and the machine line every figure carries."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from typing import Any


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank, of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def machine(figure: str) -> dict[str, Any]:
    return {
        "figure": figure,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
    }
