"""The codecs' shape (issue 11.8): wire format apart from presentation, no generated code.

- the FTMS and CSAFE codecs build no code at run time (no ``exec``/``eval``/``compile``);
- each codec's ``__all__`` lists only names another module of the tree imports from it, and no
  presentation (``describe*``, ``*_json``): those live in ``drivers/*/describe.py``;
- the moved presentation names are gone from the codecs (no compatibility ``__getattr__``), and the
  codec and describe modules import in whichever order a fresh interpreter takes them;
- the Treadmill Data decoder agrees with a plain reference decoder, written here from the ftms.md
  table, over arbitrary flags and payloads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import TREADMILL_DATA_TABLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrotread.drivers.csafe import codec as csafe_codec
from retrotread.drivers.csafe import describe as csafe_describe
from retrotread.drivers.ftms import codec as ftms_codec
from retrotread.drivers.ftms import describe as ftms_describe
from retrotread.drivers.ftms.codec import FtmsDecodeError, TreadmillData, decode_treadmill_data

ROOT = Path(__file__).resolve().parent.parent
TREE = ("api", "bench", "daemon", "drivers", "safety", "sims", "tests")
CODECS = {
    "retrotread.drivers.ftms.codec": (ftms_codec, ftms_describe, ROOT / "drivers" / "ftms" / "codec.py"),
    "retrotread.drivers.csafe.codec": (csafe_codec, csafe_describe, ROOT / "drivers" / "csafe" / "codec.py"),
}


def _sources() -> list[Path]:
    return [p for top in TREE for p in sorted((ROOT / top).rglob("*.py"))]


def _imported_names(module_name: str) -> dict[str, set[str]]:
    """Name -> files: what the tree takes from ``module_name`` (``from M import x`` and ``M.x``)."""
    package, _, leaf = module_name.rpartition(".")
    own = CODECS[module_name][2]
    found: dict[str, set[str]] = {}
    for path in _sources():
        if path == own:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == module_name:
                for alias in node.names:
                    found.setdefault(alias.name, set()).add(str(path.relative_to(ROOT)))
            elif isinstance(node, ast.ImportFrom) and node.module == package:
                aliases.update(a.asname or a.name for a in node.names if a.name == leaf)
            elif isinstance(node, ast.Import):
                aliases.update(a.asname or a.name for a in node.names if a.name == module_name and a.asname)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                found.setdefault(node.attr, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("path", [v[2] for v in CODECS.values()], ids=list(CODECS))
def test_codecs_generate_no_code(path: Path) -> None:
    calls = [
        f"{path.name}:{node.lineno} {node.func.id}()"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("exec", "eval", "compile")
    ]
    assert calls == []


@pytest.mark.parametrize("module_name", list(CODECS))
def test_all_lists_only_what_other_modules_import(module_name: str) -> None:
    codec, describe, _ = CODECS[module_name]
    exported = set(codec.__all__)
    used = _imported_names(module_name)
    assert sorted(exported - set(used)) == []
    assert sorted(exported & set(describe.__all__)) == []
    assert sorted(n for n in exported if n.startswith("describe") or n.endswith("_json")) == []


@pytest.mark.parametrize("module_name", list(CODECS))
def test_every_name_the_tree_imports_from_a_codec_exists(module_name: str) -> None:
    codec, _, _ = CODECS[module_name]
    missing = {name: sorted(files) for name, files in _imported_names(module_name).items() if not hasattr(codec, name)}
    assert missing == {}


@pytest.mark.parametrize("module_name", list(CODECS))
def test_presentation_names_live_only_in_describe(module_name: str) -> None:
    # The codec is wire format only: a caller that still reaches describe names through it fails here,
    # at its import, and not in the field.
    codec, describe, _ = CODECS[module_name]
    moved: list[str] = describe.__all__
    assert moved
    assert sorted(name for name in moved if hasattr(codec, name)) == []


@pytest.mark.parametrize(
    "statement",
    [
        "import retrotread.drivers.ftms.describe",
        "from retrotread.drivers.ftms.codec import TreadmillData; from retrotread.drivers.ftms.describe import to_json",
        "from retrotread.drivers.ftms.describe import describe; from retrotread.drivers.ftms.codec import ResultCode",
        "import retrotread.drivers.csafe.describe",
        "from retrotread.drivers.csafe.codec import Unit; from retrotread.drivers.csafe.describe import describe_frame",
        "from retrotread.drivers.csafe.describe import describe_frame; from retrotread.drivers.csafe.codec import Unit",
    ],
)
def test_import_order_does_not_matter(statement: str) -> None:
    # A fresh interpreter: in this one the modules are imported already.
    done = subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_describe_modules_are_the_ones_the_cli_would_call() -> None:
    assert ftms_describe.describe("ftms-status", bytes.fromhex("0202"))["stop"] is False
    assert csafe_describe.describe_frame(bytes.fromhex("f1a5a5f2"))["direction"] == "request"


# --- the Treadmill Data decoder against a plain reference -----------------------------------------

# TREADMILL_DATA_TABLE (helpers): ftms.md's table written out again; the reference reads it.
TABLE = TREADMILL_DATA_TABLE
WIDTH = {"u8": 1, "u16": 2, "s16": 2, "u24": 3}


def _present(flags: int, bit: int) -> bool:
    return not flags & 1 if bit == 0 else bool(flags >> bit & 1)


def _size(flags: int, pace_width: int) -> int:
    return 2 + sum(
        pace_width if kind == "pace" else WIDTH[kind]
        for bit, group in TABLE.items()
        if _present(flags, bit)
        for _, kind, _, _ in group
    )


def _reference(data: bytes) -> TreadmillData | None:
    """The record ftms.md describes, or None where the packet is too short for its flags."""
    if len(data) < 2:
        return None
    flags = int.from_bytes(data[:2], "little")
    has_pace = _present(flags, 5) or _present(flags, 6)
    pace_width = 2 if has_pace and len(data) == _size(flags, 2) else 1
    if len(data) < _size(flags, pace_width):
        return None
    pos, values = 2, dict[str, Any]()
    for bit, group in TABLE.items():
        for name, kind, scale, not_available in group:
            if not _present(flags, bit):
                values[name] = None
                continue
            width = pace_width if kind == "pace" else WIDTH[kind]
            raw = int.from_bytes(data[pos : pos + width], "little", signed=kind == "s16")
            pos += width
            values[name] = None if raw == not_available else raw if scale == 1 else raw / scale
    return TreadmillData(flags=flags, pace_bytes=pace_width, trailing=data[pos:], **values)


@st.composite
def treadmill_packets(draw: st.DrawFn) -> bytes:
    flags = draw(st.integers(0, 0xFFFF))
    size = _size(flags, draw(st.sampled_from([1, 2])))
    length = draw(st.integers(max(2, size - 2), size + 4))
    return flags.to_bytes(2, "little") + draw(st.binary(min_size=length - 2, max_size=length - 2))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(treadmill_packets(), st.binary(max_size=48)))
def test_treadmill_decoder_agrees_with_the_reference(packet: bytes) -> None:
    expected = _reference(packet)
    if expected is None:
        with pytest.raises(FtmsDecodeError):
            decode_treadmill_data(packet)
        return
    for form in (packet, bytearray(packet), memoryview(packet)):
        assert decode_treadmill_data(form) == expected
