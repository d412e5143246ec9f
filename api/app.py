"""The HTTP face: FastAPI app with the /api/v1 endpoints of interfaces.md, SSE, health.

It translates between HTTP and controller calls; no rule, unit conversion or timer lives here.
Refusals carry the supervisor's rule id (409), malformed bodies are 422 (naming S1 when the bad
value is a speed), a disconnected driver is 503. The stop never needs a token (S16).
"""

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from retrotread.api.http_guard import HttpGuard, clean_text, http_status, loopback
from retrotread.daemon.auth import LiveToken
from retrotread.daemon.commands import (
    SESSION_ACTIONS,
    EStopCommand,
    ExtendCommand,
    InclineCommand,
    Outcome,
    ResetCommand,
    SessionCommand,
    SpeedCommand,
    StartCommand,
    StopCommand,
    describe_invalid,
)
from retrotread.daemon.controller import Controller
from retrotread.daemon.events import RUNNING_PHASES, Phase
from retrotread.daemon.export import FORMATS, MEDIA_TYPES, ExportError, Format, export
from retrotread.daemon.history import HistoryError
from retrotread.daemon.plans import PRESETS
from retrotread.daemon.progress import Progress, progress
from retrotread.daemon.snapshot import SessionRecord, SessionView, StateSnapshot

log = logging.getLogger(__name__)

ControllerFactory = Callable[[], AbstractAsyncContextManager[Controller]]

# --- bodies ---------------------------------------------------------------------------------

# The bodies are the commands of daemon/commands.py: JSON numbers only (a string such as "fast"
# or "1.0" is a 422 naming S1, never coerced), extra fields refused; NaN and Infinity parse as
# numbers and are refused by the supervisor with S1 (409).


class Accepted(BaseModel):
    ok: bool = True
    detail: str = ""


class Refused(BaseModel):
    error: str
    rule: str | None = None


class PresetView(BaseModel):
    name: str
    sets: int
    work_s: float
    rest_s: float
    countdown_s: float
    cap_s: float | None
    total_s: float
    describe: str


class PlansView(BaseModel):
    presets: list[PresetView]
    phases: list[Phase] = Field(description="every phase a session view can show")
    running: list[Phase] = Field(description="the phases of a session that is still going")
    done: Phase = Field(default=Phase.DONE, description="the phase of a session that ran to its end")


class Health(BaseModel):
    ok: bool
    connected: bool
    latched: bool
    problems: list[str] = Field(default_factory=list, description="what is wrong while ok is false")


# --- the app ---------------------------------------------------------------------------------


