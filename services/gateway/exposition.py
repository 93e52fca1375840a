"""What ``/metrics`` exposes: the status views as Prometheus metric families.

Read at scrape time from the gateway's in-memory views (``ViewCache``), so a scrape never waits
on NATS. Labels are bounded: partition, method (7 + OTHER), status class, check, service,
alert rule, state, severity, window, percentile. Tenant ids are not labels unless
``OPS_METRICS_TOP_TENANTS=N`` asks for the N busiest tenants' gauges.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from shared import Status, SystemView, TenantView

from .cache import ViewCache

P = "opsplane_"
# flat metric -> (metric name, help, scale): ms become seconds (Prometheus base units).
GAUGES: dict[str, tuple[str, str, float]] = {
    "db_connections_ratio": ("db_connections_ratio",
                             "Database connections in use over the maximum (server or app pool, "
                             "the higher).", 1.0),
    "db_server_connections_ratio": ("db_server_connections_ratio",
                                    "Server connections (pg_stat_activity) over max_connections.",
                                    1.0),
    "db_pool_ratio": ("db_pool_ratio", "The app's DB pool in use over its size.", 1.0),
    "db_connections": ("db_connections", "Client connections to the database server.", 1.0),
    "db_max_connections": ("db_max_connections", "The database server's max_connections.", 1.0),
    "db_size_bytes": ("db_size_bytes", "Size of the app's database.", 1.0),
    "active_timers": ("active_timers", "Running time trackers (all tenants).", 1.0),
    "ws_connections": ("ws_connections", "Open WebSocket connections of the app.", 1.0),
    "tenants_total": ("tenants", "Tenants with a view.", 1.0),
}
WINDOWED = (
    ("rate_per_s", "app_request_rate", "Requests per second over the window.", 1.0),
    ("error_ratio", "app_error_ratio", "5xx responses over all responses in the window.", 1.0),
    ("avg_ms", "app_request_duration_avg_seconds", "Average response time in the window.", 1e-3),
)
PERCENTILES = (("p50_ms", "50"), ("p95_ms", "95"), ("p99_ms", "99"))


def _gauge(name: str, help_: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(P + name, help_, labels=labels)


class ViewCollector:
    def __init__(self, cache: ViewCache, *, top_tenants: int = 0) -> None:
        self._cache = cache
        self._top = top_tenants

    def collect(self) -> Iterator[Metric]:
        view = self._cache.system
        age = self._cache.age_s()
        freshness = _gauge("status_view_age_seconds", "Age of the system view in this gateway.")
        if age is not None:
            freshness.add_metric([], age)
        yield freshness
        if view is None:
            return
        yield from self._status(view)
        yield from self._traffic(view)
        yield from self._windows(view.metrics)
        yield from self._alerts(view)
        if self._top > 0:
            yield from self._top_tenants(list(self._cache.tenants.values()))

    def _status(self, view: SystemView) -> Iterator[Metric]:
        overall = _gauge("status", "Overall status: 1 for the current one.", ["status"])
        for status in Status:
            overall.add_metric([status.value], float(view.status is status))
        yield overall
        checks = _gauge("check_status", "Status of each check: 1 for the current one.",
                        ["check", "component", "status"])
        latency = _gauge("check_latency_seconds", "Latency of each check's last probe.",
                         ["check"])
        for name, check in view.checks.items():
            for status in Status:
                checks.add_metric([name, check.component, status.value],
                                  float(check.status is status))
            if check.latency_ms is not None:
                latency.add_metric([name], check.latency_ms / 1000.0)
        yield checks
        yield latency
        services = _gauge("service_instances_alive", "Live instances of each service.",
                          ["service"])
        for name, service in view.services.items():
            services.add_metric([name], float(sum(1 for i in service.instances if i.alive)))
        yield services
        tenants = _gauge("tenants_by_status", "Tenants by status.", ["status"])
        tenants.add_metric(["warn"], view.metrics.get("tenants_warn") or 0.0)
        tenants.add_metric(["fail"], view.metrics.get("tenants_fail") or 0.0)
        yield tenants

    def _traffic(self, view: SystemView) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            P + "app_http_requests", "Requests the app served, by method and status class.",
            labels=["partition", "method", "code"],
        )
        durations = HistogramMetricFamily(
            P + "app_http_request_duration_seconds", "Response times of the app's requests.",
            labels=["partition"],
        )
        for partition, totals in sorted(view.traffic.items()):
            created = totals.started_at.timestamp()
            for key, count in sorted(totals.requests.items()):
                method, _, code = key.partition(" ")
                requests.add_metric([partition, method, code], count, created=created)
            buckets: list[tuple[str, float]] = [
                (_le(bound), float(count)) for bound, count in zip(totals.bounds_s, totals.buckets,
                                                                   strict=False)
            ]
            buckets.append(("+Inf", float(totals.count)))
            durations.add_metric([partition], buckets, totals.sum_s)
        yield requests
        yield durations

    def _windows(self, metrics: dict[str, float | None]) -> Iterator[Metric]:
        for key, (name, help_, scale) in GAUGES.items():
            value = metrics.get(key)
            if value is not None:
                family = _gauge(name, help_)
                family.add_metric([], value * scale)
                yield family
        for field, name, help_, scale in WINDOWED:
            family = _gauge(name, help_, ["window"])
            for window in ("1m", "5m"):
                value = metrics.get(f"{field}_{window}")
                if value is not None:
                    family.add_metric([window], value * scale)
            yield family
        # Gauges, not a summary: windowed percentiles from the mergeable sketch (within 5 %).
        percentiles = _gauge("app_request_duration_percentile_seconds",
                             "Response time percentiles over the window (within 5 %).",
                             ["window", "percentile"])
        for field, percentile in PERCENTILES:
            for window in ("1m", "5m"):
                value = metrics.get(f"{field}_{window}")
                if value is not None:
                    percentiles.add_metric([window, percentile], value / 1000.0)
        yield percentiles

    def _alerts(self, view: SystemView) -> Iterator[Metric]:
        counts: dict[tuple[str, str, str], int] = {}
        for alert in view.alerts:
            key = (alert.rule, alert.state, alert.severity)
            counts[key] = counts.get(key, 0) + 1
        family = _gauge("alerts", "Active alerts (scopes) by rule, state and severity.",
                        ["alertname", "state", "severity"])
        for (rule, state, severity), count in sorted(counts.items()):
            family.add_metric([rule, state, severity], float(count))
        yield family

    def _top_tenants(self, tenants: list[TenantView]) -> Iterator[Metric]:
        def rate(view: TenantView) -> float:
            return view.metrics.get("rate_per_s_1m") or 0.0

        top = sorted(tenants, key=lambda v: (-rate(v), v.tenant_id))[: self._top]
        families: list[tuple[GaugeMetricFamily, str, float]] = [
            (_gauge("tenant_request_rate", "Requests per second (1m) of the busiest tenants.",
                    ["tenant"]), "rate_per_s_1m", 1.0),
            (_gauge("tenant_error_ratio", "5xx ratio (5m) of the busiest tenants.", ["tenant"]),
             "error_ratio_5m", 1.0),
            (_gauge("tenant_request_duration_avg_seconds",
                    "Average response time (5m) of the busiest tenants.", ["tenant"]),
             "avg_ms_5m", 1e-3),
        ]
        for family, key, scale in families:
            for view in top:
                value = view.metrics.get(key)
                if value is not None:
                    family.add_metric([view.tenant_id], value * scale)
            yield family


def _le(bound: Any) -> str:
    text = f"{float(bound):.6f}".rstrip("0").rstrip(".")
    return text if "." in text else text + ".0"
