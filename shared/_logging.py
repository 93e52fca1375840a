"""structlog JSON logging with request/tenant context carried across NATS.

- One JSON object a line on stdout, with ``service`` and ``instance`` on every line.
- ``request_id`` / ``tenant_id`` / ``correlation_id`` are bound as context variables; the
  ``ContextMiddleware`` reads them from an incoming message's headers and writes them into every
  message published while handling it, so one request can be followed from the app through
  every service (FastStream's correlation id rides along).
- Secrets never reach a line: keys that look secret are masked and credentials in URLs dropped.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from faststream import BaseMiddleware

REQUEST_ID_HEADER = "X-Request-ID"
TENANT_ID_HEADER = "X-Tenant-ID"
_CONTEXT_HEADERS = {REQUEST_ID_HEADER: "request_id", TENANT_ID_HEADER: "tenant_id"}

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|api_key|apikey|dsn|cookie", re.I)
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:@/\s]+):[^@/\s]+@", re.I
)
MASK = "***"


def scrub(text: str) -> str:
    """Remove the password part of any ``scheme://user:password@host`` in ``text``."""
    return _URL_CREDENTIALS.sub(rf"\g<scheme>\g<user>:{MASK}@", text)


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key != "event" and _SECRET_KEY.search(key):
            event_dict[key] = MASK
        elif isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


def configure_logging(
    service: str, *, instance: str = "", level: str = "INFO", fmt: str = "json"
) -> None:
    """Configure structlog and route stdlib logging (uvicorn, faststream, nats) through it."""
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for noisy in ("uvicorn.access", "botocore", "aiobotocore", "asyncio"):
        logging.getLogger(noisy).setLevel(max(numeric_level, logging.WARNING))
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service, instance=instance)


def get_logger(name: str | None = None) -> Any:
    return structlog.stdlib.get_logger(name)


def context_headers() -> dict[str, str]:
    """Headers that carry the current request/tenant context onto an outgoing message."""
    bound = structlog.contextvars.get_contextvars()
    headers: dict[str, str] = {}
    for header, key in _CONTEXT_HEADERS.items():
        value = bound.get(key)
        if value:
            headers[header] = str(value)
    return headers


class ContextMiddleware(BaseMiddleware):
    """Binds context from an incoming message's headers; stamps it on outgoing ones."""

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
        headers = getattr(msg, "headers", None) or {}
        values: dict[str, str] = {"correlation_id": str(getattr(msg, "correlation_id", ""))}
        for header, key in _CONTEXT_HEADERS.items():
            if headers.get(header):
                values[key] = str(headers[header])
        with structlog.contextvars.bound_contextvars(**values):
            return await call_next(msg)

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
        extra = context_headers()
        if extra:
            cmd.headers = {**extra, **(cmd.headers or {})}
        return await call_next(cmd)
