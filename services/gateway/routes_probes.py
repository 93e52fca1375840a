"""``/api/health`` for anyone, ``/livez`` and ``/readyz`` for the orchestrator.

All three answer from memory: no request waits on NATS, the database or anything else.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response

from .fast_health import CACHE_CONTROL
from .health_doc import MEDIA_TYPE, STALE_WARN_S

router = APIRouter()


@router.get(
    "/api/health",
    responses={200: {"description": "pass or warn"}, 503: {"description": "fail"}},
    summary="Health of the app and its dependencies (application/health+json)",
)
async def api_health(request: Request) -> Response:
    status, body = request.app.state.gateway.health.render()
    return Response(body, status_code=status, media_type=MEDIA_TYPE,
                    headers={"Cache-Control": CACHE_CONTROL})


@router.get("/livez", summary="The gateway process is alive")
async def livez() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", summary="Broker connected and the status view fresh")
async def readyz(request: Request) -> Response:
    gateway = request.app.state.gateway
    broker_ok = gateway.broker_connected()
    age = gateway.cache.age_s()
    view_ok = age is not None and age <= STALE_WARN_S
    body = {
        "status": "ready" if broker_ok and view_ok else "not ready",
        "broker": "connected" if broker_ok else "disconnected",
        "status_view_age_s": None if age is None else round(age, 3),
    }
    return Response(json.dumps(body), status_code=200 if broker_ok and view_ok else 503,
                    media_type="application/json")
