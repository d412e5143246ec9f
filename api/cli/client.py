"""``status``, ``session`` and ``estop``: commands that talk to a running daemon over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

from pydantic import ValidationError

from retrotread.api.cli.common import (
    CliError,
    DaemonUnreachable,
    token_for,
)
from retrotread.daemon.commands import Command, ExtendCommand, SessionCommand, describe_invalid
from retrotread.daemon.events import RUNNING_PHASES
from retrotread.daemon.plans import PlanError, parse_duration


def _client(args: argparse.Namespace) -> Any:
    import httpx

    headers = {}
    if tok := token_for(args):
        headers["Authorization"] = f"Bearer {tok}"
    return httpx.Client(base_url=args.url, headers=headers, timeout=5.0)


def _unreachable(url: str, exc: Exception) -> str:
    return (
        f"cannot reach the daemon at {url} ({exc or type(exc).__name__}); start one with `retrotread run` "
        "(or `retrotread demo` to try it on a simulated belt), or point --url / RETROTREAD_URL at it"
    )


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    import httpx

    try:
        with _client(args) as client:
            resp = client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise DaemonUnreachable(_unreachable(args.url, exc)) from None
    try:
        data = resp.json()
    except ValueError:
        data = resp.text
    if resp.status_code >= 400:
        if isinstance(data, dict):
            msg = data.get("error") or data.get("detail") or data
            rule = data.get("rule")
            raise CliError(f"refused ({resp.status_code}){' ' + rule if rule else ''}: {msg}")
        raise CliError(f"refused ({resp.status_code}): {data}")
    return data


def _shown(value: Any, fmt: str = "", unit: str = "") -> str:
    """A value as a person reads it: a dash for none (never Python's ``None``)."""
    if value is None or value == "":
        return "–"
    if isinstance(value, int | float) and not isinstance(value, bool) and fmt:
        return f"{value:{fmt}}{unit}"
    return f"{value}{unit}"


def status_lines(state: dict[str, Any]) -> list[str]:
    """``retrotread status``: the state in a few lines, nothing printed as Python."""
    belt = state.get("belt") or {}
    stop = state.get("stop") or {}
    env = state.get("envelope_mph")
    envelope = f"{env[0]:g}–{env[1]:g} mph" if isinstance(env, list | tuple) and len(env) == 2 else "–"
    connected = "connected" if state.get("connected") else "DISCONNECTED"
    lines = [
        f"{_shown(state.get('id'))}: {_shown(state.get('mode'))} on {_shown(state.get('driver'))} ({connected})",
        f"  belt {_shown(belt.get('speed_mph'), '.2f', ' mph')}, "
        f"target {_shown(state.get('target_mph'), '.2f', ' mph')}, envelope {envelope}",
    ]
    if stop.get("latched"):
        lines.append(f"  stop: LATCHED {_shown(stop.get('reason'))} ({_shown(stop.get('rule'))})")
    else:
        lines.append("  stop: clear")
    if s := state.get("session"):
        lines.append(
            f"  session {_shown(s.get('id'))} {_shown(s.get('plan'))}: {_shown(s.get('phase'))} "
            f"set {_shown(s.get('set'))}/{_shown(s.get('sets'))}, {_shown(s.get('remaining_s'), '.0f', ' s')} left"
        )
    else:
        lines.append("  session: none")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    if args.watch:
        return asyncio.run(_watch(args))
    state = _call(args, "GET", "/api/v1/state")
    if args.json:
        print(json.dumps(state))
        return 0
    print("\n".join(status_lines(state)))
    return 0


async def _watch(args: argparse.Namespace) -> int:
    import httpx
    from rich.console import Console
    from rich.live import Live

    from retrotread.api.termview import cue_line, key_action, key_hint, keys, render_live

    headers = {"Authorization": f"Bearer {tok}"} if (tok := token_for(args)) else {}
    loop = asyncio.get_running_loop()
    quit_ = asyncio.Event()
    pending: set[asyncio.Task[Any]] = set()
    state: dict[str, Any] = {}
    timer: dict[str, Any] | None = None
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=None) as client:
        try:  # before the screen is taken: no daemon is one clear line, not "lost the daemon"
            first = await client.get("/api/v1/state", timeout=5.0)
        except httpx.HTTPError as exc:
            raise DaemonUnreachable(_unreachable(args.url, exc)) from None
        if first.status_code != 200:
            raise CliError(f"refused ({first.status_code}): {first.text[:200]}")
        state = first.json()
        timer = state.get("session")

        def on_key(ch: str) -> None:
            action = key_action("watch", ch)  # termview.KEYMAP: space/s is the stop (S5)
            if action == "estop":
                task = loop.create_task(client.post("/api/v1/estop", json={"reason": "keyboard"}))
                pending.add(task)
                task.add_done_callback(pending.discard)
            elif action == "quit":
                quit_.set()

        async def stream(live: Live) -> None:
            nonlocal state, timer
            async with client.stream("GET", "/api/v1/events") as resp:
                if resp.status_code != 200:
                    raise CliError(f"the event stream was refused ({resp.status_code})")
                kind = ""
                async for line in resp.aiter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:])
                        if kind == "state":
                            state = data
                            timer = data.get("session")
                        elif kind == "timer":
                            timer = data if data.get("phase") in RUNNING_PHASES else None
                        elif kind == "cue" and isinstance(data, dict):
                            text, bell = cue_line(data)
                            live.console.print(text, markup=False, highlight=False)  # its own line, above the view
                            if bell:
                                live.console.bell()
                        live.update(render_live(state, timer, key_hint("watch")))

        with keys(on_key), Live(console=Console(), refresh_per_second=8) as live:
            task = loop.create_task(stream(live))
            waiter = loop.create_task(quit_.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (task, waiter):
                    t.cancel()
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await task
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
                if pending:
                    await asyncio.wait(pending, timeout=2.0)
            if task.done() and not task.cancelled() and (lost := task.exception()) is not None:
                raise CliError(f"lost the daemon at {args.url} ({lost or type(lost).__name__}); is it still running?")
    return 0


def cmd_session(args: argparse.Namespace) -> int:
    if args.action == "start":
        if not args.plan:
            raise CliError("session start needs a PLAN: a preset (deadmill, phase1, ...) or e.g. 3x60s/60s")
        out = _call(args, "POST", "/api/v1/session", _parsed(SessionCommand, plan=args.plan, speed_mph=args.speed))
    elif args.action == "extend":
        out = _call(args, "POST", "/api/v1/session/extend", _parsed(ExtendCommand, seconds=_duration(args.plan)))
    else:
        out = _call(args, "POST", f"/api/v1/session/{args.action}")
    print(json.dumps(out))
    return 0


def _parsed(model: type[Command], **fields: Any) -> dict[str, Any]:
    """The body of ``model`` from the arguments, checked here as the daemon will check it: a bad
    argument never leaves the terminal."""
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None}).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise CliError(describe_invalid(exc.errors())[0]) from None


def _duration(text: str | None) -> float:
    if not text:
        raise CliError("session extend needs a duration, e.g. 30s or 1m")
    try:
        return parse_duration(text)
    except PlanError as exc:
        raise CliError(str(exc)) from None


def cmd_estop(args: argparse.Namespace) -> int:
    if args.reset:
        _call(args, "POST", "/api/v1/estop/reset")
        print("emergency stop reset; the belt stays stopped until started")
    else:
        # Any reason is sent as typed (the daemon latches the stop before it reads the body, S5);
        # argument bytes that are not UTF-8 arrive as lone surrogates, which JSON cannot carry.
        # The daemon keeps 200 characters of a reason; a body it would have to discard is not sent.
        raw = args.reason[:1000] if args.reason else ""
        reason = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        try:
            _call(args, "POST", "/api/v1/estop", {"reason": reason} if reason else None)
        except DaemonUnreachable as exc:
            raise CliError(
                f"EMERGENCY STOP NOT SENT: the belt was NOT stopped by retrotread. {exc}. "
                "Use the treadmill's own stop button or pull its safety key."
            ) from None
        print("EMERGENCY STOP sent")
    return 0


# ------------------------------------------------------------------ decode
