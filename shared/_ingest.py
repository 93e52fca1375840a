"""The app's side of ingest: a batched, non-blocking publisher and gauge helpers.

The app must never slow down or fail a request because of its operations plane, so
``BatchPublisher.add`` is a deque append: records are flushed to ``ops.ingest.requests`` every
``flush_interval_s`` or ``batch_size`` records, whichever comes first. The buffer is bounded;
when the broker is down the oldest records are dropped and counted (``dropped``), never the
request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any, Protocol

import msgspec

from ._logging import get_logger
from ._subjects import _TOKEN, INGEST_POOL, INGEST_REQUESTS, INGEST_WS

log = get_logger(__name__)


class NatsLike(Protocol):
    """The slice of ``nats.aio.client.Client`` the publisher uses."""

    @property
    def is_connected(self) -> bool: ...

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None: ...


class BatchPublisher:
    def __init__(
        self,
        client: NatsLike,
        *,
        subject: str = INGEST_REQUESTS,
        batch_size: int = 200,
        flush_interval_s: float = 0.1,
        max_buffer: int = 50_000,
        by_tenant: bool = False,
    ) -> None:
        """``by_tenant``: publish each tenant's records on ``<subject>.<tenant_id>`` (records
        without a tenant on ``subject``), which partitioned ingest needs (docs/metrics.md)."""
        self._client = client
        self._by_tenant = by_tenant
        self._subject = subject
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._buffer: deque[dict[str, Any]] = deque(maxlen=max_buffer)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._encoder = msgspec.json.Encoder()
        self.dropped = 0
        self.published = 0
        self.batches = 0

    def add(self, record: dict[str, Any]) -> None:
        """Queue one request record (never blocks, never raises)."""
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1  # the deque drops the oldest on append
        self._buffer.append(record)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="opsplane.batch_publisher")

    async def stop(self, *, flush: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if flush:
            await self.flush()

    async def flush(self) -> None:
        while self._buffer and self._client.is_connected:
            count = min(len(self._buffer), self._batch_size)
            batch = [self._buffer.popleft() for _ in range(count)]
            groups = self._split(batch)
            for index, (subject, records) in enumerate(groups):
                try:
                    await self._client.publish(subject, self._encoder.encode(records))
                except Exception as exc:
                    # Put the unsent records back (oldest first) unless that would overflow.
                    unsent = [r for _, group in groups[index:] for r in group]
                    room = (self._buffer.maxlen or 0) - len(self._buffer)
                    self._buffer.extendleft(reversed(unsent[-room:] if room > 0 else []))
                    self.dropped += max(0, len(unsent) - max(room, 0))
                    self.published += count - len(unsent)
                    log.debug("ingest.publish_failed", error=str(exc))
                    return
            self.published += count
            self.batches += len(groups)

    def _split(self, batch: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
        if not self._by_tenant:
            return [(self._subject, batch)]
        groups: dict[str | None, list[dict[str, Any]]] = {}
        for record in batch:
            tenant = record.get("tenant_id")
            key = tenant if isinstance(tenant, str) and _TOKEN.match(tenant) else None
            groups.setdefault(key, []).append(record)
        return [
            (self._subject if tenant is None else f"{self._subject}.{tenant}", records)
            for tenant, records in groups.items()
        ]

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_interval_s)
            self._wake.clear()
            await self.flush()


def request_record(
    *,
    method: str,
    route: str,
    status: int,
    duration_ms: float,
    tenant_id: str | None = None,
    request_id: str | None = None,
    ts: float | None = None,
) -> dict[str, Any]:
    """A request record as the contract spells it (``ts`` in epoch seconds)."""
    return {
        "ts": time.time() if ts is None else ts,
        "tenant_id": tenant_id,
        "request_id": request_id,
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(duration_ms, 3),
    }


async def publish_ws_gauge(client: NatsLike, *, node: str, connections: int) -> None:
    body = {"ts": time.time(), "node": node, "connections": connections}
    await client.publish(INGEST_WS, msgspec.json.encode(body))


async def publish_pool_gauge(client: NatsLike, *, node: str, in_use: int, max_size: int) -> None:
    body = {"ts": time.time(), "node": node, "in_use": in_use, "max": max_size}
    await client.publish(INGEST_POOL, msgspec.json.encode(body))
