"""``/super-admin/status`` (JSON, or the live HTML page), its event stream, and tenant health.

Everything answers from the in-memory view cache. The page updates over server-sent events:
one ``status`` event with the whole report on connect and after every change of a view (at most
every ``MIN_PUSH_S``), a comment every ``KEEPALIVE_S`` so proxies keep the stream open, and the
stream ends after ``STREAM_LIFETIME_S`` (EventSource reconnects by itself after ``retry``), so no
stream holds a gateway's shutdown for long.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse

from shared import TenantView

from .auth import Principal, principal, super_admin
from .page import render_page
from .report import StatusReport, status_report

router = APIRouter()
KEEPALIVE_S = 15.0
MIN_PUSH_S = 0.2
STREAM_LIFETIME_S = 120.0
RETRY_MS = 1000
_TENANT_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
AUTH_RESPONSES: dict[int | str, dict[str, str]] = {
    401: {"description": "no credentials"},
    403: {"description": "a token that is not accepted, or of the wrong role"},
}


def current_report(request: Request) -> StatusReport:
    gateway = request.app.state.gateway
    report = status_report(gateway.cache.system, gateway.cache.age_s(), gateway.settings.deployment)
    recent = gateway.jobs.query(limit=20)
    if recent:  # the job index sees every job event; the view carries none of its own
        report.jobs = recent
    return report


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    html, json_ = accept.find("text/html"), accept.find("application/json")
    return html >= 0 and (json_ < 0 or html < json_)


@router.get(
    "/super-admin/status",
    response_model=StatusReport,
    responses={**AUTH_RESPONSES, 200: {"content": {"text/html": {}},
                                       "description": "the report; HTML for Accept: text/html"}},
    summary="Operators' status: components, services, tenants, alerts, backups, jobs",
)
async def super_admin_status(request: Request, _: Principal = Depends(super_admin)) -> Response:
    report = current_report(request)
    if wants_html(request):
        return HTMLResponse(render_page(report), headers={"Cache-Control": "no-store"})
    return Response(report.model_dump_json(), media_type="application/json",
                    headers={"Cache-Control": "no-store"})


@router.get(
    "/super-admin/status/stream",
    responses={**AUTH_RESPONSES, 200: {"content": {"text/event-stream": {}},
                                       "description": "server-sent `status` events"}},
    summary="The status report as server-sent events (what the HTML page listens to)",
)
async def super_admin_stream(request: Request, _: Principal = Depends(super_admin)) -> Response:
    return StreamingResponse(
        events(request), media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def events(request: Request) -> AsyncIterator[bytes]:
    cache = request.app.state.gateway.cache
    changed = asyncio.Event()

    def on_change(key: str) -> None:
        changed.set()

    cache.subscribe(on_change)
    ends_at = time.monotonic() + STREAM_LIFETIME_S
    try:
        yield f"retry: {RETRY_MS}\n".encode()
        while time.monotonic() < ends_at:
            changed.clear()
            body = current_report(request).model_dump_json()
            yield b"event: status\ndata: " + body.encode() + b"\n\n"
            await asyncio.sleep(MIN_PUSH_S)  # coalesce bursts of changes into one push
            while not changed.is_set() and time.monotonic() < ends_at:
                try:
                    await asyncio.wait_for(changed.wait(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    yield b": keepalive\n\n"
    finally:
        cache.unsubscribe(on_change)


@router.get(
    "/api/tenants/{tenant_id}/health",
    response_model=TenantView,
    responses={**AUTH_RESPONSES, 404: {"description": "no such tenant"}},
    summary="One tenant's health view (that tenant's token, or super-admin)",
)
async def tenant_health(tenant_id: str, request: Request,
                        caller: Principal = Depends(principal)) -> Response:
    if caller.role != "super-admin" and caller.tenant != tenant_id:
        raise HTTPException(403, "not your tenant")
    view = request.app.state.gateway.cache.tenants.get(tenant_id)
    if not _TENANT_ID.match(tenant_id) or view is None:
        raise HTTPException(404, "no such tenant")
    return Response(view.model_dump_json(), media_type="application/json",
                    headers={"Cache-Control": "no-store"})
