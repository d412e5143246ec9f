"""The install: the card's folders go into site-packages as one package, ``retrotread``.

Generic top-level names collide in real virtualenvs (python-daemon installs ``daemon``, the safety
scanner ``safety``), so the wheel must hold nothing else, and every subpackage of the tree must be in
it (pyproject.toml lists them by hand: a folder added and not listed would be missing from the wheel).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("api", "daemon", "drivers", "safety", "sims")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if (ROOT / line).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """A wheel built from a copy of the tracked tree (the build must not touch the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for rel in tracked_files():
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    [built] = (tmp / "dist").glob("retrotread-*.whl")
    return zipfile.ZipFile(built)


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package_retrotread(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert tops == {"retrotread"}
    assert "retrotread/api/static/index.html" in names
    assert "retrotread/safety/py.typed" in names


@pytest.mark.slow
def test_every_subpackage_of_the_tree_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    in_tree = {
        "retrotread/" + str(p.parent.relative_to(ROOT))
        for folder in FOLDERS
        for p in (ROOT / folder).rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    in_wheel = {n.rsplit("/", 1)[0] for n in wheel.namelist() if n.endswith("/__init__.py")}
    assert in_tree - in_wheel == set(), "add these to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.parametrize("name", FOLDERS)
def test_the_bare_folder_names_are_not_importable(tmp_path: Path, name: str) -> None:
    # Run away from the checkout: with the repository as the working directory, Python would find
    # the folders themselves on sys.path.
    out = subprocess.run(
        [sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert out.returncode == 1 and "ModuleNotFoundError" in out.stderr
    ok = subprocess.run(
        [sys.executable, "-c", f"import retrotread.{name}"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
