"""The metrics service's subscribers.

- request batches: ``ops.ingest.requests`` and ``ops.ingest.requests.<tenant>`` (one instance),
  or ``ops.ingest.part.<k>.*`` (partition ``k``; partition 0 also the unsuffixed subject);
- the app's gauges ``ops.ingest.pool`` / ``ops.ingest.ws`` (owner of ``global`` only);
- partition partials ``ops.metrics.partition.*`` (owner of ``global``, partitioned only).

Handlers take the raw message and decode it themselves: bad input goes to the DLQ with its
reason, never through FastStream's error path.
"""

from __future__ import annotations

from dataclasses import dataclass

from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsMessage

from shared import DeadLetters, MetricSnapshot, PoolGauge, WsGauge, subjects

from .gauges import AppGauges
from .ingest import IngestHandler
from .partition import Partitioning
from .reporter import Reporter

# Core NATS buffers this much per subscription before it drops (a burst after an outage).
PENDING_MSGS = 100_000
PENDING_BYTES = 512 * 1024 * 1024


@dataclass
class Deps:
    ingest: IngestHandler
    app_gauges: AppGauges
    reporter: Reporter
    partitioning: Partitioning
    dead_letters: DeadLetters


def build_router(deps: Deps) -> NatsRouter:
    router = NatsRouter()

    async def on_requests(msg: NatsMessage) -> None:
        await deps.ingest.handle(msg.raw_message.subject, msg.body, msg.headers)

    for subject in deps.partitioning.ingest_subjects():
        router.subscriber(subject, pending_msgs_limit=PENDING_MSGS,
                          pending_bytes_limit=PENDING_BYTES)(on_requests)

    if not deps.partitioning.owns_global:
        return router

    @router.subscriber(subjects.INGEST_POOL)
    async def on_pool(msg: NatsMessage) -> None:
        gauge = await deps.dead_letters.decode(
            PoolGauge, "pool", msg.raw_message.subject, msg.body, msg.headers
        )
        if gauge is not None:
            deps.app_gauges.apply_pool(gauge)

    @router.subscriber(subjects.INGEST_WS)
    async def on_ws(msg: NatsMessage) -> None:
        gauge = await deps.dead_letters.decode(
            WsGauge, "ws", msg.raw_message.subject, msg.body, msg.headers
        )
        if gauge is not None:
            deps.app_gauges.apply_ws(gauge)

    if deps.partitioning.partitioned:

        @router.subscriber(subjects.METRICS_PARTITIONS)
        async def on_partial(msg: NatsMessage) -> None:
            snapshot = await deps.dead_letters.decode(
                MetricSnapshot, "metrics", msg.raw_message.subject, msg.body, msg.headers
            )
            if snapshot is not None:
                deps.reporter.accept_partial(snapshot)

    return router
