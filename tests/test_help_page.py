"""The daemon's own help page (``/static/help.html``): where Home Assistant's "Visit support" leads.

There is no public project address, and none may be invented (issue 13 point 5), so discovery's
``origin.support_url`` is this page beside the dashboard. A person landing here from Home
Assistant learns what the device is, how to stop the belt (the treadmill's own stop always works),
the control policy and how to enable full control, how to read the log and run ``doctor``, and where
the docs are. Checked in headless Chromium on a real daemon: it loads under the daemon's CSP with
no console errors, and every link on it resolves.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from browser import chromium, chromium_path
from daemon_proc import daemon

from retrotread.api.app import create_app
from retrotread.api.discovery import HELP_PATH, device_config, help_url
from retrotread.daemon.controller import Controller
from retrotread.drivers import open_driver
from retrotread.safety import Mode, SafetyConfig

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "api" / "static" / "help.html"
ARTIFACTS = ROOT / "test-artifacts"
SAFETY_LINE = "The treadmill's own safety key is the first stop. This page is an extra layer."


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def _refs(html: str) -> list[str]:
    parser = _Refs()
    parser.feed(html)
    return parser.refs


async def test_the_help_page_is_served_beside_the_dashboard_with_local_assets_only() -> None:
    """Served from the app's own static files under its CSP; it refers to no other host, and
    discovery's support_url for a dashboard is exactly this path."""
    app = create_app(lambda: Controller(open_driver("sim://motorized"), safety=SafetyConfig(mode=Mode.REVERSE)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
        page = await client.get(HELP_PATH)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for ref in _refs(page.text):
            parts = urlsplit(ref)
            if parts.scheme == "data":
                continue
            assert not parts.scheme and not parts.netloc, f"{ref}: the page may load only the daemon's own"
            assert (await client.get(urljoin(f"http://localhost{HELP_PATH}", ref))).status_code == 200, ref
    dashboard = "http://gym-3.lan:8000/"
    config = device_config(
        Controller(open_driver("sim://motorized"), treadmill_id="gym-3").snapshot(),
        base_topic="retrotread/gym-3",
        configuration_url=dashboard,
    )
    assert config["o"]["support_url"] == help_url(dashboard) == "http://gym-3.lan:8000" + HELP_PATH


def test_the_help_page_says_what_a_person_from_home_assistant_needs() -> None:
    text = " ".join(PAGE.read_text(encoding="utf-8").replace("&#39;", "'").split())
    for needed in (
        "The treadmill's own stop button and safety key always work",
        "retrotread estop",
        'mqtt.control = "stop"',
        'control = "full"',
        "RETROTREAD_MQTT__CONTROL=full",
        "journalctl -u retrotread",
        "retrotread doctor",
        "docs/home-assistant.md",
        SAFETY_LINE,
    ):
        assert needed in text, needed
    assert "http://" not in text and "https://" not in text, "no address is invented"


@pytest.mark.slow
def test_the_help_page_in_chromium_on_a_real_daemon() -> None:
    """Headless Chromium on ``retrotread run``: the page loads with no console or CSP errors, shows
    the stop section, and its dashboard and history links open pages of the daemon."""
    if chromium_path() is None:
        pytest.skip("Debian's chromium is not installed (scripts/test installs it: apt-get install chromium)")
    with daemon("--driver", "sim://motorized?rate_hz=20", "--mode", "reverse") as d, chromium() as page:
        page.viewport(390, 844)
        page.goto(d.url + HELP_PATH)
        try:
            assert page.evaluate("document.title") == "retrotread · help"
            assert page.visible("#own-stop")
            assert "always work" in (page.text("#own-stop") or "")
            assert page.text("#safety-note") == SAFETY_LINE
            # The same look as the dashboard: its stylesheet applied (not the browser's white page).
            sheets = page.evaluate("[...document.styleSheets].map(s => s.href)")
            assert sheets == [d.url + "/static/style.css"]
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)"), background
            links = page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.href)")
            assert {d.url + "/", d.url + "/static/history.html"} <= set(links)
            for link in links:
                assert httpx.get(link, timeout=10).status_code == 200, link
            page.screenshot(ARTIFACTS / "help.png")
            page.goto(d.url + "/")  # the dashboard link: the page a person goes to next
            page.wait_for("document.getElementById('estop') !== null")
            assert page.errors == [], page.errors
        except BaseException:
            page.screenshot(ARTIFACTS / "help-failure.png")
            raise
