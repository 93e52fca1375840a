"""The metrics service's subscribers.

- request batches: ``ops.ingest.requests`` and ``ops.ingest.requests.<tenant>`` (one instance),
  or ``ops.ingest.part.<k>.*`` (partition ``k``; partition 0 also the unsuffixed subject);
- the app's gauges ``ops.ingest.pool`` / ``ops.ingest.ws`` (owner of ``global`` only);
- partition partials ``ops.metrics.partition.*`` (owner of ``global``, partitioned only).

Handlers take the raw message and decode it themselves: bad input goes to the DLQ with its
reason, never through FastStream's error path. They receive it as their *body* (``as_body``
decoder) rather than through a ``NatsMessage`` context parameter: FastStream 0.7 resolves
context parameters through fast_depends in a worker thread, a thread hop per message that cuts
a subscriber to ~1k messages/s (bench/ingest measures it); as the body it costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faststream.nats import NatsRouter
from faststream.nats.message import NatsMessage

from shared import DeadLetters, MetricSnapshot, PoolGauge, WsGauge, subjects

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


async def as_body(msg: NatsMessage) -> NatsMessage:
    """A FastStream decoder that hands the handler the message itself, undecoded."""
    return msg


def build_router(deps: Deps) -> NatsRouter:
    router = NatsRouter()

    async def on_requests(msg: Any) -> None:
        await deps.ingest.handle(msg.raw_message.subject, msg.body, msg.headers)

    for subject in deps.partitioning.ingest_subjects():
        router.subscriber(subject, pending_msgs_limit=PENDING_MSGS, decoder=as_body,
                          pending_bytes_limit=PENDING_BYTES)(on_requests)

    if not deps.partitioning.owns_global:
        return router

    @router.subscriber(subjects.INGEST_POOL, decoder=as_body)
    async def on_pool(msg: Any) -> None:
        gauge = await deps.dead_letters.decode(
            PoolGauge, "pool", msg.raw_message.subject, msg.body, msg.headers
        )
        if gauge is not None:
            deps.reporter.app_gauges.apply_pool(gauge)

    @router.subscriber(subjects.INGEST_WS, decoder=as_body)
    async def on_ws(msg: Any) -> None:
        gauge = await deps.dead_letters.decode(
            WsGauge, "ws", msg.raw_message.subject, msg.body, msg.headers
        )
        if gauge is not None:
            deps.reporter.app_gauges.apply_ws(gauge)

    if deps.partitioning.partitioned:

        @router.subscriber(subjects.METRICS_PARTITIONS, decoder=as_body)
        async def on_partial(msg: Any) -> None:
            snapshot = await deps.dead_letters.decode(
                MetricSnapshot, "metrics", msg.raw_message.subject, msg.body, msg.headers
            )
            if snapshot is not None:
                deps.reporter.accept_partial(snapshot)

    return router