def create_app(
    make_controller: ControllerFactory,
    *,
    token: str | LiveToken | None = None,
    public_reads: bool = False,
    on_ready: Callable[[Controller], Awaitable[None]] | None = None,
    allowed_hosts: Iterable[str] = (),
    max_streams: int | None = None,
) -> FastAPI:
    """The app; its lifespan enters the controller, so the driver runs exactly while the app does.

    ``allowed_hosts`` are Host header names accepted besides loopback and the address a client
    connected to (``http.allowed_hosts``); ``max_streams`` caps event streams (default: from
    RLIMIT_NOFILE). A token read from its file (``daemon.auth.Token``) follows that file: after
    ``retrotread token --rotate`` the new one works at once and the old one is refused.
    """
    live_token = token if token is None or isinstance(token, LiveToken) else LiveToken(token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with make_controller() as controller:
            app.state.controller = controller
            if on_ready is not None:
                await on_ready(controller)
            yield

    app = FastAPI(
        title="retrotread",
        version="0.1.0",
        summary="Treadmill controller and deadmill telemetry for retro-walking",
        lifespan=lifespan,
        responses={409: {"model": Refused}, 503: {"model": Refused}},
    )

    bearer = HTTPBearer(auto_error=False)

    # The dependencies are ``async def``: FastAPI runs a plain ``def`` one in its thread pool, a
    # thread hop per dependency per request (issue 16), and the first request of a run waited for
    # that pool to start. Each does no more than a stat of the token file, fine on the loop.

    def check_token(creds: HTTPAuthorizationCredentials | None) -> None:
        if live_token is None:
            return
        if creds is None or not live_token.matches(creds.credentials):
            raise HTTPException(
                401, "control calls need 'Authorization: Bearer TOKEN'", headers={"WWW-Authenticate": "Bearer"}
            )

    async def need_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        check_token(creds)

    async def may_read(
        request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> None:
        # Reads are free on loopback (the person at the treadmill); elsewhere as configured.
        host = request.client.host if request.client else ""
        if live_token is None or public_reads or loopback(host):
            return
        check_token(creds)

    async def ctl(request: Request) -> Controller:
        controller: Controller = request.app.state.controller
        return controller

    Ctl = Annotated[Controller, Depends(ctl)]
    guarded = [Depends(need_token)]
    readable = [Depends(may_read)]

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        msg, rule = describe_invalid(errors)
        content = {"error": clean_text(msg), "rule": rule, "detail": _jsonable(errors)}
        return JSONResponse(status_code=422, content=content)

    @app.exception_handler(RefusedError)
    async def refused(request: Request, exc: RefusedError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": exc.detail, "rule": exc.rule})

    api = APIRouter(prefix="/api/v1")

    @api.get("/state", dependencies=readable, response_model=StateSnapshot)
    async def state(c: Ctl) -> StateSnapshot:
        return c.snapshot()

    @api.get("/events", dependencies=readable, response_class=EventSourceResponse)
    async def events(c: Ctl, request: Request) -> AsyncIterator[ServerSentEvent]:
        """Server-Sent Events: ``state``, ``telemetry``, ``timer`` and ``event``.

        ``HttpGuard`` serves this stream itself (one task per reader, capped); this route
        documents it and serves it only when the app is mounted without the guard.
        """
        # Coalescing: a slow reader gets the latest state and timer, never a growing backlog.
        sub = c.hub.subscribe(maxsize=64, coalesce=True)
        try:
            async for update in sub:
                yield ServerSentEvent(event=update.kind, raw_data=update.json())
        finally:
            c.hub.unsubscribe(sub)  # the client hung up (or the hub closed): no lingering subscription

    @api.post("/belt/start", status_code=202, dependencies=guarded, response_model=Accepted)
    async def belt_start(body: StartCommand, c: Ctl) -> Accepted:
        return _answer(await c.execute(body, "http"))

    @api.post("/belt/speed", status_code=202, dependencies=guarded, response_model=Accepted)
    async def belt_speed(body: SpeedCommand, c: Ctl) -> Accepted:
        return _answer(await c.execute(body, "http"))

    @api.post("/belt/stop", status_code=202, response_model=Accepted)
    async def belt_stop(c: Ctl) -> Accepted:
        """A stop never needs a token (S16). ``HttpGuard`` answers this call itself, before any body."""
        return _answer(await c.execute(StopCommand(), "http"))

    @api.post("/belt/incline", status_code=202, dependencies=guarded, response_model=Accepted)
    async def belt_incline(body: InclineCommand, c: Ctl) -> Accepted:
        return _answer(await c.execute(body, "http"))

    @api.post("/estop", status_code=202, response_model=Accepted)
    async def estop(c: Ctl, body: EStopCommand | None = None) -> Accepted:
        """Latch the emergency stop (S5). Any body at all is accepted: the stop is sent before it is read.

        ``HttpGuard`` answers this call itself; this route documents it (and answers if mounted bare).
        """
        return _answer(await c.execute(body or EStopCommand(), "http"))

    @api.post("/estop/reset", status_code=200, dependencies=guarded, response_model=Accepted)
    async def estop_reset(c: Ctl) -> Accepted:
        return _answer(await c.execute(ResetCommand(), "http"))

    @api.post("/session", status_code=201, dependencies=guarded, response_model=SessionView)
    async def session_start(body: SessionCommand, c: Ctl) -> SessionView | None:
        return _checked(await c.execute(body, "http")).session

    @api.post("/session/extend", status_code=200, dependencies=guarded, response_model=SessionView | None)
    async def session_extend(body: ExtendCommand, c: Ctl) -> SessionView | None:
        return _checked(await c.execute(body, "http")).session

    @api.post("/session/{action}", status_code=200, dependencies=guarded, response_model=SessionView | None)
    async def session_action(action: str, c: Ctl) -> SessionView | None:
        command = SESSION_ACTIONS.get(action)
        if command is None:
            raise HTTPException(404, f"unknown session action {action!r}; use {', '.join(SESSION_ACTIONS)}")
        return _checked(await c.execute(command(), "http")).session

    @api.get("/plans", response_model=PlansView)
    async def plans() -> PlansView:
        """The session presets (program.md) and the phase names: the dashboard's list."""
        presets = [
            PresetView(
                name=p.name,
                sets=p.sets,
                work_s=p.work_s,
                rest_s=p.rest_s,
                countdown_s=p.countdown_s,
                cap_s=p.cap_s,
                total_s=p.total_s,
                describe=p.describe(),
            )
            for p in PRESETS.values()
        ]
        return PlansView(presets=presets, phases=list(Phase), running=list(RUNNING_PHASES))

    @api.get("/history", dependencies=readable, response_model=list[SessionRecord])
    async def history(c: Ctl, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> list[SessionRecord]:
        try:
            return c.history.recent(limit)
        except HistoryError as exc:
            raise RefusedError(503, f"history unavailable: {exc}", None) from None

    @api.get("/history/{session_id}", dependencies=readable, response_model=SessionRecord)
    async def history_one(session_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)], c: Ctl) -> SessionRecord:
        try:
            rec = c.history.get(session_id)
        except HistoryError as exc:
            raise RefusedError(503, f"history unavailable: {exc}", None) from None
        if rec is None:
            raise HTTPException(404, f"no session {session_id}")
        return rec

    @api.get("/progress", dependencies=readable, response_model=Progress)
    async def progress_view(c: Ctl) -> Progress:
        """The history page's picture: strength, adherence and where the program stands, over the
        newest 1000 sessions and today's date (daemon/progress.py)."""
        try:
            records = c.history.recent(1000)
        except HistoryError as exc:
            raise RefusedError(503, f"history unavailable: {exc}", None) from None
        return progress(records, date.today())

    @api.get(
        "/history/{session_id}/export",
        dependencies=readable,
        response_class=Response,
        responses={
            200: {"content": {media: {} for media in MEDIA_TYPES.values()}, "description": "the file"},
            404: {"model": Refused},
            422: {"model": Refused},
        },
    )
    async def history_export(
        session_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)],
        c: Ctl,
        format: Annotated[Format, Query(description=f"one of {', '.join(FORMATS)}")] = "fit",
    ) -> Response:
        """One session as a FIT, TCX or CSV file, from its record and 1 Hz trace."""
        try:
            rec = c.history.get(session_id)
            if rec is None:
                raise RefusedError(404, f"no session {session_id}", None)
            trace = c.history.get_trace(session_id)
            # Building a FIT file of a long session takes a while: off the loop that carries the stop.
            body = await asyncio.to_thread(export, rec, trace, format)
        except HistoryError as exc:
            raise RefusedError(503, f"history unavailable: {exc}", None) from None
        except ExportError as exc:
            raise RefusedError(422, str(exc), None) from None
        name = f"retrotread-{session_id}.{format}"
        return Response(
            body, media_type=MEDIA_TYPES[format], headers={"content-disposition": f'attachment; filename="{name}"'}
        )

    app.include_router(api)

    static = Path(__file__).resolve().with_name("static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        """The dashboard: one page, no build step; it lives on /api/v1/events."""
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz(c: Ctl) -> JSONResponse:
        """200 while the daemon is whole; 503 naming each problem (a failing history, say) while not."""
        snap = c.snapshot()
        problems = list(c.problems)
        health = Health(ok=not problems, connected=snap.connected, latched=snap.stop.latched, problems=problems)
        return JSONResponse(health.model_dump(), status_code=200 if health.ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(c: Ctl) -> PlainTextResponse:
        """Prometheus text format."""
        content_type, render = await asyncio.to_thread(_metrics)
        return PlainTextResponse(render(c), media_type=content_type)

    # Outermost of our own: a stop is taken before any body is read, every body is bounded.
    app.add_middleware(
        HttpGuard,
        controller=lambda: app.state.controller,
        token=live_token,
        public_reads=public_reads,
        allowed_hosts=tuple(allowed_hosts),
        max_streams=max_streams,
    )
    return app


def _metrics() -> tuple[str, Callable[[Controller], bytes]]:
    """prometheus-client and our collector, imported at the first scrape rather than at start: a
    daemon nobody scrapes never pays their 1.3 MB and ~40 ms (issue 16). Called in a thread, so
    that first import never holds up the loop that carries the stop."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from retrotread.api.metrics import render

    return CONTENT_TYPE_LATEST, render


def _checked(outcome: Outcome) -> Outcome:
    """The outcome if the command was carried out; else its refusal, as 409, 422 or 503."""
    if not outcome.ok:
        raise RefusedError(http_status(outcome), outcome.error or "refused", outcome.rule)
    return outcome


def _answer(outcome: Outcome) -> Accepted:
    _checked(outcome)
    return Accepted()


class RefusedError(HTTPException):
    def __init__(self, status: int, error: str, rule: str | None) -> None:
        super().__init__(status, error)
        self.rule = rule


def _jsonable(errors: Any) -> Any:
    """Validation errors with NaN/inf inputs made JSON-safe."""
    if isinstance(errors, dict):
        return {k: _jsonable(v) for k, v in errors.items() if k != "ctx"}
    if isinstance(errors, list | tuple):
        return [_jsonable(v) for v in errors]
    if isinstance(errors, float) and not math.isfinite(errors):
        return str(errors)
    if isinstance(errors, bytes):
        return errors.decode("utf-8", "replace")
    if isinstance(errors, str):
        return clean_text(errors)  # a lone surrogate cannot be encoded as UTF-8
    return errors
