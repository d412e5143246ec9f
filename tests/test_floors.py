"""The floors of architecture.md, read from the source: imports only go down.

``drivers`` imports nothing of ours; ``safety`` only ``drivers``; ``sims`` only ``drivers``;
``daemon`` never ``api``; ``api`` never ``safety``; nothing imports a bare ``api``/``daemon``/...
name (other projects own those: python-daemon, the ``safety`` scanner). Every import counts,
including those inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("api", "daemon", "drivers", "safety", "sims")
ALLOWED: dict[str, frozenset[str]] = {
    "drivers": frozenset({"drivers"}),
    "safety": frozenset({"safety", "drivers"}),
    "sims": frozenset({"sims", "drivers"}),
    "daemon": frozenset({"daemon", "drivers", "safety", "sims"}),
    "api": frozenset({"api", "daemon", "drivers", "sims"}),
}
"""What each floor may import (itself included). ``api`` reaches ``sims`` only to serve a
simulated device on the command line (``retrotread sim-device``)."""


def _modules() -> list[Path]:
    return sorted(p for floor in FLOORS for p in (ROOT / floor).rglob("*.py"))


def _imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, "." * node.level + (node.module or "")
            elif node.module is not None:
                yield node.lineno, node.module


def violations(floor: str, source: str, where: str) -> list[str]:
    """Every import of ``source`` (a module of ``floor``) that breaks a floor."""
    found = []
    for line, name in _imports(ast.parse(source)):
        head, _, rest = name.partition(".")
        if name.startswith("."):
            found.append(f"{where}:{line}: relative import {name!r}; import retrotread.{floor}...")
        elif head in FLOORS:
            found.append(f"{where}:{line}: bare {name!r}; that name is another project's: import retrotread.{name}")
        elif head == "retrotread" and rest:
            target = rest.partition(".")[0]
            if target in FLOORS and target not in ALLOWED[floor]:
                found.append(f"{where}:{line}: {floor} imports {name} (a floor may only import below it)")
    return found


@pytest.mark.parametrize("floor", FLOORS)
def test_every_module_imports_only_down(floor: str) -> None:
    problems = []
    modules = [p for p in _modules() if p.relative_to(ROOT).parts[0] == floor]
    assert modules, f"no modules under {floor}/"
    for path in modules:
        problems += violations(floor, path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("floor", "source", "broken"),
    [
        ("drivers", "from retrotread.safety.rules import Rule", True),
        ("safety", "from retrotread.drivers.units import Speed", False),
        ("safety", "import retrotread.daemon.plans", True),
        ("sims", "from retrotread.safety.supervisor import Mode", True),
        ("daemon", "def f():\n    from retrotread.api.app import create_app", True),
        ("api", "from retrotread.safety.supervisor import Decision", True),
        ("api", "from retrotread.daemon.commands import Outcome", False),
        ("api", "import daemon.config", True),
        ("daemon", "from . import plans", True),
        ("api", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from retrotread.safety import rules", True),
    ],
)
def test_the_checker_sees_what_breaks_a_floor(floor: str, source: str, broken: bool) -> None:
    """The rule itself: a test that can never fail checks nothing."""
    assert bool(violations(floor, source, "x.py")) is broken


NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make"})


def _own_privates(tree: ast.AST) -> set[str]:
    """Private names a module defines itself (its classes' methods and attributes)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return {n for n in names if n.startswith("_")}


def private_reads(source: str, where: str) -> list[str]:
    """``x._y`` where ``_y`` is not the module's own (nor namedtuple's API), and imports of
    private names from our packages."""
    tree = ast.parse(source)
    own = _own_privates(tree) | NAMEDTUPLE_API
    problems = [
        f"{where}:{node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and node.attr not in own
    ]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("retrotread."):
            problems += [
                f"{where}:{node.lineno}: imports private {a.name} from {node.module}"
                for a in node.names
                if a.name.startswith("_")
            ]
    return problems


def test_faces_never_touch_private_state() -> None:
    """No face reads another module's private state (the CLI read the controller's ``_Session``)."""
    problems = []
    for path in sorted((ROOT / "api").rglob("*.py")):
        where = str(path.relative_to(ROOT))
        allowed = LIBRARY_PRIVATES.get(where, frozenset())
        problems += [
            p for p in private_reads(path.read_text(encoding="utf-8"), where) if p.split(".")[-1] not in allowed
        ]
    assert not problems, "\n".join(problems)


# A library's internals a face subclasses on purpose, named here so each one is a decision: the MQTT
# bridge's aiomqtt.Client subclass writes QoS 0 telemetry in the sample's loop iteration through
# aiomqtt's own loop and disconnect future (issue 16; it falls back to aiomqtt's path if they move).
LIBRARY_PRIVATES: dict[str, frozenset[str]] = {"api/mqtt/bridge.py": frozenset({"_loop", "_disconnected"})}


@pytest.mark.parametrize(
    ("source", "private"),
    [
        ("s = controller._session", True),
        ("from retrotread.daemon.controller import _Session", True),
        ("class A:\n    def _drop(self): ...\n    def f(self, o): o._drop()", False),
        ("u = parts._replace(netloc='x')", False),
    ],
)
def test_the_private_check_sees_a_private_read(source: str, private: bool) -> None:
    assert bool(private_reads(source, "x.py")) is private
