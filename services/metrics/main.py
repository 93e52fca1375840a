"""The metrics service: request windows per tenant and globally, collectors, snapshots, alerts.

Subscribes: ``ops.ingest.requests`` (+ ``.<tenant>``, or its partition's ``ops.ingest.part.<k>.*``),
``ops.ingest.pool``, ``ops.ingest.ws``, ``ops.metrics.partition.*`` (owner of global, partitioned).
Publishes: ``ops.metrics.global``, ``ops.metrics.tenant.<id>``, ``ops.metrics.partition.<k>``
(core), ``ops.alerts.<rule>`` (JetStream ``OPS_EVENTS``), rejected input on ``ops.dlq.*``,
Alertmanager ``/api/v2/alerts`` when ``ALERTMANAGER_URL`` is set.
State: windows and alert states in memory (rebuilt from traffic after a restart; alerts
re-evaluate, firing ones are re-sent to Alertmanager before their ``endsAt`` lapses).
See docs/metrics.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from faststream.asgi import AsgiFastStream, AsgiResponse, get
from pydantic import Field

from shared import DeadLetters, ServiceRuntime, Settings, make_broker

from .alerts.alertmanager import AlertmanagerNotifier
from .alerts.engine import AlertEngine
from .alerts.outbox import AlertOutbox
from .alerts.rules import load_rules
from .collectors import Collectors
from .gauges import AppGauges
from .handlers import Deps, build_router
from .ingest import IngestHandler
from .partition import Partitioning
from .reporter import Reporter
from .store import MetricsStore

SERVICE = "metrics"


class MetricsSettings(Settings):
    interval_s: float = Field(default=5.0, gt=0, alias="OPS_METRICS_INTERVAL")
    # Each tenant's snapshot (and its tenant alert rules) every this many seconds (>= interval).
    tenant_interval_s: float | None = Field(default=15.0, gt=0, alias="OPS_METRICS_TENANT_INTERVAL")
    collect_interval_s: float = Field(default=15.0, gt=0, alias="OPS_METRICS_COLLECT_INTERVAL")
    partition: int | None = Field(default=None, ge=0, alias="OPS_METRICS_PARTITION")
    partitions: int = Field(default=1, ge=1, alias="OPS_METRICS_PARTITIONS")
    alertmanager_resend_s: float = Field(default=60.0, gt=0, alias="OPS_ALERTMANAGER_RESEND")


@dataclass
class MetricsService:
    """The wired service (``create_app`` serves it; benchmarks drive it directly)."""

    settings: MetricsSettings
    runtime: ServiceRuntime
    store: MetricsStore
    ingest: IngestHandler
    reporter: Reporter
    partitioning: Partitioning

    def stats(self) -> dict[str, Any]:
        return {
            "records": self.store.records, "batches": self.ingest.batches,
            "rejected": self.ingest.rejected, "late": self.store.late,
            "tenants": len(self.store.tenants), "ticks": self.reporter.ticks,
            "partition": self.partitioning.partition,
            "partitions": self.partitioning.partitions,
            "alerts_published": self.reporter.outbox.published,
        }


def build(settings: MetricsSettings | None = None) -> MetricsService:
    settings = settings if isinstance(settings, MetricsSettings) else MetricsSettings()
    partitioning = Partitioning(settings.partition, settings.partitions)
    broker = make_broker(settings, service=SERVICE, message_log_level=logging.DEBUG)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    dead_letters = DeadLetters(broker)
    store = MetricsStore()
    engine = AlertEngine(load_rules(settings.alert_rules_path))
    notifier = None
    if settings.alertmanager_url:
        notifier = AlertmanagerNotifier(settings.alertmanager_url, deployment=settings.deployment,
                                        resend_s=settings.alertmanager_resend_s)
        runtime.on_shutdown(notifier.close)
    collectors = Collectors(
        settings.database_dsn() if settings.database_url else None, settings.active_timers_sql,
        owns=partitioning.owns, server_wide=partitioning.owns_global,
    )
    app_gauges = AppGauges()

    async def publish(subject: str, body: bytes) -> None:
        await runtime.client.publish(subject, body)

    reporter = Reporter(
        store=store, engine=engine, outbox=AlertOutbox(broker.publish), collectors=collectors,
        app_gauges=app_gauges, partitioning=partitioning, instance=settings.instance,
        interval_s=settings.interval_s, publish=publish, notifier=notifier,
        tenant_interval_s=settings.tenant_interval_s,
    )
    ingest = IngestHandler(store, dead_letters)
    broker.include_router(build_router(Deps(ingest, reporter, partitioning, dead_letters)))
    runtime.add_task("snapshots", reporter.run)
    runtime.add_task("collectors", lambda: collectors.run(settings.collect_interval_s))
    return MetricsService(settings, runtime, store, ingest, reporter, partitioning)


def create_app(settings: MetricsSettings | None = None) -> AsgiFastStream:
    service = build(settings)

    @get(include_in_schema=False)
    async def stats(scope: Any) -> AsgiResponse:
        body = json.dumps(service.stats()).encode()
        return AsgiResponse(body, 200, {"content-type": "application/json"})

    return service.runtime.asgi(extra_routes=[("/stats", stats)])
