"""The baseline: a bare uvicorn + Starlette app answering a static JSON body (no I/O, no logic).

    python -m uvicorn bench.gateway.baseline:app --port N

``BENCH_BODY`` (a file path) sets the body, so it is the same size as the gateway's answer.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_BODY = Path(os.environ["BENCH_BODY"]).read_bytes() if os.environ.get("BENCH_BODY") else b"{}"


async def health(request: Request) -> Response:
    return Response(_BODY, media_type="application/health+json",
                    headers={"Cache-Control": "max-age=1"})


app = Starlette(routes=[Route("/api/health", health)])
