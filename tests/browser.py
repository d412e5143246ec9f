"""Drive Debian's headless Chromium over the DevTools protocol, for the dashboard test.

No downloaded browser and no browser-automation framework: ``/usr/bin/chromium`` is started with
``--remote-debugging-port=0``, the port is read from its "DevTools listening on ws://..." line, and
CDP commands go over one websocket (``websockets``' sync client) with a flattened page session.
Every wait is a condition polled against a deadline. JavaScript exceptions and console errors on
the page are collected, so a test can assert there were none.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.connection import Connection

CHROMIUM = "/usr/bin/chromium"
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class BrowserError(RuntimeError):
    """Chromium did not start, a CDP command failed, or a page script threw."""


def chromium_path() -> str | None:
    """Debian's chromium, or None when it is not installed."""
    return CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")


class Page:
    """One tab, reached through a flattened CDP session on the browser's websocket."""

    def __init__(self, ws: Connection, session_id: str, timeout: float) -> None:
        self._ws = ws
        self._session = session_id
        self._ids = itertools.count(1)
        self.timeout = timeout
        self.errors: list[str] = []
        """JavaScript exceptions, console errors and non-network log errors seen on the page."""

    # -- the protocol ---------------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}, "sessionId": self._session}))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer within {self.timeout} s")
            try:
                raw = self._ws.recv(timeout=left)
            except TimeoutError:
                continue
            msg = json.loads(raw)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            if "method" in msg:
                self._on_event(msg["method"], msg.get("params", {}))

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exc = details.get("exception", {})
            self.errors.append(f"exception: {exc.get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.errors.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            # Network entries are answers the page handles itself (a 401 that asks for the token).
            if entry.get("level") == "error" and entry.get("source") != "network":
                self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())

    # -- what a test does -----------------------------------------------------------------------

    def viewport(self, width: int, height: int, *, mobile: bool = True, scale: float = 2.0) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile},
        )

    def before_load(self, source: str) -> None:
        """Run ``source`` in every document this page loads, before the page's own scripts (a spy on
        the page's APIs: ``Page.addScriptToEvaluateOnNewDocument``)."""
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": source})

    def press(self, key: str) -> None:
        """A real key press (down and up) as a keyboard, a presenter remote or a foot pedal sends it:
        ``" "`` (space) or ``"Enter"``."""
        named = {" ": ("Space", 32, " "), "Enter": ("Enter", 13, "\r")}
        code, vk, text = named[key]
        down: dict[str, Any] = {"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": vk, "text": text}
        self.send("Input.dispatchKeyEvent", down)
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": vk})

    def goto(self, url: str) -> None:
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise BrowserError(f"navigate to {url}: {answer['errorText']}")
        self.wait_for("document.readyState === 'complete'", within=self.timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise)."""
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise BrowserError(f"{expression!r} threw: {details.get('exception', {}).get('description', details)}")
        return answer.get("result", {}).get("value")

    def on(self, selector: str, body: str, *args: Any) -> Any:
        """Run the JavaScript function ``body`` with ``e`` bound to the first element matching ``selector``
        (or null) and ``args`` to ``a0``, ``a1``, ...; its return value."""
        params = ", ".join(["e", *(f"a{i}" for i in range(len(args)))])
        values = ", ".join([f"document.querySelector({json.dumps(selector)})", *(json.dumps(v) for v in args)])
        return self.evaluate(f"(({params}) => {{ {body} }})({values})")

    def text(self, selector: str) -> str | None:
        """The text of the first element matching ``selector`` (as in the DOM, before CSS upper-cases it),
        trimmed; None if there is no such element."""
        value = self.on(selector, "return e ? e.textContent.trim() : null;")
        return None if value is None else str(value)

    def visible(self, selector: str) -> bool:
        return bool(self.on(selector, "return !!e && e.getClientRects().length > 0;"))

    def wait_for(self, expression: str, within: float = 10.0) -> Any:
        """Poll a JavaScript expression until it is truthy; its value, or AssertionError at the deadline."""
        deadline = time.monotonic() + within
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression} not true within {within} s (last value {value!r})")
            time.sleep(0.05)

    def wait_text(self, selector: str, pattern: str, within: float = 10.0) -> str:
        """Wait until the text of ``selector`` matches the regular expression ``pattern``."""
        deadline = time.monotonic() + within
        while True:
            text = self.text(selector)
            if text is not None and re.search(pattern, text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{selector} text {text!r} does not match {pattern!r} within {within} s")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real mouse click at the element's centre, after checking nothing covers it there."""
        box = self.on(
            selector,
            """if (!e) return null;
            e.scrollIntoView({block: "center"});
            const r = e.getBoundingClientRect();
            const x = r.left + r.width / 2, y = r.top + r.height / 2;
            const hit = document.elementFromPoint(x, y);
            return {x, y, w: r.width, h: r.height, disabled: !!e.disabled,
                    hit: !!hit && (hit === e || e.contains(hit)), over: hit ? hit.outerHTML.slice(0, 80) : null};""",
        )
        if box is None:
            raise BrowserError(f"click {selector}: no such element")
        if box["w"] == 0 or box["h"] == 0:
            raise BrowserError(f"click {selector}: element is not visible")
        if box["disabled"]:
            raise BrowserError(f"click {selector}: button is disabled")
        if not box["hit"]:
            raise BrowserError(f"click {selector}: covered by {box['over']}")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            params: dict[str, Any] = {"type": kind, "x": box["x"], "y": box["y"]}
            if kind != "mouseMoved":
                params |= {"button": "left", "buttons": 1 if kind == "mousePressed" else 0, "clickCount": 1}
            self.send("Input.dispatchMouseEvent", params)

    def type_into(self, selector: str, text: str) -> None:
        """Focus a field, clear it, and type ``text`` as keyboard input would."""
        self.on(selector, "e.focus(); e.select();")
        self.send("Input.insertText", {"text": text})

    def select(self, selector: str, value: str) -> None:
        """Choose an option of a <select>, firing ``change`` as a user's choice does."""
        self.on(selector, 'e.value = a0; e.dispatchEvent(new Event("change", {bubbles: true}));', value)

    def screenshot(self, path: Path, *, whole: bool = True) -> None:
        """A PNG of the whole page, or with ``whole=False`` of what the screen shows now (what a user
        on a phone sees: a pinned element where it is pinned)."""
        if whole:
            metrics = self.send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params: dict[str, Any] = {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            }
        else:
            params = {"format": "png"}
        shot = self.send("Page.captureScreenshot", params)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@contextmanager
