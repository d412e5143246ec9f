"""The dashboard (GET /): its assets are all local, and it works in a real browser against a real daemon.

Issue 7, acceptance 1: headless Chromium (Debian's, driven over the DevTools protocol by
``browser.py``) opens the page on a running ``retrotread run``; during a ``2x5s/3s`` session
started from the page's own controls the countdown and the set number change on the page; the
stop button latches the stop and the banner says so. The screenshot is kept in
``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from browser import Page, chromium, chromium_path
from daemon_proc import Daemon, daemon

from retrotread.api.app import create_app
from retrotread.daemon.auth import read_token
from retrotread.daemon.controller import Controller
from retrotread.drivers import open_driver
from retrotread.safety import Mode, SafetyConfig

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "api" / "static"
ARTIFACTS = ROOT / "test-artifacts"
SAFETY_LINE = "The treadmill's own safety key is the first stop. This page is an extra layer."
IDS = ("timer", "set", "phase", "speed", "banner", "estop", "stop-state", "reset", "start", "pause", "abort")


class _Refs(HTMLParser):
    """Every src= and href= of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


async def test_dashboard_is_served_with_local_assets_only() -> None:
    """The daemon runs on a small board with no internet: no CDN, no other host, no build step."""
    app = create_app(lambda: Controller(open_driver("sim://motorized"), safety=SafetyConfig(mode=Mode.REVERSE)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        for element_id in IDS:
            assert f'id="{element_id}"' in html, element_id
        assert SAFETY_LINE in html.replace("&#39;", "'")

        parser = _Refs()
        parser.feed(html)
        assert parser.refs, "the page loads its script and style"
        for ref in parser.refs:
            parts = urlsplit(ref)
            if parts.scheme == "data":
                continue  # inline, e.g. the empty favicon that spares a 404
            assert not parts.scheme and not parts.netloc, f"{ref}: the page may load only its own assets"
            asset = await client.get("/" + ref.lstrip("/"))
            assert asset.status_code == 200, ref

    # Every file served from /static, vendored ones too (the history page's uPlot); a licence is
    # text nobody loads, and a library's /*! banner */ names its home without loading it.
    for path in sorted(p for p in STATIC.rglob("*") if p.is_file() and p.name != "LICENSE"):
        text = re.sub(r"/\*!.*?\*/", "", path.read_text(encoding="utf-8"), flags=re.S)
        remote = re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}", text)
        assert not remote, f"{path.name} refers to other hosts: {remote}"
        assert "@import" not in text and "url(" not in text, f"{path.name} loads something more"


def _skip_without_chromium() -> None:
    if chromium_path() is None:
        pytest.skip("Debian's chromium is not installed (scripts/test installs it: apt-get install chromium)")


@contextmanager
def _dashboard(d: Daemon, shot: str) -> Iterator[Page]:
    """The page on a phone-sized screen; on a failure its screenshot is kept as ``shot``-failure.png."""
    with chromium() as page:
        page.viewport(360, 800)
        page.goto(d.url + "/")
        page.wait_text("#link", r"^live$")
        try:
            yield page
        except BaseException:
            page.screenshot(ARTIFACTS / f"{shot}-failure.png")
            raise


def _give_token_if_asked(page: Page, state_dir: Path) -> None:
    """Auth is on by default: the first control call answers 401 and the page asks for the token."""
    asked = page.wait_for(
        "!document.getElementById('token-box').hidden && 'asked'"
        " || !document.getElementById('message').hidden && document.getElementById('message').textContent"
    )
    if asked != "asked":
        return
    assert "401" in (page.text("#message") or "")
    token = read_token(state_dir)
    assert token is not None, "the page asked for a token the daemon did not make"
    page.type_into("#token", token)
    page.click("#token-save")  # saves it and retries the call that was refused
    assert page.evaluate("localStorage.getItem('retrotread.token')") == token
    page.wait_for("document.getElementById('token-box').hidden")


@pytest.mark.slow
def test_dashboard_follows_a_session_and_latches_the_stop(tmp_path: Path) -> None:
    """Acceptance 1 of issue 7, in headless Chromium against a real daemon process."""
    _skip_without_chromium()
    state_dir = tmp_path / "state"
    args = ("--driver", "sim://motorized?rate_hz=20", "--mode", "reverse")
    with daemon(*args, env={"RETROTREAD_DAEMON__STATE_DIR": str(state_dir)}) as d, _dashboard(d, "dashboard") as page:
        page.wait_text("#mode", r"^reverse mode$")
        page.wait_text("#envelope", r"^envelope 0\.8–1\.2 mph$")
        assert page.text("#stop-state") == "stop: not latched"
        assert page.visible("#banner") is False
        assert page.text("#safety-note") == SAFETY_LINE

        # A plan the daemon cannot parse: after the token, its 422 is shown, not dropped.
        page.select("#plan-select", "custom")
        page.type_into("#custom-plan", "2x")
        page.click("#start")
        _give_token_if_asked(page, state_dir)
        page.wait_text("#message", r"refused — 422: .*'2x'", within=5)

        # The session, from the page's own controls: two 5 s sets with 3 s rest, after a 5 s countdown.
        page.type_into("#custom-plan", "2x5s/3s")
        page.click("#start")
        page.wait_text("#set", r"^set 1 of 2$", within=10)
        first = page.wait_text("#timer", r"^\d+:\d\d$")
        assert page.text("#phase") in ("countdown", "work")
        page.wait_for(f"document.getElementById('timer').textContent !== {json.dumps(first)}", within=5)

        # Pause holds the countdown; resume lets it run again.
        page.click("#pause")
        page.wait_text("#phase", r"· paused$", within=5)
        assert page.text("#pause") == "Resume"
        assert d.state()["session"]["paused"] is True
        page.click("#pause")
        page.wait_text("#pause", r"^Pause$", within=5)
        assert not (page.text("#phase") or "").endswith("paused")

        page.wait_text("#phase", r"^work$", within=15)
        assert page.text("#set") == "set 1 of 2"
        page.wait_text("#phase", r"^rest$", within=15)
        page.wait_text("#set", r"^set 2 of 2$", within=10)
        page.wait_text("#phase", r"^work$", within=10)
        page.wait_for("parseFloat(document.getElementById('speed').textContent) >= 0.8", within=10)
        assert float(page.text("#speed") or "nan") <= 1.2

        # The stop button latches the stop; the banner says so, and so does the API. The stop
        # is taken before its body is read (issue 10), so the latch says "estop"; the page's
        # reason follows as an estop_reason event.
        page.click("#estop")
        banner = page.wait_text("#banner", r"^EMERGENCY STOP LATCHED — estop \(S5\)", within=5)
        assert page.visible("#banner")
        assert (page.text("#stop-state") or "").startswith("stop: LATCHED — estop")
        stop = d.state()["stop"]
        assert stop["latched"] is True
        assert stop["reason"] == "estop"
        assert f"({stop['rule']})" in banner
        page.wait_text("#phase", r"^aborted$", within=5)

        # A refusal is shown, not dropped: a reset within 2 s of motion is refused with S6.
        page.click("#reset")
        page.wait_text("#message", r"Reset stop refused — 409 \(S6\)", within=5)

        # Readable at 360 px: nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(ARTIFACTS / "dashboard.png")
        assert page.errors == [], page.errors


@pytest.mark.slow
def test_dashboard_in_deadmill_mode_only_measures(tmp_path: Path) -> None:
    _skip_without_chromium()
    args = ("--driver", "sim://manual?rate_hz=20", "--mode", "deadmill")
    with daemon(*args, env={"RETROTREAD_DAEMON__STATE_DIR": str(tmp_path)}) as d, _dashboard(d, "deadmill") as page:
        page.wait_text("#envelope", r"^deadmill: measuring only$")
        assert page.text("#mode") == "deadmill mode"
        assert page.evaluate("document.getElementById('band').hidden") is True
        assert page.visible("#estop")  # the stop is there in every mode
        page.screenshot(ARTIFACTS / "dashboard-deadmill.png")
        assert page.errors == [], page.errors
