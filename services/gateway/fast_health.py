"""``/api/health`` at the speed of a static file: a pre-rendered body and a pure-ASGI fast path.

The document only changes when a view arrives or as the view ages, so it is rendered at most
every ``RENDER_EVERY_S`` (or at once when a new view arrives) and served as bytes. The ASGI
middleware answers ``GET``/``HEAD /api/health`` before FastAPI's routing; the FastAPI route with
the same renderer stays for the OpenAPI document and for apps mounted without the middleware.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .cache import ViewCache
from .health_doc import MEDIA_TYPE, health_document, http_status

PATH = "/api/health"
CACHE_CONTROL = "max-age=1"
RENDER_EVERY_S = 0.25


class HealthRenderer:
    def __init__(self, cache: ViewCache, deployment: str) -> None:
        self._cache = cache
        self._deployment = deployment
        self._key: tuple[float | None, int] | None = None
        self._rendered: tuple[int, bytes] = (503, b"")

    def render(self) -> tuple[int, bytes]:
        key = (self._cache.updated_monotonic, int(time.monotonic() / RENDER_EVERY_S))
        if key != self._key:
            doc = health_document(self._cache.system, self._cache.age_s(), self._deployment)
            self._rendered = (http_status(doc), json.dumps(doc).encode())
            self._key = key
        return self._rendered


class HealthFastPath:
    """Pure ASGI middleware: serves the pre-rendered health document, passes the rest on."""

    def __init__(self, app: Any, renderer: HealthRenderer) -> None:
        self.app = app
        self.renderer = renderer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope["path"] != PATH
                or scope["method"] not in ("GET", "HEAD")):
            await self.app(scope, receive, send)
            return
        status, body = self.renderer.render()
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"cache-control", CACHE_CONTROL.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        })
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})