def chromium(*, timeout: float = 20.0) -> Iterator[Page]:
    """Headless Chromium with a fresh profile and one blank page; closed (and reaped) on exit."""
    exe = chromium_path()
    if exe is None:
        raise BrowserError("chromium is not installed (Debian: apt-get install chromium)")
    with (
        tempfile.TemporaryDirectory(prefix="retrotread-chromium-", ignore_cleanup_errors=True) as profile,
        tempfile.TemporaryFile("w+") as errors,
    ):
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",  # root in a container has no user namespaces for the sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--mute-audio",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        # stderr goes to a file (a pipe nobody drains could fill and stall the browser).
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
        closing = False
        try:
            ws_url = _devtools_url(proc, errors, timeout)
            with connect(ws_url, max_size=None, open_timeout=timeout) as ws:
                page = _open_page(ws, timeout)
                try:
                    yield page
                finally:
                    with contextlib.suppress(ConnectionClosed):
                        ws.send(json.dumps({"id": 0, "method": "Browser.close"}))
                        closing = True
        finally:
            if not closing:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _devtools_url(proc: subprocess.Popen[bytes], errors: IO[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        errors.seek(0)
        log = errors.read()
        if m := _LISTENING.search(log):
            return m.group(1)
        if proc.poll() is not None:
            raise BrowserError(f"chromium exited with {proc.returncode}: {log[-2000:]}")
        if time.monotonic() > deadline:
            raise BrowserError(f"chromium printed no DevTools address within {timeout} s: {log[-2000:]}")
        time.sleep(0.05)


def _open_page(ws: Connection, timeout: float) -> Page:
    """Create a tab and attach to it with a flattened session, so one websocket carries both."""
    ids = itertools.count(-1, -1)  # negative ids: never clash with a Page's own counter

    def browser_call(method: str, params: dict[str, Any]) -> dict[str, Any]:
        msg_id = next(ids)
        ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer within {timeout} s")
            try:
                msg = json.loads(ws.recv(timeout=left))
            except TimeoutError:
                continue
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg["result"]
                return result

    target = browser_call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser_call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    page = Page(ws, session, timeout)
    for domain in ("Page", "Runtime", "Log"):
        page.send(f"{domain}.enable")
    return page
