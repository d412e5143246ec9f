"""The floor view's process: one MQTT client reading the treadmills, one small HTTP server.

It reads only the broker (``<prefix>/+/status|state|timer|event``), never a daemon's HTTP API,
and the only thing it publishes is an emergency stop, ``<prefix>/<id>/cmd/estop`` with reason
``floor`` (S5: a stop is never refused and needs no token, S16). It holds no rule: the daemon
that receives the stop latches it.

HTTP: ``GET /`` the page; ``GET /api/tiles?after=N`` the tiles sorted by attention, answered as
soon as the version is past ``N`` (or after ``LONG_POLL_S``: a long poll, so a tile changes on
the screen as its message arrives); ``POST /api/stop/<id>`` the stop; ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import uvicorn
from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse

from retrotread.api.floor.page import PAGE
from retrotread.api.floor.tiles import Floor
from retrotread.api.mqtt.address import parse_broker_url, plain_client
from retrotread.daemon.config import parse_listen

log = logging.getLogger(__name__)

LONG_POLL_S = 15.0
GATHER_S = 0.25  # a change is shown at most this much later; a tile's target is 1 s
BACKOFF_S = (0.5, 10.0)
STOP_REASON = "floor"


class FloorService:
    """The floor's broker link: reads into a ``Floor``, publishes the stops."""

    def __init__(self, mqtt_url: str, prefix: str = "retrotread") -> None:
        self.broker = parse_broker_url(mqtt_url)  # a bad URL is a start-up error, naming it
        self.floor = Floor(prefix)
        self._client: aiomqtt.Client | None = None
        self._tls = self.broker.tls_context()

    async def run(self) -> None:
        """Stay connected (capped backoff), logging a failure and a recovery once each."""
        delay, trouble = BACKOFF_S[0], False
        while True:
            client = plain_client(self.broker, f"retrotread-floor-{os.getpid()}", self._tls)
            try:
                async with client:
                    for topic in self.floor.topics():
                        await client.subscribe(topic, qos=1)
                    self._client = client
                    self.floor.set_broker(True)
                    log.log(logging.WARNING if trouble else logging.INFO, "floor: reading %s", self.broker.where)
                    trouble, delay = False, BACKOFF_S[0]
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self.floor.apply(message.topic.value, payload)
            except aiomqtt.MqttError as exc:
                if not trouble:
                    log.warning("floor: %s: %s; retrying in the background", self.broker.where, exc)
                trouble = True
            finally:
                self._client = None
                self.floor.set_broker(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_S[1])

    async def stop(self, tid: str) -> tuple[int, dict[str, Any]]:
        """Publish the emergency stop of treadmill ``tid``: (HTTP status, body)."""
        if tid not in self.floor.tiles:
            return 404, {"ok": False, "error": f"no treadmill {tid[:64]!r} on this floor"}
        client = self._client
        if client is None:
            return 503, {"ok": False, "error": "the broker is not connected; use the treadmill's own stop"}
        topic = f"{self.floor.prefix}/{tid}/cmd/estop"
        try:
            await client.publish(topic, json.dumps({"reason": STOP_REASON}), qos=1)
        except aiomqtt.MqttError as exc:
            return 503, {"ok": False, "error": f"the stop could not be sent: {exc}; use the treadmill's own stop"}
        log.warning("floor: emergency stop sent to %s", tid)
        return 202, {"ok": True, "id": tid}


def build_app(service: FloorService) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(service.run(), name="floor: mqtt")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    app = FastAPI(title="retrotread floor", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})

    @app.get("/api/tiles")
    async def tiles(after: int = Query(default=-1, ge=-1)) -> JSONResponse:
        if after >= 0 and service.floor.version <= after:
            await service.floor.wait_after(after, LONG_POLL_S)
            if service.floor.version > after:
                # A floor in use changes many times a second (20 treadmills in a session: ~35 changes/s).
                # Answer the first change after a short gather, so the page draws a few times a
                # second, not once per message (bench/floor.py: Chromium at half a core before).
                await asyncio.sleep(GATHER_S)
        return JSONResponse(service.floor.snapshot(), headers={"Cache-Control": "no-store"})

    @app.post("/api/stop/{tid}")
    async def stop(tid: str) -> JSONResponse:
        status, body = await service.stop(tid)
        return JSONResponse(body, status_code=status)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "broker": service.floor.broker_up, "treadmills": len(service.floor.tiles)}

    return app


async def serve(mqtt_url: str, listen: str = "127.0.0.1:8090", prefix: str = "retrotread") -> None:
    """``retrotread floor``: until cancelled (or SIGINT/SIGTERM, uvicorn's own handlers)."""
    host, port = parse_listen(listen)
    service = FloorService(mqtt_url, prefix)
    config = uvicorn.Config(build_app(service), host=host, port=port, log_level="info", access_log=False)
    print(f"retrotread floor: http://{listen}/ reading {service.broker.where}", flush=True)
    await uvicorn.Server(config).serve()
