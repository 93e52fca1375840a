"""The aggregator: builds the status views from events and keeps them in KV ``ops_status``.

Subscribes: ``ops.health.*``, ``ops.heartbeat.*.*``, ``ops.metrics.>`` (snapshots).
Publishes: KV ``ops_status`` keys ``system`` and ``tenant.<id>`` (compare-and-set, see
``writer.py``; on a fixed tick, see ``ticks.py``), ``StatusChange`` events on ``ops.status.*``
(JetStream ``OPS_EVENTS``), rejected input on ``ops.dlq.*``.
State: the latest result per check, heartbeat per instance and view per tenant, in memory;
seeded from KV at start-up, so a restarted replica carries on where the views were.
Any number of replicas: CAS plus merge means they never take back each other's news.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from faststream.asgi import AsgiFastStream
from pydantic import Field

from shared import DeadLetters, ServiceRuntime, Settings, StatusChange, get_logger, make_broker

from .handlers import Deps, build_router
from .metrics_views import MetricsFolder, build_metrics_router
from .sources import SystemSource
from .state import SystemState
from .tenant_views import TenantBook
from .ticks import Tick, view_ticks
from .writer import ViewWriter, change_subject

SERVICE = "aggregator"
log = get_logger(__name__)


class AggregatorSettings(Settings):
    tick_s: float = Field(default=0.25, gt=0, alias="OPS_AGGREGATOR_TICK")
    refresh_s: float = Field(default=2.0, alias="OPS_VIEW_REFRESH")
    # Tenant views are written when they change; a newer snapshot that changes nothing but the
    # time is written once the KV copy is this old (a tenant view has no liveness to show).
    tenant_refresh_s: float = Field(default=60.0, alias="OPS_TENANT_VIEW_REFRESH")
    # At most this many changed tenant views synced per tick (a burst drains over ticks).
    tenant_views_per_tick: int = Field(default=250, ge=1, alias="OPS_TENANT_VIEWS_PER_TICK")
    expected_services: str = Field(
        default="health,aggregator,gateway", alias="OPS_EXPECTED_SERVICES"
    )


@dataclass
class Aggregator:
    settings: AggregatorSettings
    runtime: ServiceRuntime
    state: SystemState
    tenants: TenantBook
    folder: MetricsFolder
    views: ViewWriter | None = None  # once the bucket is open
    on_tick: list[Callable[[Tick], None]] = field(default_factory=list)

    def _tick(self, tick: Tick) -> None:
        for hook in self.on_tick:
            hook(tick)


def build(settings: AggregatorSettings | None = None) -> Aggregator:
    settings = settings if isinstance(settings, AggregatorSettings) else AggregatorSettings()
    broker = make_broker(settings, service=SERVICE, message_log_level=logging.DEBUG)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    expected = frozenset(s.strip() for s in settings.expected_services.split(",") if s.strip())
    tenants = TenantBook()
    folder = MetricsFolder(tenants)
    state = SystemState(expected_services=expected, contributors=[tenants, folder])
    broker.include_router(build_router(Deps(state, DeadLetters(broker))))
    broker.include_router(build_metrics_router(folder, DeadLetters(broker)))
    service = Aggregator(settings, runtime, state, tenants, folder)

    async def publish_change(change: StatusChange, msg_id: str) -> None:
        await broker.publish(change.to_bytes(), change_subject(change), stream="OPS_EVENTS",
                             headers={"Nats-Msg-Id": msg_id}, timeout=2.0)

    async def open_bucket() -> None:
        service.views = ViewWriter(await runtime.status_bucket(), publish_change,
                                   refresh_s=settings.refresh_s, tick_s=settings.tick_s)

    async def write_views() -> None:
        assert service.views is not None
        await view_ticks(service.views, SystemSource(state), tenants, settings, service._tick)

    runtime.on_startup(open_bucket)
    runtime.add_task("views", write_views)
    return service


def create_app(settings: AggregatorSettings | None = None) -> AsgiFastStream:
    return build(settings).runtime.asgi()
