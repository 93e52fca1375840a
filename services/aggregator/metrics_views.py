"""Metric snapshots folded into the views: ``tenant.<id>`` and the ``system`` view's tenant
table, metrics, alerts and traffic counters.

- ``ops.metrics.tenant.<id>`` -> a ``TenantView`` (through ``TenantBook.upsert``): the key
  metrics of its windows, its active alerts, and its status from the alert thresholds: a firing
  alert of severity ``critical`` fails the tenant, any other firing alert warns; a pending one
  (threshold crossed, not yet for its ``for``) is listed but changes nothing, so one bad window
  never flips a status.
- ``ops.metrics.global`` -> ``SystemView.metrics`` (flattened: ``avg_ms_5m``,
  ``db_connections_ratio``...), ``SystemView.alerts`` (global, then tenants', firing first),
  ``SystemView.traffic`` (cumulative counters for the gateway's ``/metrics``).
- The system view lists at most ``max_tenants`` tenants, worst first (it must fit one KV value);
  ``tenants_total``/``tenants_warn``/``tenants_fail`` in its metrics count them all.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

from faststream.nats import NatsRouter

from shared import (
    AlertEvent,
    DeadLetters,
    InboundMessage,
    MetricSnapshot,
    Status,
    SystemView,
    TenantView,
    subjects,
    subscribe_raw,
)

from .tenant_views import TenantBook

# What a tenant view shows of its snapshot (the rest stays in the snapshot).
TENANT_METRICS = (
    "rate_per_s_1m", "count_5m", "errors_5m", "error_ratio_5m", "avg_ms_5m", "p50_ms_5m",
    "p95_ms_5m", "p99_ms_5m", "error_ratio_1h", "active_timers",
)
MAX_ALERTS = 200
SEVERITY_STATUS = {"critical": Status.FAIL, "page": Status.FAIL}


def status_of(alerts: list[AlertEvent]) -> tuple[Status, list[str]]:
    firing = [a for a in alerts if a.state == "firing"]
    status = Status.worst(SEVERITY_STATUS.get(a.severity, Status.WARN) for a in firing)
    return status, [a.summary or a.rule for a in firing]


def tenant_view(snapshot: MetricSnapshot) -> TenantView:
    flat = snapshot.flat()
    status, reasons = status_of(snapshot.alerts)
    return TenantView(
        tenant_id=snapshot.tenant_id or snapshot.scope.split(".", 1)[-1],
        status=status,
        generated_at=snapshot.time,
        metrics={name: flat.get(name) for name in TENANT_METRICS},
        alerts=list(snapshot.alerts),
        reasons=reasons,
    )


def _alert_order(alert: AlertEvent) -> tuple[int, int, str, str]:
    return (alert.state != "firing", SEVERITY_STATUS.get(alert.severity) is None,
            alert.rule, alert.scope)


@dataclass
class MetricsFolder:
    """Folds snapshots into the views; a ``SystemContributor`` of ``SystemState``."""

    book: TenantBook
    max_tenants: int = 200
    latest_global: MetricSnapshot | None = None
    tenant_snapshots: int = field(default=0)

    def apply(self, snapshot: MetricSnapshot) -> None:
        if snapshot.scope == "global":
            if self.latest_global is None or snapshot.time >= self.latest_global.time:
                self.latest_global = snapshot
        elif snapshot.scope.startswith("tenant.") and snapshot.tenant_id:
            self.tenant_snapshots += 1
            self.book.upsert(tenant_view(snapshot))

    def contribute(self, view: SystemView, now: datetime) -> Status | None:
        """Metrics, alerts and traffic of the global snapshot; trims the tenant table."""
        counts = {s: 0 for s in Status}
        for summary in view.tenants.values():
            counts[summary.status] += 1
        alerts: list[AlertEvent] = []
        snapshot = self.latest_global
        if snapshot is not None:
            view.metrics.update(snapshot.flat())
            view.metrics["snapshot_time"] = snapshot.time.timestamp()
            view.traffic = dict(snapshot.traffic)
            alerts.extend(snapshot.alerts)
        alerts.extend(self.book.alerts())
        view.alerts = sorted(alerts, key=_alert_order)[:MAX_ALERTS]
        view.metrics.update(
            tenants_total=float(len(view.tenants)),
            tenants_warn=float(counts[Status.WARN]),
            tenants_fail=float(counts[Status.FAIL]),
        )
        if len(view.tenants) > self.max_tenants:
            # Ranks are kept per tenant by the book (built on upsert, not on every tick).
            worst = [t for t in self.book.worst(self.max_tenants) if t in view.tenants]
            view.tenants = {t: view.tenants[t] for t in worst}
        return None  # alerts are shown, not folded into the health status (probes own that)

    def merge_system(self, view: SystemView) -> None:
        """Take another replica's global metrics if they are newer than ours."""
        stamp = view.metrics.get("snapshot_time")
        if stamp is None:
            return
        mine = self.latest_global.time.timestamp() if self.latest_global else None
        if mine is not None and mine >= stamp:
            return
        global_alerts = [a for a in view.alerts if a.scope == "global"]
        gauges = {k: v for k, v in view.metrics.items()
                  if not k.startswith("tenants_") and k != "snapshot_time"}
        try:
            self.latest_global = MetricSnapshot(
                scope="global", instance="merged", time=datetime.fromtimestamp(stamp).astimezone(),
                gauges=gauges, alerts=global_alerts, traffic=dict(view.traffic),
            )
        except ValueError:
            return


class LoopShare:
    """Hands the event loop over every ``budget_s`` of handler work.

    nats-py runs a subscription's callbacks back to back without yielding while messages are
    queued, so a burst of snapshots (thousands at once) would hold the loop for a second and
    starve the view tick (``system``'s freshness). A ``sleep(0)`` every few ms lets it run.
    """

    def __init__(self, budget_s: float = 0.002) -> None:
        self._budget_s = budget_s
        self._since = time.perf_counter()

    async def __call__(self) -> None:
        if time.perf_counter() - self._since >= self._budget_s:
            await asyncio.sleep(0)
            self._since = time.perf_counter()


def build_metrics_router(folder: MetricsFolder, dead_letters: DeadLetters) -> NatsRouter:
    router = NatsRouter()
    share = LoopShare()

    # Raw messages: 10,000 tenants are ~700 snapshots/s, bursts of thousands (shared/_inbound.py).
    @subscribe_raw(router, subjects.METRICS_GLOBAL)
    @subscribe_raw(router, subjects.METRICS_TENANTS)
    async def on_snapshot(msg: InboundMessage) -> None:
        snapshot = await dead_letters.decode_message(MetricSnapshot, "metrics", msg)
        if snapshot is not None:
            folder.apply(snapshot)
        await share()

    return router
