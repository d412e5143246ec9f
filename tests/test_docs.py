"""The documentation: README.md and docs/ hold together and name what the code has.

Every relative link resolves to a file in the repository (and its anchor to a heading there); no
link leaves the repository (the design input in ../shared is not part of the product); every rule
id, preset and HTTP route the code has is named where a reader will look for it.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from starlette.routing import Mount, Route

from retrotread.api.app import create_app
from retrotread.daemon.plans import PRESETS
from retrotread.safety.rules import Rule

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# [text](target) and ![alt](target); reference-style definitions ``[id]: target``.
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _prose(text: str) -> str:
    """The text without code blocks and code spans: a URL in an example is not a link."""
    return _CODE.sub("", _FENCE.sub("", text))


def links(path: Path) -> list[str]:
    prose = _prose(path.read_text(encoding="utf-8"))
    return [m.group(1) for m in _INLINE.finditer(prose)] + [m.group(1) for m in _REFDEF.finditer(prose)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading).strip().lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for m in _HEADING.finditer(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in links(path):
        if not target:
            problems.append("an empty link")
            continue
        if _SCHEME.match(target) or target.startswith(("/", "\\")):
            problems.append(f"{target}: points outside the repository (only relative links to its files)")
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.is_relative_to(root):
            problems.append(f"{target}: leaves the repository")
        elif not dest.is_file():
            problems.append(f"{target}: no such file {dest.relative_to(root)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {dest.relative_to(root)}")
    return problems


def test_docs_folder_has_the_pages_readers_look_for() -> None:
    wanted = [
        "README.md",
        "safety.md",
        "program.md",
        "http.md",
        "mqtt.md",
        "configuration.md",
        "install.md",
        "architecture.md",
        "protocols/csafe.md",
        "protocols/ftms.md",
        "protocols/pulse.md",
    ]
    missing = [w for w in wanted if not (DOCS / w).is_file()]
    assert not missing, f"docs/ lacks {missing}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(path: Path) -> None:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    assert broken_links(path) == []


def test_readme_links_to_the_docs() -> None:
    targets = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md") if t}
    assert (DOCS / "README.md").resolve() in targets
    assert (DOCS / "safety.md").resolve() in targets


def test_link_checker_catches_what_it_must(tmp_path: Path) -> None:
    # The checker itself, in a repository of its own: one link of each bad kind, good ones beside.
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Top\n", encoding="utf-8")
    (tmp_path / "docs" / "safety.md").write_text("# Safety\n", encoding="utf-8")
    page = tmp_path / "docs" / "probe.md"
    page.write_text(
        "# Probe\n\n## A heading, with `code`\n\n"
        "[ok](safety.md) [ok](#a-heading-with-code) [ok](../README.md) [ok](safety.md#safety)\n"
        "[shared](../../shared/docs/safety.md) [gone](nowhere.md) [web](https://example.com)\n"
        "[abs](/etc/passwd) [anchor](safety.md#no-such-heading)\n"
        "`[in code](nowhere.md)`\n\n```\n[in a block](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(page, tmp_path)
    assert len(problems) == 5, problems
    assert any("leaves the repository" in p for p in problems)
    assert any("nowhere.md: no such file" in p for p in problems)
    assert sum("outside the repository" in p for p in problems) == 2
    assert any("#no-such-heading" in p for p in problems)


def test_safety_page_names_every_rule_and_the_hardware_stop() -> None:
    text = (DOCS / "safety.md").read_text(encoding="utf-8")
    missing = [r.value for r in Rule if not re.search(rf"\b{r.value}\b", text)]
    assert not missing, f"docs/safety.md does not name {missing}"
    assert "safety key" in text.lower() and "first stop" in text.lower()


def test_program_page_names_every_preset() -> None:
    text = (DOCS / "program.md").read_text(encoding="utf-8")
    missing = [name for name in PRESETS if f"`{name}`" not in text]
    assert not missing, f"docs/program.md does not name the presets {missing}"


def _routes() -> set[str]:
    # The real app; its lifespan (which would open a driver) is never entered. Routes come from
    # its OpenAPI schema (every /api/v1 route) and its own route table (those left out of the
    # schema: the dashboard, /static, the docs pages).
    def no_controller() -> object:
        raise AssertionError("the lifespan must not run here")

    app = create_app(no_controller)  # type: ignore[arg-type]
    paths = set(app.openapi()["paths"])
    for route in app.routes:
        if isinstance(route, Route | Mount) and route.path:
            paths.add(route.path)
    return paths


def test_http_page_names_every_route_of_the_app() -> None:
    routes = _routes()
    assert "/api/v1/estop" in routes  # the app was really read
    text = (DOCS / "http.md").read_text(encoding="utf-8")
    # Named as code: `/healthz`, `GET /healthz` or `/api/v1/history?limit=N`.
    missing = sorted(p for p in routes if not re.search(rf"`(?:[A-Z]+ )?{re.escape(p)}(?:\?[^`]*)?`", text))
    assert not missing, f"docs/http.md does not name the routes {missing}"
