"""Helpers to put views into KV ``ops_status`` directly (what the aggregator would write)."""

from __future__ import annotations

from datetime import timedelta

import nats

from shared import (
    CheckView,
    Status,
    SystemView,
    TenantSummary,
    TenantView,
    open_status_bucket,
    utcnow,
)


def check(name: str, status: Status, *, critical: bool = True, output: str = "fine",
          component: str | None = None, measurement: str = "responseTime") -> CheckView:
    return CheckView(check=name, component=component or name, measurement=measurement,
                     component_type="datastore", reported=status, status=status,
                     observed_value=1.5, observed_unit="ms", latency_ms=2.0, output=output,
                     time=utcnow(), critical=critical, instance="health-secret-host-1")


def system_view(*checks: CheckView, tenants: dict[str, Status] | None = None) -> SystemView:
    now = utcnow()
    return SystemView(
        status=Status.worst(c.status for c in checks),
        generated_at=now,
        checks={c.check: c for c in checks},
        tenants={t: TenantSummary(tenant_id=t, status=s, metrics={"error_rate": 0.5},
                                  updated_at=now - timedelta(seconds=1))
                 for t, s in (tenants or {}).items()},
    )


async def put_views(nats_url: str, system: SystemView | None = None,
                    tenants: list[TenantView] | None = None) -> None:
    client = await nats.connect(nats_url)
    try:
        kv = await open_status_bucket(client.jetstream())
        if system is not None:
            await kv.put("system", system.to_bytes())
        for tenant in tenants or []:
            await kv.put(f"tenant.{tenant.tenant_id}", tenant.to_bytes())
    finally:
        await client.close()
