"""Snapshots folded into views (aggregator) and the views exposed to Prometheus (gateway)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest

from services.aggregator.metrics_views import MetricsFolder, status_of
from services.aggregator.tenant_views import TenantBook
from services.gateway.cache import ViewCache
from services.gateway.exposition import ViewCollector
from services.metrics.stats import full_stats, long_stats
from shared import (
    AlertEvent,
    CheckView,
    MetricSnapshot,
    ServiceView,
    Status,
    SystemView,
    TrafficTotals,
)
from tests.conftest import require_tool

NOW = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


def alert(rule: str, state: str, severity: str = "warning", scope: str = "global") -> AlertEvent:
    return AlertEvent(rule=rule, scope=scope, state=state, value=1.0, threshold=0.5,  # type: ignore[arg-type]
                      since=NOW, severity=severity, summary=f"{rule} {state}")


def tenant_snapshot(tenant: str, *, avg: float, errors: int = 0,
                    alerts: list[AlertEvent] | None = None, at: datetime = NOW) -> MetricSnapshot:
    windows = {
        "1m": full_stats("1m", 100, errors, avg * 100, {24: 100}, 1.6),
        "5m": full_stats("5m", 400, errors, avg * 400, {24: 400}, 1.4),
        "1h": long_stats("1h", 4000, errors),
    }
    return MetricSnapshot(scope=f"tenant.{tenant}", tenant_id=tenant, instance="m-1", time=at,
                          windows=windows, gauges={"active_timers": 3.0}, alerts=alerts or [])


def test_tenant_status_comes_from_firing_alerts_only() -> None:
    assert status_of([alert("a", "pending", "critical")]) == (Status.PASS, [])
    assert status_of([alert("a", "firing")])[0] is Status.WARN
    assert status_of([alert("a", "firing"), alert("b", "firing", "critical")]) == (
        Status.FAIL, ["a firing", "b firing"])


def test_snapshots_become_tenant_views_and_the_system_table() -> None:
    book = TenantBook()
    folder = MetricsFolder(book, max_tenants=2)
    folder.apply(tenant_snapshot("calm", avg=20))
    folder.apply(tenant_snapshot("slow", avg=900, alerts=[
        alert("tenant_slow", "firing", "critical", "tenant.slow")]))
    folder.apply(tenant_snapshot("meh", avg=300, errors=40, alerts=[
        alert("tenant_errors", "firing", "warning", "tenant.meh")]))
    folder.apply(tenant_snapshot("calm", avg=25, at=NOW - timedelta(seconds=30)))  # older: kept out
    slow = book.views["slow"]
    assert slow.status is Status.FAIL and slow.reasons == ["tenant_slow firing"]
    assert slow.metrics["avg_ms_5m"] == 900 and slow.metrics["active_timers"] == 3.0
    assert book.views["calm"].metrics["avg_ms_5m"] == 20
    folder.apply(MetricSnapshot(scope="global", instance="m-1", time=NOW, gauges={
        "db_connections_ratio": 0.42}, alerts=[alert("app_errors", "pending")],
        traffic={"0": TrafficTotals(started_at=NOW, requests={"GET 2xx": 5}, buckets=[5] * 16,
                                    count=5, sum_s=0.1)}))
    view = SystemView(status=Status.PASS, generated_at=NOW)
    book.contribute(view, NOW)
    assert folder.contribute(view, NOW) is None  # shown, not folded into health
    assert list(view.tenants) == ["slow", "meh"]  # worst first, capped at 2
    assert view.metrics["tenants_total"] == 3 and view.metrics["tenants_fail"] == 1
    assert view.metrics["db_connections_ratio"] == 0.42
    assert [a.rule for a in view.alerts] == ["tenant_slow", "tenant_errors", "app_errors"]
    assert view.traffic["0"].count == 5
    # Another replica's newer global metrics are taken over, older ones are not.
    other = MetricsFolder(TenantBook())
    other.merge_system(view)
    assert other.latest_global is not None
    assert other.latest_global.flat()["db_connections_ratio"] == 0.42
    assert [a.rule for a in other.latest_global.alerts] == ["app_errors"]


def system_view_for_exposition() -> SystemView:
    check = CheckView(check="postgres", component="postgres", measurement="responseTime",
                      component_type="datastore", reported=Status.PASS, status=Status.PASS,
                      observed_value=1.2, observed_unit="ms", latency_ms=1.2, time=NOW)
    totals = TrafficTotals(started_at=NOW, requests={"GET 2xx": 90, "POST 5xx": 10},
                           buckets=[0, 0, 0, 1, 5, 20, 50, 80, 95, 99, 100, 100, 100, 100, 100,
                                    100], count=100, sum_s=2.5)
    return SystemView(
        status=Status.WARN, generated_at=NOW, checks={"postgres": check},
        services={"metrics": ServiceView(name="metrics", status=Status.PASS)},
        alerts=[alert("tenant_slow", "firing", "critical", "tenant.slow"),
                alert("tenant_slow", "firing", "critical", "tenant.other")],
        metrics={"rate_per_s_1m": 12.5, "error_ratio_5m": 0.1, "avg_ms_5m": 25.0,
                 "p95_ms_5m": 80.0, "db_connections_ratio": 0.3, "active_timers": 7.0,
                 "tenants_total": 2.0, "tenants_warn": 0.0, "tenants_fail": 1.0},
        traffic={"0": totals, "1": totals},
    )


def exposition(cache: ViewCache, top: int = 0) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ViewCollector(cache, top_tenants=top))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_exposition_has_bounded_labels_and_passes_promtool() -> None:
    promtool = require_tool("promtool", "prometheus")
    book = TenantBook()
    MetricsFolder(book).apply(tenant_snapshot("slow", avg=900))
    cache = ViewCache()
    cache.system = system_view_for_exposition()
    cache.tenants = dict(book.views)
    text = exposition(cache)
    assert 'opsplane_app_http_requests_total{code="5xx",method="POST",partition="1"} 10.0' in text
    assert 'opsplane_app_http_request_duration_seconds_bucket{le="0.01",partition="0"} 50.0' in text
    assert 'opsplane_app_http_request_duration_seconds_count{partition="0"} 100.0' in text
    assert 'opsplane_alerts{alertname="tenant_slow",severity="critical",state="firing"} 2.0' in text
    assert 'opsplane_check_status{check="postgres",component="postgres",status="pass"} 1.0' in text
    assert "opsplane_db_connections_ratio 0.3" in text and "opsplane_active_timers 7.0" in text
    assert 'opsplane_app_request_duration_avg_seconds{window="5m"} 0.025' in text
    assert "tenant=" not in text and "slow" not in text.replace("tenant_slow", "")
    with_top = exposition(cache, top=5)
    assert 'opsplane_tenant_request_rate{tenant="slow"}' in with_top
    for body in (text, with_top):
        result = subprocess.run([promtool, "check", "metrics"], input=body.encode(),
                                capture_output=True, timeout=30, check=False)
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_exposition_before_any_view() -> None:
    text = exposition(ViewCache())
    assert "opsplane_status_view_age_seconds" in text and "opsplane_status{" not in text
