"""The NATS broker factory: one way every service connects.

- Reconnects forever (nats-py's default gives up after ~2 minutes of outage).
- The first connect is retried too, so a service started before NATS waits for it.
- ``round_trip`` is a real PING/PONG with the server, used for readiness: a socket that looks
  connected but no longer answers is not ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from faststream.nats import NatsBroker
from nats.aio.client import Client

from ._errors import BrokerError
from ._logging import ContextMiddleware, get_logger
from ._settings import Settings

log = get_logger(__name__)


def make_broker(
    settings: Settings,
    *,
    service: str,
    message_log_level: int = logging.INFO,
    middlewares: Sequence[Any] = (),
) -> NatsBroker:
    """A FastStream NATS broker configured for this deployment.

    ``message_log_level``: FastStream logs every message at this level; hot consumers pass
    ``logging.DEBUG`` so per-message logging costs nothing at INFO.
    """

    async def on_disconnect() -> None:
        log.warning("nats.disconnected")

    async def on_reconnect() -> None:
        log.info("nats.reconnected")

    async def on_error(exc: Exception) -> None:
        log.warning("nats.error", error=str(exc))

    return NatsBroker(
        servers=settings.nats_servers,
        name=f"{service}.{settings.instance}",
        allow_reconnect=True,
        max_reconnect_attempts=settings.nats_max_reconnect_attempts,
        reconnect_time_wait=settings.nats_reconnect_wait_s,  # type: ignore[arg-type]
        connect_timeout=settings.nats_connect_timeout_s,  # type: ignore[arg-type]
        ping_interval=5,
        max_outstanding_pings=3,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
        middlewares=(ContextMiddleware, *middlewares),
        logger=logging.getLogger(f"faststream.{service}"),
        log_level=message_log_level,
        graceful_timeout=10.0,
    )


async def connect_with_retry(broker: NatsBroker) -> Client:
    """Connect ``broker``; waits for NATS as long as it takes.

    With ``max_reconnect_attempts=-1`` nats-py retries the first connect too, forever (one
    ``nats.error`` line a try), so a service started before its broker simply waits; a bounded
    setting makes a failed first connect raise ``BrokerError``.
    """
    try:
        return await broker.connect()
    except Exception as exc:
        raise BrokerError(f"cannot connect to NATS: {exc}") from exc


async def round_trip(client: Client | None, timeout_s: float = 1.0) -> float | None:
    """Seconds for a PING/PONG with the server, or None when it does not answer in time."""
    if client is None or not client.is_connected:
        return None
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await client.flush(timeout=timeout_s)  # type: ignore[arg-type]
    except Exception:
        return None
    return loop.time() - started
