"""``RequestMetricsMiddleware``: the app's instrumentation, added in two lines.

    from shared import RequestMetricsMiddleware
    app.add_middleware(RequestMetricsMiddleware, nats_url=os.environ["NATS_URL"])

Per HTTP request it reads ``X-Request-ID`` (or assigns one) and returns it on the response,
binds ``request_id``/``tenant_id`` into structlog's context for the app's own log lines, and
hands ``{ts, tenant_id, request_id, method, route, status, duration_ms}`` to a batched,
non-blocking publisher. Publishing is an O(1) append to a bounded buffer: a broker outage
never slows or fails a request (records are dropped oldest-first and counted instead).

The tenant is, in order: ``request.state.tenant_id`` set by the app (e.g. after auth), a
``tenant_id`` bound in structlog's context by the app, the ``X-Tenant-ID`` header, a
``tenant_id`` path parameter. The route is the matched route's template (bounded), not the path.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import structlog

from ._ingest import BatchPublisher, request_record
from ._ingest_link import IngestLink
from ._logging import get_logger

log = get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_TENANT_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
REQUEST_ID_HEADER = b"x-request-id"


class RequestMetricsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        nats_url: str | None = None,
        publisher: BatchPublisher | None = None,
        by_tenant: bool = False,
        tenant_header: str = "x-tenant-id",
        skip_paths: Iterable[str] = ("/livez", "/readyz", "/metrics"),
    ) -> None:
        """Pass ``nats_url`` (the middleware owns the connection, opened at start-up in the
        background) or a ``publisher`` you run yourself; neither = only ids and log context."""
        self.app = app
        own = nats_url is not None and publisher is None
        self.link = IngestLink(nats_url, by_tenant=by_tenant) if own and nats_url else None
        self.publisher = publisher or (self.link.publisher if self.link else None)
        self._tenant_header = tenant_header.lower().encode("latin-1")
        self._skip = frozenset(skip_paths)
        self._started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._started:  # servers that skip the lifespan protocol
            await self._start()
        started = time.perf_counter()
        request_id, tenant = self._from_headers(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500  # if the app raises before it answers, the server sends a 500
        rid_header = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                if not any(key.lower() == REQUEST_ID_HEADER for key, _ in headers):
                    headers.append((REQUEST_ID_HEADER, rid_header))
                message = {**message, "headers": headers}
            await send(message)

        # What the app binds while serving stays with this request: restored afterwards even
        # when the server runs requests in one task (test clients do).
        saved = structlog.contextvars.get_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=request_id, **({"tenant_id": tenant} if tenant else {})
        )
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            bound = structlog.contextvars.get_contextvars().get("tenant_id")
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(**saved)
            self._record(scope, status, started, request_id, tenant, bound)

    def _from_headers(self, scope: Scope) -> tuple[str, str | None]:
        request_id: str | None = None
        tenant: str | None = None
        for key, value in scope.get("headers", ()):
            if key == REQUEST_ID_HEADER:
                candidate = value.decode("latin-1")
                request_id = candidate if _REQUEST_ID.match(candidate) else None
            elif key == self._tenant_header:
                candidate = value.decode("latin-1")
                tenant = candidate if _TENANT_ID.match(candidate) else None
        return request_id or uuid.uuid4().hex, tenant

    def _record(
        self,
        scope: Scope,
        status: int,
        started: float,
        request_id: str,
        header_tenant: str | None,
        bound_tenant: Any,
    ) -> None:
        if self.publisher is None or scope.get("path") in self._skip:
            return
        try:
            state = scope.get("state") or {}
            candidates = (
                state.get("tenant_id"),
                bound_tenant,
                header_tenant,
                (scope.get("path_params") or {}).get("tenant_id"),
            )
            tenant = next(
                (str(c) for c in candidates if c and _TENANT_ID.match(str(c))), None
            )
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None)
            self.publisher.add(
                request_record(
                    method=str(scope.get("method", "GET"))[:16],
                    route=str(template or scope.get("path") or "/")[:256],
                    status=status,
                    duration_ms=(time.perf_counter() - started) * 1000.0,
                    tenant_id=tenant,
                    request_id=request_id,
                )
            )
        except Exception as exc:  # instrumentation never fails a request
            log.debug("instrumentation.record_failed", error=str(exc))

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start()
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
            return message

        return wrapped

    async def _start(self) -> None:
        self._started = True
        if self.link is not None:
            await self.link.start()

    async def stop(self) -> None:
        """Flush (bounded in time) and close the owned connection."""
        if self.link is not None:
            await self.link.stop()
