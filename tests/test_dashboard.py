"""The dashboard (GET /): its assets are all local, and it works in a real browser against a real daemon.

Issue 7, acceptance 1: headless Chromium (Debian's, driven over the DevTools protocol by
``browser.py``) opens the page on a running ``retrotread run``; during a ``2x5s/3s`` session
started from the page's own controls the countdown and the set number change on the page; the
stop button latches the stop and the banner says so. The screenshot is kept in
``test-artifacts/dashboard.png``.

Issue 12 (cues.md): on a 390x844 phone the page speaks a cue and plays its tone, holds the screen on,
the timer fills a quarter of the screen, work and rest colour the whole card, STOP stays where it is
when a banner appears, and a key press stops. Screenshots: ``test-artifacts/dashboard-{work,rest,
latched}.png``.
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
IDS = (
    "timer",
    "set",
    "phase",
    "speed",
    "banner",
    "estop",
    "stop-state",
    "reset",
    "start",
    "pause",
    "abort",
    "sound",
    "sound-note",
    "key-hint",
    "history-link",
    "last-session",
)


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


# Spies on the browser APIs the page uses to be heard and to keep the screen on, installed before the
# page's own script runs; each records the call and then makes it for real.
SPIES = """
window.__spy = {speak: [], tones: [], wake: [], locks: [], vibrate: []};
if (window.speechSynthesis) {
  const speak = speechSynthesis.speak.bind(speechSynthesis);
  speechSynthesis.speak = (u) => { __spy.speak.push(u.text); return speak(u); };
}
if (window.OscillatorNode) {
  const start = OscillatorNode.prototype.start;
  OscillatorNode.prototype.start = function (...a) {
    __spy.tones.push({hz: this.frequency.value, state: this.context.state});
    return start.apply(this, a);
  };
}
if (navigator.wakeLock) {
  const request = navigator.wakeLock.request.bind(navigator.wakeLock);
  navigator.wakeLock.request = async (type) => {
    __spy.wake.push(type);
    const lock = await request(type);
    __spy.locks.push(lock);
    return lock;
  };
}
if (navigator.vibrate) {
  const vibrate = navigator.vibrate.bind(navigator);
  navigator.vibrate = (p) => { __spy.vibrate.push(p); return vibrate(p); };
}
"""
RECT = "const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height];"


@contextmanager
def _dashboard(d: Daemon, shot: str, size: tuple[int, int] = (360, 800)) -> Iterator[Page]:
    """The page on a phone-sized screen, the spies installed; on a failure its screenshot is kept as
    ``shot``-failure.png."""
    with chromium() as page:
        page.viewport(*size)
        page.before_load(SPIES)
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
        page.wait_text("#mode", r"^reverse mode · SIMULATED belt$")
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
        # The session is over: the card says so, and the session is a smaller summary apart (issue 12).
        page.wait_text("#phase", r"^no session$", within=5)
        # Until the history has it the summary may say "ended"; then how it ended (stopped by the stop).
        page.wait_text(
            "#last-session", r"^Last session #\d+ · 2x5s/3s (\(simulated\) )?· (stopped|aborted)( ·| at set)", within=5
        )
        assert page.on("#timer-card", "return e.classList.contains('idle');") is True

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
        assert page.text("#mode") == "deadmill mode · SIMULATED belt"  # nothing invented: a simulator says so
        assert page.evaluate("document.getElementById('band').hidden") is True
        assert page.visible("#estop")  # the stop is there in every mode
        # A space typed into a field is text, not a stop; Enter anywhere else is a stop (a pedal).
        page.select("#plan-select", "custom")
        page.type_into("#custom-plan", "")
        page.press(" ")
        assert page.on("#custom-plan", "return e.value;") == " "
        assert d.state()["stop"]["latched"] is False
        page.on("#custom-plan", "e.blur();")
        page.press("Enter")
        page.wait_text("#banner", r"^EMERGENCY STOP LATCHED", within=5)
        assert d.state()["stop"]["latched"] is True
        page.screenshot(ARTIFACTS / "dashboard-deadmill.png")
        assert page.errors == [], page.errors


def _top(page: Page) -> None:
    """Back to the top of the page, as a phone shows it when opened."""
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for("window.scrollY === 0")


@pytest.mark.slow
def test_dashboard_is_heard_and_read_from_two_metres(tmp_path: Path) -> None:
    """Issue 12, points 1 and 6, on a 390x844 phone against a real daemon: the cues are spoken and
    toned once Start has unlocked sound, the screen is held on, the timer takes a quarter of the
    screen, work and rest colour the whole card, STOP never moves, and space is a stop."""
    _skip_without_chromium()
    state_dir = tmp_path / "state"
    args = ("--driver", "sim://motorized?rate_hz=20", "--mode", "reverse")
    env = {"RETROTREAD_DAEMON__STATE_DIR": str(state_dir)}
    with daemon(*args, env=env) as d, _dashboard(d, "dashboard-cues", (390, 844)) as page:
        # Before any gesture the page says sound is off, and a toggle is there to turn it on.
        assert page.text("#sound") == "Sound off"
        assert page.visible("#sound-note")
        assert "Sound is off" in (page.text("#sound-note") or "")
        assert page.text("#key-hint") == "Space or Enter = STOP"
        assert page.on("#history-link", "return e.getAttribute('href');") == "static/history.html"
        assert d.http.get("/static/history.html").status_code == 200
        # At rest: no session on the timer card.
        assert page.text("#phase") == "no session"
        assert page.on("#timer-card", "return e.classList.contains('idle');") is True
        stop_at = page.on("#estop", RECT)

        # The tap on Start is the gesture that unlocks sound.
        page.select("#plan-select", "custom")
        page.type_into("#custom-plan", "2x6s/8s")
        page.click("#start")
        _give_token_if_asked(page, state_dir)
        page.wait_text("#set", r"^set 1 of 2$", within=10)
        assert page.text("#sound") == "Sound on"
        assert page.visible("#sound-note") is False

        # A cue during the session is spoken and starts a tone (from a running AudioContext).
        spoken = page.wait_for("__spy.speak.find((t) => /^Set 1 of 2/.test(t))", within=15)
        assert "Set 1 of 2" in spoken
        tones = page.evaluate("__spy.tones")
        assert tones, "no tone was started for the cues"
        assert any(t["state"] == "running" for t in tones), tones
        assert page.wait_for("__spy.wake.length > 0 && __spy.wake", within=5) == ["screen"]

        # Work: a timer a quarter of the screen high, the card in the work colour.
        page.wait_text("#phase", r"^work$", within=10)
        _top(page)
        viewport = page.evaluate("window.innerHeight")
        assert viewport == 844
        timer_h = page.on("#timer", "return e.getBoundingClientRect().height;")
        assert timer_h >= 0.25 * viewport, (timer_h, viewport)
        # The drawn digits (their box, as transformed) fill it, and all of them fit on the card.
        digits = page.on("#timer > span", RECT)
        assert digits[3] >= 0.25 * viewport, (digits, viewport)
        card = page.on("#timer-card", RECT)
        assert card[0] <= digits[0] and digits[0] + digits[2] <= card[0] + card[2], (digits, card)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        work_colour = page.on("#timer-card", "return getComputedStyle(e).backgroundColor;")
        # The session's events are listed while it runs.
        page.wait_text("#events", r"session started", within=5)
        # The session controls are on the first screen with STOP and the timer.
        pause = page.on("#pause", RECT)
        assert pause[1] + pause[3] <= viewport, pause
        page.screenshot(ARTIFACTS / "dashboard-work.png", whole=False)

        # Scrolled to the bottom, STOP is still where it was.
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        page.wait_for("window.scrollY > 0")
        assert page.on("#estop", RECT) == stop_at

        page.wait_text("#phase", r"^rest$", within=15)
        _top(page)
        rest_colour = page.on("#timer-card", "return getComputedStyle(e).backgroundColor;")
        assert rest_colour != work_colour
        page.wait_for("__spy.speak.some((t) => /^Set 1 done/.test(t))", within=5)
        page.screenshot(ARTIFACTS / "dashboard-rest.png", whole=False)
        # The browser drops the lock when the page is hidden; the page asks again once it is in view
        # (on visibilitychange, or on the next timer update while visible).
        page.wait_for("__spy.locks.length === 1", within=5)
        page.evaluate("__spy.locks[0].release()")
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        page.wait_for("__spy.wake.length === 2 && __spy.locks.length === 2", within=5)

        # Space on the page (a presenter remote, a foot pedal) latches the stop; the banner comes
        # below STOP, which does not move.
        assert page.visible("#banner") is False
        page.press(" ")
        page.wait_text("#banner", r"^EMERGENCY STOP LATCHED", within=5)
        assert d.state()["stop"]["latched"] is True
        _top(page)
        assert page.on("#estop", RECT) == stop_at
        page.wait_for("__spy.speak.some((t) => /^Emergency stop/.test(t))", within=5)
        page.wait_text("#cue-line", r"^Emergency stop\. — \S", within=5)  # the reason, on screen only
        page.screenshot(ARTIFACTS / "dashboard-latched.png", whole=False)
        assert page.errors == [], page.errors
