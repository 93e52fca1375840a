"""The aggregator bench's input: what a metrics service and the probes publish for N tenants.

- every tenant's snapshot every ``tenant_interval_s`` (15 s: ~670/s for 10,000 tenants), in
  small batches every 50 ms, tenants taking turns as the metrics service does;
  ``active_share`` of the tenants have traffic (their key metrics change every snapshot), the
  others only a constant active-timers gauge (same content, a newer time);
- everyone at once when the run starts (a fresh aggregator meeting 10,000 tenants);
- every ``burst_every_s``, ``burst`` tenants at once with a critical alert firing (an incident),
  resolved at the next burst;
- a global snapshot every 5 s and a few health checks every 5 s (what the system view shows).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from nats.aio.client import Client

from services.metrics.stats import full_stats, long_stats
from shared import AlertEvent, HealthEvent, MetricSnapshot, Status, subjects, utcnow

CHECKS = ("postgres", "s3", "nats", "websocket")
BATCH_S = 0.05


def tenant_name(n: int) -> str:
    return f"tenant-{n:05d}"


def template(tenant: str) -> dict[str, Any]:
    windows = {
        "1m": full_stats("1m", 120, 1, 120 * 40.0, {24: 60, 30: 60}, 2.0),
        "5m": full_stats("5m", 600, 3, 600 * 42.0, {24: 300, 30: 300}, 2.0),
        "1h": long_stats("1h", 7200, 20),
    }
    snapshot = MetricSnapshot(scope=f"tenant.{tenant}", tenant_id=tenant, instance="bench-m",
                              windows=windows, gauges={"active_timers": 3.0}, interval_s=15.0)
    return snapshot.model_dump(mode="json")


@dataclass
class Load:
    tenants: int
    tenant_interval_s: float = 15.0
    active_share: float = 0.7
    burst: int = 3_000
    burst_every_s: float = 20.0
    seed: int = 7
    published: int = 0
    bursts: int = 0
    _templates: list[dict[str, Any]] = field(default_factory=list)
    _firing: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._templates = [template(tenant_name(n)) for n in range(self.tenants)]

    def snapshot(self, n: int) -> bytes:
        body = self._templates[n]
        now = utcnow()
        body["time"] = now.isoformat()
        if n < self.active_share * self.tenants:  # traffic: the windows move
            minute = body["windows"]["1m"]
            minute["count"] = count = self._rng.randint(60, 240)
            minute["rate_per_s"] = round(count / 60, 4)
            body["windows"]["5m"]["avg_ms"] = round(self._rng.uniform(20, 80), 3)
        body["alerts"] = [self._alert(n, now)] if n in self._firing else []
        return json.dumps(body).encode()

    def _alert(self, n: int, now: Any) -> dict[str, Any]:
        tenant = tenant_name(n)
        alert = AlertEvent(rule="tenant_high_latency", scope=f"tenant.{tenant}", state="firing",
                           value=900.0, threshold=500.0, since=now - timedelta(minutes=2),
                           severity="critical", summary=f"{tenant} answers in 900 ms")
        return alert.model_dump(mode="json")

    async def publish(self, client: Client, tenants: list[int]) -> None:
        for n in tenants:
            await client.publish(subjects.metrics_tenant(tenant_name(n)), self.snapshot(n))
        self.published += len(tenants)

    async def system_inputs(self, client: Client, beat: int) -> None:
        for check in CHECKS:
            event = HealthEvent(check=check, component=check, status=Status.PASS,
                                observed_value=1.0 + beat % 7, observed_unit="ms",
                                instance="bench-health", interval_s=5.0)
            await client.publish(subjects.health(check), event.to_bytes())
        snapshot = MetricSnapshot(scope="global", instance="bench-m", gauges={
            "db_connections_ratio": 0.3 + (beat % 5) / 100, "active_timers": 3.0 * self.tenants})
        await client.publish(subjects.metrics_global(), snapshot.to_bytes())

    async def run(self, client: Client, duration_s: float) -> None:
        """Publish for ``duration_s``: everyone first, then the steady rate and the bursts."""
        started = time.monotonic()
        await self.system_inputs(client, 0)
        if self.tenants:
            await self.publish(client, list(range(self.tenants)))
        next_system, next_burst, cursor, owed = 5.0, self.burst_every_s, 0, 0.0
        while (elapsed := time.monotonic() - started) < duration_s:
            if elapsed >= next_system:
                await self.system_inputs(client, int(elapsed))
                next_system += 5.0
            if self.tenants and elapsed >= next_burst:
                await self._burst(client)
                next_burst += self.burst_every_s
            if self.tenants:
                owed += self.tenants / self.tenant_interval_s * BATCH_S
                due = [(cursor + i) % self.tenants for i in range(int(owed))]
                cursor, owed = (cursor + len(due)) % self.tenants, owed - len(due)
                await self.publish(client, due)
            await client.flush()
            await asyncio.sleep(BATCH_S)

    async def _burst(self, client: Client) -> None:
        """An incident: ``burst`` tenants fire a critical alert at once (the last ones resolve)."""
        resolved = self._firing
        self._firing = set(self._rng.sample(range(self.tenants), min(self.burst, self.tenants)))
        await self.publish(client, sorted(resolved | self._firing))
        self.bursts += 1
