"""The aggregator: builds the status views from events and keeps them in KV ``ops_status``.

Subscribes: ``ops.health.*``, ``ops.heartbeat.*.*``.
Publishes: KV ``ops_status`` keys ``system`` and ``tenant.<id>`` (compare-and-set, see
``writer.py``), ``StatusChange`` events on ``ops.status.*`` (JetStream ``OPS_EVENTS``), rejected
input on ``ops.dlq.*``.
State: the latest result per check, heartbeat per instance and view per tenant, in memory;
seeded from KV at start-up, so a restarted replica carries on where the views were.
Any number of replicas: CAS plus merge means they never take back each other's news.
"""

from __future__ import annotations

import asyncio
import logging

from faststream.asgi import AsgiFastStream
from pydantic import Field

from shared import (
    DeadLetters,
    ServiceRuntime,
    Settings,
    StatusChange,
    get_logger,
    make_broker,
    utcnow,
)

from .handlers import Deps, build_router
from .metrics_views import MetricsFolder, build_metrics_router
from .sources import SystemSource
from .state import SystemState
from .tenant_views import TenantBook
from .writer import ViewWriter, change_subject

SERVICE = "aggregator"
log = get_logger(__name__)


class AggregatorSettings(Settings):
    tick_s: float = Field(default=0.25, alias="OPS_AGGREGATOR_TICK")
    refresh_s: float = Field(default=2.0, alias="OPS_VIEW_REFRESH")
    expected_services: str = Field(
        default="health,aggregator,gateway", alias="OPS_EXPECTED_SERVICES"
    )


def create_app(settings: AggregatorSettings | None = None) -> AsgiFastStream:
    settings = settings or AggregatorSettings()
    broker = make_broker(settings, service=SERVICE, message_log_level=logging.DEBUG)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    expected = frozenset(s.strip() for s in settings.expected_services.split(",") if s.strip())
    tenants = TenantBook()
    folder = MetricsFolder(tenants)
    state = SystemState(expected_services=expected, contributors=[tenants, folder])
    broker.include_router(build_router(Deps(state, DeadLetters(broker))))
    broker.include_router(build_metrics_router(folder, DeadLetters(broker)))
    sources = (SystemSource(state), tenants)
    writer: dict[str, ViewWriter] = {}

    async def publish_change(change: StatusChange, msg_id: str) -> None:
        await broker.publish(change.to_bytes(), change_subject(change), stream="OPS_EVENTS",
                             headers={"Nats-Msg-Id": msg_id}, timeout=2.0)

    async def open_bucket() -> None:
        writer["views"] = ViewWriter(await runtime.status_bucket(), publish_change,
                                     refresh_s=settings.refresh_s)

    async def write_views() -> None:
        while True:
            for source in sources:
                await writer["views"].sync(source, utcnow())
            await asyncio.sleep(settings.tick_s)

    runtime.on_startup(open_bucket)
    runtime.add_task("views", write_views)
    return runtime.asgi()
