"""The demo app's ASGI app (``opsctl run demo-app``): a WebSocket endpoint plus the simulator.

- ``/ws``: echo; the text ``ping`` (or JSON ``{"type": "ping"}``) answers ``pong``; protocol-level
  pings are answered by the server. Open connections are counted for the ``ops.ingest.ws`` gauge.
- ``/livez``, ``/readyz`` (NATS connected and pool up), ``/`` (counters, for a curious human).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from shared import Settings

from .simulator import DemoSettings, Simulator


def _pong(text: str) -> str | None:
    if text.strip().lower() == "ping":
        return "pong"
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if isinstance(message, dict) and message.get("type") == "ping":
        return json.dumps({"type": "pong", "id": message.get("id")})
    return None


def create_app(settings: Settings | None = None) -> Starlette:
    if isinstance(settings, DemoSettings):
        demo = settings
    elif settings is not None:  # the runner's Settings, plus the DEMO_* knobs from the env
        demo = DemoSettings(**settings.model_dump(by_alias=True))
    else:
        demo = DemoSettings()
    sim = Simulator(demo)

    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        sim.ws_connections += 1
        sim.ws_total += 1
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    await ws.send_bytes(message["bytes"])
                    continue
                text = message.get("text") or ""
                await ws.send_text(_pong(text) or text)
        finally:
            sim.ws_connections -= 1

    async def livez(_: Request) -> JSONResponse:
        return JSONResponse({"status": "pass"})

    async def readyz(_: Request) -> JSONResponse:
        ready = sim.nc.is_connected and (demo.database_url is None or sim.pool is not None)
        body = {
            "status": "pass" if ready else "fail",
            "nats": sim.nc.is_connected,
            "database": sim.pool is not None,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def index(_: Request) -> JSONResponse:
        return JSONResponse(sim.stats())

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await sim.start()
        try:
            yield
        finally:
            await sim.stop()

    app = Starlette(
        routes=[
            WebSocketRoute("/ws", ws_endpoint),
            Route("/livez", livez),
            Route("/readyz", readyz),
            Route("/", index),
        ],
        lifespan=lifespan,
    )
    app.state.simulator = sim
    return app
