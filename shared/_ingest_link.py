"""The app's NATS connection for ingest, opened in the background.

``IngestLink`` owns a nats-py client and a ``BatchPublisher``. It never blocks or fails the
app: the first connect is retried in a background task (the app starts and serves while NATS
is down), reconnects are nats-py's own, and records queue in the publisher's bounded buffer
meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.client import Client

from ._ingest import BatchPublisher
from ._logging import get_logger
from ._subjects import INGEST_REQUESTS

log = get_logger(__name__)


class IngestLink:
    def __init__(
        self,
        nats_url: str,
        *,
        name: str = "app-ingest",
        by_tenant: bool = False,
        batch_size: int = 200,
        flush_interval_s: float = 0.1,
        max_buffer: int = 50_000,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self._servers = [part.strip() for part in nats_url.split(",") if part.strip()]
        self._name = name
        self._connect_timeout_s = connect_timeout_s
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self.publisher = BatchPublisher(
            self,
            subject=INGEST_REQUESTS,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            max_buffer=max_buffer,
            by_tenant=by_tenant,
        )

    # ---- what BatchPublisher needs (``NatsLike``) ----------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        if self._client is None:
            raise ConnectionError("not connected to NATS yet")
        await self._client.publish(subject, payload, reply=reply, headers=headers)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting and flushing in the background; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._connect_loop(), name="opsplane.ingest_connect")
            await self.publisher.start()

    async def stop(self, *, timeout_s: float = 2.0) -> None:
        """Flush what can be flushed within ``timeout_s``, then close."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.publisher.stop(flush=True), timeout=timeout_s)
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), timeout=timeout_s)

    async def _connect_loop(self) -> None:
        delay = 0.5
        while True:
            client = Client()
            try:
                await client.connect(
                    servers=self._servers,
                    name=self._name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=self._connect_timeout_s,  # type: ignore[arg-type]
                    error_cb=_quiet,
                    disconnected_cb=_disconnected,
                    reconnected_cb=_reconnected,
                )
            except Exception as exc:
                log.debug("ingest.connect_failed", error=str(exc))
                with contextlib.suppress(Exception):
                    await client.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._client = client
            log.info("ingest.connected")
            return


async def _quiet(exc: Exception) -> None:
    log.debug("ingest.nats_error", error=str(exc))


async def _disconnected() -> None:
    log.info("ingest.disconnected")


async def _reconnected() -> None:
    log.info("ingest.reconnected")
