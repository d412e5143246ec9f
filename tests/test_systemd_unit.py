"""systemd/: the unit verifies cleanly and keeps its hardening score."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[1] / "systemd" / "retrotread.service"
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


@needs_systemd
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_unit_verifies_with_no_output(tmp_path: Path) -> None:
    """`systemd-analyze verify` checks ExecStart exists: give it /opt/retrotread in a private mount
    namespace (a bind mount over /opt that nothing else sees), as the install steps lay it out."""
    (tmp_path / "retrotread" / "bin").mkdir(parents=True)
    (tmp_path / "retrotread" / "bin" / "retrotread").symlink_to(Path(sys.executable).with_name("retrotread"))
    out = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind {tmp_path} /opt && systemd-analyze verify {UNIT}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if "unshare failed" in out.stderr or "Operation not permitted" in out.stderr:
        pytest.skip(f"no mount namespaces here: {out.stderr.strip()}")
    assert out.returncode == 0
    assert out.stdout + out.stderr == ""


@needs_systemd
def test_unit_hardening_score_stays_low() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for retrotread.service: ([0-9.]+)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= 2.0  # README says 1.7; a change that raises it must say why


def test_example_config_loads() -> None:
    from retrotread.daemon.config import load_settings

    settings = load_settings(UNIT.with_name("retrotread.toml"))
    assert settings.daemon.id == "gym-3" and settings.safety.envelope_max_mph == 1.2
