"""Metrics end to end through real processes: app records -> metrics -> aggregator -> KV ->
gateway ``/metrics``; alerts on JetStream and in a real Alertmanager; bad input in the DLQ;
a NATS restart survived."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from shared import STATUS_BUCKET, BatchPublisher, request_record, subjects
from tests.conftest import require_tool
from tests.harness import Servers, ServiceProcess, services, wait_until
from tests.metrics.conftest import Alertmanager

FAST = {
    "OPS_METRICS_INTERVAL": "0.3",
    "OPS_METRICS_TENANT_INTERVAL": "0.3",
    "OPS_METRICS_COLLECT_INTERVAL": "0.5",
    "OPS_HEARTBEAT_INTERVAL": "0.5",
    "OPS_AGGREGATOR_TICK": "0.1",
    "OPS_EXPECTED_SERVICES": "metrics,aggregator,gateway",
}


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout_s: float, message: str
                     ) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except (NotFoundError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {message} (last: {last!r})")


async def timers_schema(database_url: str, tenants: dict[str, int]) -> str:
    schema = f"e2e_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"CREATE TABLE {schema}.time_entries (tenant_id text, ended_at "
                           "timestamptz)")
        for tenant, count in tenants.items():
            for _ in range(count):
                await conn.execute(f"INSERT INTO {schema}.time_entries VALUES ($1, NULL)", tenant)
    finally:
        await conn.close()
    return schema


def traffic(tenant: str, count: int, *, duration: float, error_every: int = 0
            ) -> list[dict[str, Any]]:
    return [request_record(method="GET" if i % 3 else "POST", route="/api/projects/{id}",
                           status=500 if error_every and i % error_every == 0 else 200,
                           duration_ms=duration, tenant_id=tenant, request_id=f"{tenant}-{i}")
            for i in range(count)]


@pytest.mark.e2e
def test_metrics_views_alerts_and_prometheus(
    servers: Servers, logdir: Path, fast_rules: Path, alertmanager: Alertmanager
) -> None:
    promtool = require_tool("promtool", "prometheus")
    run_id = uuid.uuid4().hex[:6]
    slow, calm, flaky = f"slow-{run_id}", f"calm-{run_id}", f"flaky-{run_id}"
    schema = asyncio.run(timers_schema(servers.database_url, {calm: 2, slow: 1}))
    env = servers.env(
        **FAST, OPS_ALERT_RULES=str(fast_rules), ALERTMANAGER_URL=alertmanager.url,
        OPS_ALERTMANAGER_RESEND="1", OPS_METRICS_TOP_TENANTS="2",
        OPS_ACTIVE_TIMERS_SQL=f"SELECT tenant_id, count(*) FROM {schema}.time_entries "
                              "WHERE ended_at IS NULL GROUP BY tenant_id",
    )
    try:
        with services(["metrics", "aggregator", "gateway"], env, logdir) as procs:
            asyncio.run(scenario(servers.nats.url, procs, alertmanager, slow, calm, flaky))
            exposition_checks(procs, promtool)
    finally:
        asyncio.run(drop_schema(servers.database_url, schema))


async def drop_schema(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


def exposition_checks(procs: dict[str, ServiceProcess], promtool: str) -> None:
    body = procs["gateway"].get("/metrics").text
    check = subprocess.run([promtool, "check", "metrics"], input=body.encode(),
                           capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert 'opsplane_app_http_requests_total{code="5xx",method="POST",partition="0"}' in body
    assert 'opsplane_app_http_request_duration_seconds_bucket{le="+Inf",partition="0"}' in body
    assert "opsplane_db_connections_ratio" in body and "opsplane_active_timers" in body
    assert 'opsplane_tenant_request_rate{tenant="' in body  # opted in: top 2
    assert 'opsplane_service_instances_alive{service="metrics"} 1.0' in body
    metrics_own = procs["metrics"].get("/metrics").text
    assert 'opsplane_metrics_records_rejected_total{kind="invalid"}' in metrics_own


async def scenario(url: str, procs: dict[str, ServiceProcess], am: Alertmanager, slow: str,
                   calm: str, flaky: str) -> None:
    client = await nats.connect(url)
    try:  # a failed assertion must not leak the connection into later tests' warnings
        await _scenario(client, procs, am, slow, calm, flaky)
    finally:
        await client.close()


async def _scenario(client: Client, procs: dict[str, ServiceProcess], am: Alertmanager,
                    slow: str, calm: str, flaky: str) -> None:
    js = client.jetstream()
    kv = await js.key_value(STATUS_BUCKET)
    events: list[dict[str, Any]] = []
    letters: list[dict[str, Any]] = []

    async def on_alert(msg: Any) -> None:
        events.append(json.loads(msg.data))

    async def on_dlq(msg: Any) -> None:
        letters.append(json.loads(msg.data))

    await client.subscribe(subjects.ALERTS_ALL, cb=on_alert)
    await client.subscribe(subjects.dlq("requests"), cb=on_dlq)
    await client.flush()
    publisher = BatchPublisher(client, flush_interval_s=0.05)
    await publisher.start()

    async def view(key: str) -> dict[str, Any]:
        return json.loads((await kv.get(key)).value)  # type: ignore[arg-type]

    async def feed() -> None:
        for record in (traffic(slow, 40, duration=900.0) + traffic(calm, 40, duration=20.0)
                       + traffic(flaky, 40, duration=30.0, error_every=3)):
            publisher.add(record)
        await client.publish(subjects.INGEST_REQUESTS, b"this is not json")
        await client.publish(subjects.INGEST_REQUESTS, json.dumps(
            [traffic(calm, 1, duration=1.0)[0] | {"duration_ms": -1}]).encode())

    await feed()

    async def slow_failing() -> bool:
        v = await view(f"tenant.{slow}")
        return v["status"] == "fail" and any(
            a["rule"] == "tenant_slow" and a["state"] == "firing" for a in v["alerts"])

    await eventually(slow_failing, timeout_s=20, message="the slow tenant failing")
    calm_view = await view(f"tenant.{calm}")
    assert calm_view["status"] == "pass" and calm_view["metrics"]["avg_ms_5m"] == 20.0
    assert calm_view["metrics"]["count_5m"] == 40

    async def timers_known() -> bool:
        return (await view(f"tenant.{calm}"))["metrics"]["active_timers"] == 2.0

    await eventually(timers_known, timeout_s=10, message="active timers of the calm tenant")

    async def flaky_burning() -> bool:
        v = await view(f"tenant.{flaky}")
        return any(a["rule"] == "availability_burn_1h" and a["state"] == "firing"
                   for a in v["alerts"])

    await eventually(flaky_burning, timeout_s=10, message="the flaky tenant's SLO burn alert")

    async def system_ready() -> dict[str, Any] | None:
        v = await view("system")
        rules = {(a["rule"], a["scope"]) for a in v["alerts"] if a["state"] == "firing"}
        # The system view folds tenant views on its own ticks: wait for it to catch up.
        if (slow in v["tenants"] and v["tenants"][slow]["status"] == "fail"
                and ("app_errors", "global") in rules):
            return v
        return None

    system = await eventually(system_ready, timeout_s=10, message="the system view's alerts")
    assert system["tenants"][slow]["status"] == "fail"
    assert system["metrics"]["db_connections_ratio"] is not None
    assert system["metrics"]["count_1m"] >= 120 and "0" in system["traffic"]
    assert ("tenant_slow", f"tenant.{slow}") in {(a["rule"], a["scope"]) for a in system["alerts"]}

    # Alert transitions are on JetStream, in order, and the slow tenant's is in Alertmanager.
    stored = await js.get_last_msg("OPS_EVENTS", subjects.alert("tenant_slow"))
    assert json.loads(stored.data)["state"] in ("firing", "resolved")
    mine = [e["state"] for e in events if e["scope"] == f"tenant.{slow}"
            and e["rule"] == "tenant_slow"]
    assert mine[:2] == ["pending", "firing"]

    def in_alertmanager() -> list[dict[str, Any]]:
        return [a for a in am.alerts() if a["labels"].get("tenant") == slow]  # type: ignore[union-attr]

    (sent,) = wait_until(in_alertmanager, timeout_s=10, message="the alert in Alertmanager")
    assert sent["labels"]["alertname"] == "tenant_slow" and sent["labels"]["team"] == "core"

    # Bad input went to the DLQ with its reasons; the good records of its batch were kept.
    reasons = " | ".join(letter["reason"] for letter in letters)
    assert "not JSON" in reasons and "duration_ms" in reasons

    # Recovery: fast requests bring the 1 m average under 500 ms -> resolved everywhere.
    for record in traffic(slow, 400, duration=10.0):
        publisher.add(record)

    async def slow_resolved() -> bool:
        v = await view(f"tenant.{slow}")
        return v["status"] == "pass" and not v["alerts"]

    await eventually(slow_resolved, timeout_s=20, message="the slow tenant recovering")
    assert [e["state"] for e in events if e["scope"] == f"tenant.{slow}"
            and e["rule"] == "tenant_slow"][-1] == "resolved"
    wait_until(lambda: not in_alertmanager(), timeout_s=10, message="resolved in Alertmanager")
    await publisher.stop()


@pytest.mark.e2e
def test_metrics_service_survives_a_nats_restart(private_servers: Servers, logdir: Path) -> None:
    env = private_servers.env(**FAST)
    metrics = ServiceProcess("metrics", env, logdir).start()
    try:
        tenant = f"t-{uuid.uuid4().hex[:6]}"
        asyncio.run(publish_and_wait(private_servers.nats.url, metrics, tenant, 50))
        private_servers.nats.stop()
        wait_until(lambda: metrics.get("/readyz").status_code == 503, timeout_s=10,
                   message="not ready without NATS")
        assert metrics.get("/livez").status_code == 200  # alive all along
        private_servers.nats.start()
        metrics.wait_http("/readyz", timeout_s=20)
        asyncio.run(publish_and_wait(private_servers.nats.url, metrics, tenant, 100))
        assert metrics.proc is not None and metrics.proc.poll() is None
    finally:
        metrics.stop()


async def publish_and_wait(url: str, metrics: ServiceProcess, tenant: str, total: int) -> None:
    client = await nats.connect(url)
    got: list[dict[str, Any]] = []

    async def on_snapshot(msg: Any) -> None:
        got.append(json.loads(msg.data))

    await client.subscribe(subjects.metrics_tenant(tenant), cb=on_snapshot)
    await client.flush()
    batch = traffic(tenant, 50, duration=5.0)
    await client.publish(subjects.INGEST_REQUESTS, json.dumps(batch).encode())

    async def counted() -> bool:
        return bool(got) and got[-1]["windows"]["1m"]["count"] == total

    await eventually(counted, timeout_s=15, message=f"{total} records in the tenant's window")
    assert metrics.get("/stats").json()["records"] == total
    await client.close()
