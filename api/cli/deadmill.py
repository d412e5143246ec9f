"""``deadmill``: time a deadmill session in the terminal, no daemon needed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from retrotread.api.cli.common import (
    CliError,
)
from retrotread.api.compose import build_controller, open_history
from retrotread.daemon.commands import AbortCommand, PauseCommand, ResumeCommand, SessionCommand, describe_invalid
from retrotread.daemon.config import Settings, load_settings
from retrotread.daemon.events import EventKind
from retrotread.daemon.hub import Kind
from retrotread.daemon.snapshot import Event

SHOWN_PLAIN = frozenset(
    {EventKind.SET_STARTED, EventKind.SET_COMPLETED, EventKind.SESSION_COMPLETED, EventKind.SESSION_ENDED}
)
"""The events a plain (not a terminal) run prints, one line each."""

WANTED: tuple[Kind, ...] = tuple(k for k in get_args(Kind) if k in ("state", "timer", "event", "cue"))
"""The hub kinds this view reads; ``cue`` once the hub carries cues."""


def cmd_deadmill(args: argparse.Namespace) -> int:
    from retrotread.api.termview import render_summary

    try:
        command = SessionCommand(plan=args.plan)
    except ValidationError as exc:
        raise CliError(describe_invalid(exc.errors())[0]) from None
    plan = command.to_plan()
    settings = load_settings(
        Path(args.config) if args.config else None, daemon={"driver": args.driver, "mode": "deadmill"}
    )
    record = asyncio.run(_deadmill(settings, command, plain=args.plain or not sys.stdout.isatty()))
    sets = [s.model_dump() for s in record.sets] if record else []
    if args.json:
        print(json.dumps(record.model_dump(mode="json") if record else None))
    else:
        from rich.console import Console

        Console().print(render_summary(sets, f"{plan.name}: {record.outcome if record else 'not run'}"))
    return 0 if record and record.outcome == "completed" else 1


async def _deadmill(settings: Settings, command: SessionCommand, *, plain: bool) -> Any:
    from rich.console import Console
    from rich.live import Live

    from retrotread.api.termview import cue_line, key_action, key_hint, keys, render_live

    console = Console(stderr=True)
    async with build_controller(settings) as controller:
        controller.attach_history(open_history(settings))
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        actions: set[asyncio.Task[Any]] = set()

        def act(coro: Coroutine[Any, Any, Any]) -> None:
            task = loop.create_task(coro)
            actions.add(task)
            task.add_done_callback(actions.discard)

        def on_key(ch: str) -> None:
            # termview.KEYMAP["deadmill"]: no motor here (S13), so space is unbound, never "pause".
            paused = controller.session_paused  # None: no session
            action = key_action("deadmill", ch)
            if action == "pause" and paused is not None:
                act(controller.execute(ResumeCommand() if paused else PauseCommand(), "cli"))
            elif action == "end":
                if paused is not None:
                    act(controller.execute(AbortCommand(), "cli"))
                done.set()

        sub = controller.hub.subscribe(WANTED)
        started = await controller.execute(command, "cli")
        if started.session is None:
            raise CliError(f"the session did not start: {started.error}")
        sid = started.session.id

        def show(update: Any) -> None:
            ev = update.payload if update is not None else None
            if update is not None and str(update.kind) == "cue":
                text, bell = cue_line(_as_dict(update.payload))
                console.print(text, markup=False, highlight=False)  # above the live view, a line of its own
                if bell:
                    console.bell()
            if plain and isinstance(ev, Event) and ev.kind in SHOWN_PLAIN:
                console.print(f"{ev.ts} {ev.kind} {ev.set or ''}".rstrip())

        with keys(on_key) as interactive:
            hint = key_hint("deadmill") if interactive else ""
            live = None if plain else Live(console=console, refresh_per_second=8, transient=True)
            with live if live is not None else contextlib.nullcontext():
                while not done.is_set():
                    try:
                        update = await sub.next(within=0.5)
                    except TimeoutError:
                        update = None
                    snap = controller.snapshot().model_dump(mode="json")
                    if live is not None:
                        live.update(render_live(snap, snap.get("session"), hint))
                    show(update)
                    if controller.session_paused is None:
                        done.set()
                # The session's last words (set done, session complete) were published with its end:
                # they are already waiting here, so say them before the summary.
                while sub.pending:
                    show(await sub.next())
        if actions:
            await asyncio.wait(actions, timeout=1.0)
        return controller.history.get(sid)


def _as_dict(payload: Any) -> dict[str, Any]:
    if hasattr(payload, "model_dump"):
        out: dict[str, Any] = payload.model_dump(mode="json")
        return out
    return dict(payload) if isinstance(payload, dict) else {}


# ------------------------------------------------------------------ client commands
