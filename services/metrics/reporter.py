"""The snapshot tick: roll windows, evaluate alerts, publish snapshots and alert events.

Every ``interval_s``:
1. windows roll up (10 s buckets into minutes, minutes into the 6 h ring);
2. each tenant with data in the 5 m window, active timers or an active alert gets a snapshot
   on ``ops.metrics.tenant.<id>`` (plus one last snapshot when it goes quiet), with its tenant
   alert rules evaluated first so the snapshot carries its active alerts. Tenants take turns
   (``tenant_interval_s``, a multiple of the tick): 10,000 tenants every 5 s would be 2,000
   snapshots and KV view writes a second for views nobody reads that often;
3. a partitioned instance publishes its partial global on ``ops.metrics.partition.<k>``; the
   owner of ``global`` merges the partials it has (fresh within 3 intervals), adds the
   collectors' and the app's gauges, evaluates the global rules and publishes
   ``ops.metrics.global``;
4. alert transitions go to JetStream, firing/resolved alerts to Alertmanager.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from prometheus_client import Gauge

from shared import MetricSnapshot, TrafficTotals, WindowStats, get_logger, subjects

from .alerts.alertmanager import AlertmanagerNotifier
from .alerts.engine import AlertEngine, Instance
from .alerts.outbox import AlertOutbox
from .collectors import Collectors
from .gauges import AppGauges
from .partition import Partitioning
from .stats import merge_partials, window_stats
from .store import MetricsStore
from .window import FINE_S, Window

log = get_logger(__name__)
TENANTS = Gauge("opsplane_metrics_tenants", "Tenants with a window in this instance.")
TICK_SECONDS = Gauge("opsplane_metrics_tick_seconds", "Duration of the last snapshot tick.")
TENANT_PREFIX = "tenant."

Publish = Callable[[str, bytes], Awaitable[None]]


class Reporter:
    def __init__(self, *, store: MetricsStore, engine: AlertEngine, outbox: AlertOutbox,
                 collectors: Collectors, app_gauges: AppGauges, partitioning: Partitioning,
                 instance: str, interval_s: float, publish: Publish,
                 notifier: AlertmanagerNotifier | None = None,
                 tenant_interval_s: float | None = None) -> None:
        self.store = store
        self.engine = engine
        self.outbox = outbox
        self.collectors = collectors
        self.app_gauges = app_gauges
        self.partitioning = partitioning
        self.instance = instance
        self.interval_s = interval_s
        self.notifier = notifier
        self._publish = publish
        self._partials: dict[int, tuple[MetricSnapshot, float]] = {}
        self._busy: set[str] = set()
        self.tenant_every = max(1, round((tenant_interval_s or interval_s) / interval_s))
        self.ticks = 0
        self.publish_errors = 0

    def accept_partial(self, snapshot: MetricSnapshot) -> None:
        if snapshot.partition is not None:
            self._partials[snapshot.partition] = (snapshot, time.monotonic())

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            try:
                await self.tick(time.time())
            finally:
                TICK_SECONDS.set(time.perf_counter() - started)
            await asyncio.sleep(self.interval_s)

    async def tick(self, now: float) -> None:
        when = datetime.fromtimestamp(now, UTC)
        self.store.roll(now)
        TENANTS.set(len(self.store.tenants))
        resolved = await self._tenants(now, when)
        resolved += await self._global(now, when)
        await self.outbox.flush()
        if self.notifier is not None:
            await self.notifier.notify(self.engine.firing(), resolved, when)
        self.ticks += 1

    def _snapshot(self, scope: str, when: datetime, **fields: object) -> MetricSnapshot:
        return MetricSnapshot(
            scope=scope, instance=self.instance, partition=self.partitioning.partition,
            partitions=self.partitioning.partitions, time=when, interval_s=self.interval_s,
            **fields,
        )

    def _due(self, tenant: str) -> bool:
        """Tenants take turns: each gets a snapshot every ``tenant_every`` ticks."""
        if self.tenant_every == 1:
            return True
        return zlib.crc32(tenant.encode()) % self.tenant_every == self.ticks % self.tenant_every

    async def _tenants(self, now: float, when: datetime) -> list[Instance]:
        now_idx = int(now // FINE_S)
        timers_ok = self.collectors.gauges.get("active_timers") is not None
        timers = self.collectors.timers
        recent = {t for t, w in self.store.tenants.items() if w.recent(now_idx)}
        alerting = {s[len(TENANT_PREFIX):] for s in self.engine.scopes()
                    if s.startswith(TENANT_PREFIX)}
        busy = recent | alerting | {t for t, n in timers.items() if n > 0}
        resolved: list[Instance] = []
        for tenant in sorted(t for t in busy | self._busy if self._due(t)):
            scope = TENANT_PREFIX + tenant
            windows, _ = window_stats(self.store.tenants.get(tenant) or Window(), now)
            timer_value = float(timers.get(tenant, 0)) if timers_ok else None
            snapshot = self._snapshot(scope, when, tenant_id=tenant, windows=windows,
                                      gauges={"active_timers": timer_value})
            events, ended = self.engine.evaluate(scope, snapshot.flat(), when)
            snapshot.alerts = self.engine.active(scope)
            self.outbox.put(events)
            resolved += ended
            await self._send(subjects.metrics_tenant(tenant), snapshot.to_bytes())
            # A tenant that went quiet gets this one last (empty) snapshot, then no more.
            if tenant in busy:
                self._busy.add(tenant)
            else:
                self._busy.discard(tenant)
        return resolved

    async def _global(self, now: float, when: datetime) -> list[Instance]:
        windows, sketch = window_stats(self.store.everything, now)
        traffic: dict[str, TrafficTotals] = {self.partitioning.label: self.store.traffic_totals()}
        timers = self.collectors.gauges.get("active_timers")
        gauges: dict[str, float | None] = {}
        if self.partitioning.partitioned:
            partial = self._snapshot(
                f"partition.{self.partitioning.label}", when, windows=windows, sketch=sketch,
                traffic=traffic, gauges={"active_timers": timers},
            )
            await self._send(subjects.metrics_partition(self.partitioning.partition or 0),
                             partial.to_bytes())
            if not self.partitioning.owns_global:
                return []
            self.accept_partial(partial)
            windows, traffic, timers, reporting = self._merge()
            gauges["partitions_reporting"] = float(reporting)
        gauges.update(self.collectors.gauges)
        gauges.update(self.app_gauges.values())
        gauges["active_timers"] = timers
        ratios = [gauges.get("db_server_connections_ratio"), gauges.get("db_pool_ratio")]
        known = [r for r in ratios if r is not None]
        gauges["db_connections_ratio"] = max(known) if known else None
        snapshot = self._snapshot("global", when, windows=windows, gauges=gauges, traffic=traffic)
        events, resolved = self.engine.evaluate("global", snapshot.flat(), when)
        snapshot.alerts = self.engine.active("global")
        self.outbox.put(events)
        await self._send(subjects.METRICS_GLOBAL, snapshot.to_bytes())
        return resolved

    def _merge(self) -> tuple[dict[str, WindowStats], dict[str, TrafficTotals], float | None, int]:
        clock = time.monotonic()
        fresh = [snap for snap, seen in self._partials.values()
                 if clock - seen <= 3 * snap.interval_s]
        traffic: dict[str, TrafficTotals] = {}
        for snap, _ in self._partials.values():  # counters stay, even from a silent partition
            traffic.update(snap.traffic)
        timer_values = [s.gauges.get("active_timers") for s in fresh]
        known = [t for t in timer_values if t is not None]
        return merge_partials(fresh), traffic, (sum(known) if known else None), len(fresh)

    async def _send(self, subject: str, body: bytes) -> None:
        try:
            await self._publish(subject, body)
        except Exception as exc:
            self.publish_errors += 1
            if self.publish_errors % 100 == 1:
                log.warning("snapshot.publish_failed", subject=subject, error=str(exc))
