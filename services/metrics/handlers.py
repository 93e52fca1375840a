"""The metrics service's subscribers.

- request batches: ``ops.ingest.requests`` and ``ops.ingest.requests.<tenant>`` (one instance),
  or ``ops.ingest.part.<k>.*`` (partition ``k``; partition 0 also the unsuffixed subject);
- the app's gauges ``ops.ingest.pool`` / ``ops.ingest.ws`` (owner of ``global`` only);
- partition partials ``ops.metrics.partition.*`` (owner of ``global``, partitioned only).

Handlers take the raw message and decode it themselves: bad input goes to the DLQ with its
reason, never through FastStream's error path. They receive it as their *body* (``as_body``
decoder, ``shared.subscribe_raw``) rather than through a ``NatsMessage`` context parameter,
which costs a worker-thread hop per message in FastStream 0.7 (bench/ingest measures it).
"""

from __future__ import annotations

from dataclasses import dataclass

from faststream.nats import NatsRouter

from shared import (
    DeadLetters,
    InboundMessage,
    MetricSnapshot,
    PoolGauge,
    WsGauge,
    subjects,
    subscribe_raw,
)

from .ingest import IngestHandler
from .partition import Partitioning
from .reporter import Reporter

# Core NATS buffers this much per subscription before it drops (a burst after an outage).
PENDING_MSGS = 100_000
PENDING_BYTES = 512 * 1024 * 1024


@dataclass
class Deps:
    ingest: IngestHandler
    reporter: Reporter  # its ``app_gauges`` take the app's gauges
    partitioning: Partitioning
    dead_letters: DeadLetters


def build_router(deps: Deps) -> NatsRouter:
    router = NatsRouter()

    async def on_requests(msg: InboundMessage) -> None:
        await deps.ingest.handle(msg.raw_message.subject, msg.body, msg.headers)

    for subject in deps.partitioning.ingest_subjects():
        subscribe_raw(router, subject, pending_msgs_limit=PENDING_MSGS,
                      pending_bytes_limit=PENDING_BYTES)(on_requests)

    if not deps.partitioning.owns_global:
        return router

    @subscribe_raw(router, subjects.INGEST_POOL)
    async def on_pool(msg: InboundMessage) -> None:
        gauge = await deps.dead_letters.decode_message(PoolGauge, "pool", msg)
        if gauge is not None:
            deps.reporter.app_gauges.apply_pool(gauge)

    @subscribe_raw(router, subjects.INGEST_WS)
    async def on_ws(msg: InboundMessage) -> None:
        gauge = await deps.dead_letters.decode_message(WsGauge, "ws", msg)
        if gauge is not None:
            deps.reporter.app_gauges.apply_ws(gauge)

    if deps.partitioning.partitioned:

        @subscribe_raw(router, subjects.METRICS_PARTITIONS)
        async def on_partial(msg: InboundMessage) -> None:
            snapshot = await deps.dead_letters.decode_message(MetricSnapshot, "metrics", msg)
            if snapshot is not None:
                deps.reporter.accept_partial(snapshot)

    return router
