"""The app's instrumentation: request ids, log context, one record per request, and a broker
outage that never slows or fails the app."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import nats
import structlog
from fastapi import FastAPI, Request

from opsctl._procs import free_port
from shared import BatchPublisher, IngestLink, RequestMetricsMiddleware, subjects
from tests.harness import Servers


def make_app(**options: Any) -> tuple[FastAPI, dict[str, Any]]:
    app = FastAPI()
    seen: dict[str, Any] = {}

    @app.get("/projects/{project_id}")
    async def project(project_id: str, request: Request) -> dict[str, str]:
        seen["context"] = structlog.contextvars.get_contextvars()
        seen["state_request_id"] = request.state.request_id
        return {"project": project_id}

    @app.get("/tenants/{tenant_id}/report")
    async def report(tenant_id: str) -> dict[str, str]:
        return {"tenant": tenant_id}

    @app.get("/me")
    async def me(request: Request) -> dict[str, str]:
        request.state.tenant_id = "from-state"  # what an auth dependency would do
        return {}

    @app.get("/bound")
    async def bound() -> dict[str, str]:
        structlog.contextvars.bind_contextvars(tenant_id="from-log-context")
        return {}

    @app.get("/own-id")
    async def own_id() -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse({}, headers={"X-Request-ID": "chosen-by-the-app"})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("the app failed")

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {}

    app.add_middleware(RequestMetricsMiddleware, **options)
    return app, seen


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://app")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Drive the ASGI lifespan protocol as a server does."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                   inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outbox.get(), 5))["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await asyncio.wait_for(outbox.get(), 5))["type"] == "lifespan.shutdown.complete"
        await task


def buffered(app: FastAPI) -> list[dict[str, Any]]:
    middleware = find_middleware(app)
    assert middleware.publisher is not None
    return list(middleware.publisher._buffer)


def find_middleware(app: FastAPI) -> RequestMetricsMiddleware:
    layer: Any = app.middleware_stack
    while layer is not None and not isinstance(layer, RequestMetricsMiddleware):
        layer = getattr(layer, "app", None)
    assert layer is not None
    return layer


async def test_request_ids_are_read_assigned_and_returned() -> None:
    app, seen = make_app(publisher=BatchPublisher(IngestLink("nats://127.0.0.1:1")))
    async with client(app) as http:
        assigned = await http.get("/projects/7")
        kept = await http.get("/projects/7", headers={"X-Request-ID": "req-abc.123"})
        bad = await http.get("/projects/7", headers={"X-Request-ID": "x" * 200})
        injected = await http.get("/projects/7", headers={"X-Request-ID": "a b\tc"})
        own = await http.get("/own-id")
    rid = assigned.headers["x-request-id"]
    assert len(rid) == 32 and int(rid, 16) >= 0
    assert kept.headers["x-request-id"] == "req-abc.123"
    assert len(bad.headers["x-request-id"]) == 32  # too long: replaced
    assert injected.headers["x-request-id"] != "a b\tc"
    assert own.headers.get_list("x-request-id") == ["chosen-by-the-app"]
    assert seen["state_request_id"] == injected.headers["x-request-id"]


async def test_log_context_and_records_carry_request_and_tenant() -> None:
    app, seen = make_app(publisher=BatchPublisher(IngestLink("nats://127.0.0.1:1")))
    async with client(app) as http:
        response = await http.get("/projects/42", headers={"X-Tenant-ID": "acme"})
        context = dict(seen["context"])
        await http.get("/tenants/globex/report")
        await http.get("/me", headers={"X-Tenant-ID": "ignored-by-state"})
        await http.get("/bound")
        await http.get("/projects/1", headers={"X-Tenant-ID": "bad.tenant"})
        failed = await http.get("/boom", headers={"X-Tenant-ID": "acme"})
        await http.get("/livez")
    assert context["request_id"] == response.headers["x-request-id"]
    assert context["tenant_id"] == "acme"
    assert failed.status_code == 500
    records = buffered(app)
    assert [(r["route"], r["tenant_id"], r["status"]) for r in records] == [
        ("/projects/{project_id}", "acme", 200),
        ("/tenants/{tenant_id}/report", "globex", 200),
        ("/me", "from-state", 200),
        ("/bound", "from-log-context", 200),
        ("/projects/{project_id}", None, 200),
        ("/boom", "acme", 500),
    ]  # /livez is not the app's traffic
    first = records[0]
    assert first["request_id"] == response.headers["x-request-id"]
    assert first["method"] == "GET" and first["duration_ms"] >= 0
    assert abs(first["ts"] - time.time()) < 30
    assert structlog.contextvars.get_contextvars().get("request_id") is None  # unbound after


async def test_records_reach_nats_in_batches(servers: Servers) -> None:
    subscriber = await nats.connect(servers.nats.url)
    got: list[dict[str, Any]] = []
    subjects_seen: set[str] = set()
    done = asyncio.Event()

    async def on_batch(msg: Any) -> None:
        subjects_seen.add(msg.subject)
        got.extend(r for r in json.loads(msg.data) if r["route"].startswith("/projects"))
        if len(got) >= 30:
            done.set()

    await subscriber.subscribe(subjects.INGEST_REQUESTS, cb=on_batch)
    await subscriber.subscribe(subjects.INGEST_REQUESTS_BY_TENANT, cb=on_batch)
    await subscriber.flush()
    app, _ = make_app(nats_url=servers.nats.url, by_tenant=True)
    async with lifespan(app):
        link = find_middleware(app).link
        assert link is not None
        deadline = time.monotonic() + 10
        while not link.is_connected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        async with client(app) as http:
            for i in range(30):
                await http.get(f"/projects/{i}", headers={"X-Tenant-ID": f"t{i % 3}"})
        await asyncio.wait_for(done.wait(), timeout=5)
    assert {r["tenant_id"] for r in got} == {"t0", "t1", "t2"}
    assert subjects_seen == {f"{subjects.INGEST_REQUESTS}.t{i}" for i in range(3)}
    await subscriber.close()


async def test_a_broker_outage_never_slows_or_fails_the_app() -> None:
    dead = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    app, _ = make_app(nats_url=dead)
    async with lifespan(app):
        async with client(app) as http:
            started = time.perf_counter()
            responses = [await http.get(f"/projects/{i}") for i in range(300)]
            elapsed = time.perf_counter() - started
        link = find_middleware(app).link
        assert link is not None and not link.is_connected
    assert all(r.status_code == 200 for r in responses)
    assert elapsed < 3.0, f"300 requests took {elapsed:.2f}s with the broker down"


async def test_a_full_buffer_drops_the_oldest_and_counts() -> None:
    link = IngestLink(f"nats://127.0.0.1:{free_port()}", max_buffer=50)
    app, _ = make_app(publisher=link.publisher)
    async with client(app) as http:
        for i in range(80):
            await http.get(f"/projects/{i}")
    assert link.publisher.pending == 50 and link.publisher.dropped == 30
    assert buffered(app)[0]["route"] == "/projects/{project_id}"


async def test_without_a_publisher_only_ids_and_context() -> None:
    app, seen = make_app()
    async with client(app) as http:
        response = await http.get("/projects/1", headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 200 and response.headers["x-request-id"]
    assert seen["context"]["tenant_id"] == "acme"
