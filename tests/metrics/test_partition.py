"""Partitioned ingest on a real nats-server configured with a ``partition()`` subject mapping:
two metrics instances each own their share of tenants; partition 0 merges the global view."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import nats

from services.metrics.partition import partition_of
from shared import BatchPublisher, request_record, subjects
from tests.harness import ServiceProcess
from tests.metrics.conftest import MappedNats
from tests.metrics.test_e2e import FAST, eventually

TENANTS = [f"tenant-{i:02d}-{uuid.uuid4().hex[:4]}" for i in range(24)]


async def test_our_hash_is_the_servers_partition_function(mapped_nats: MappedNats) -> None:
    client = await nats.connect(mapped_nats.url)
    seen: dict[str, int] = {}
    done = asyncio.Event()

    async def on_part(msg: Any) -> None:
        _, _, _, part, tenant = msg.subject.split(".")
        seen[tenant] = int(part)
        if len(seen) == len(TENANTS):
            done.set()

    await client.subscribe(f"{subjects.INGEST_PARTITION_PREFIX}.*.*", cb=on_part)
    await client.flush()
    for tenant in TENANTS:
        await client.publish(subjects.ingest_requests_tenant(tenant), b"[]")
    await asyncio.wait_for(done.wait(), timeout=5)
    assert seen == {t: partition_of(t, 2) for t in TENANTS}
    assert set(seen.values()) == {0, 1}  # both partitions get tenants
    await client.close()


def test_two_instances_share_the_tenants(mapped_nats: MappedNats, logdir: Path) -> None:
    env = {"NATS_URL": mapped_nats.url, "OPS_METRICS_PARTITIONS": "2", **FAST}
    instances = [ServiceProcess("metrics", {**env, "OPS_METRICS_PARTITION": str(k),
                                            "OPS_INSTANCE": f"metrics-{k}"}, logdir)
                 for k in (0, 1)]
    try:
        for instance in instances:
            instance.start()
        asyncio.run(partitioned(mapped_nats.url, instances))
    finally:
        for instance in instances:
            instance.stop()


async def partitioned(url: str, instances: list[ServiceProcess]) -> None:
    client = await nats.connect(url)
    tenant_snapshots: dict[str, dict[str, Any]] = {}
    global_snapshots: list[dict[str, Any]] = []

    async def on_tenant(msg: Any) -> None:
        snapshot = json.loads(msg.data)
        tenant_snapshots[snapshot["tenant_id"]] = snapshot

    async def on_global(msg: Any) -> None:
        global_snapshots.append(json.loads(msg.data))

    await client.subscribe(subjects.METRICS_TENANTS, cb=on_tenant)
    await client.subscribe(subjects.METRICS_GLOBAL, cb=on_global)
    await client.flush()
    # The app side: per-tenant subjects, as partitioned ingest needs.
    publisher = BatchPublisher(client, by_tenant=True, flush_interval_s=0.05)
    await publisher.start()
    for round_ in range(10):
        for tenant in TENANTS:
            publisher.add(request_record(method="GET", route="/x", status=200,
                                         duration_ms=float(round_ + 1), tenant_id=tenant))
    publisher.add(request_record(method="GET", route="/health", status=200, duration_ms=1.0))
    total = 10 * len(TENANTS) + 1

    async def all_counted() -> bool:
        stats = [i.get("/stats").json() for i in instances]
        return sum(s["records"] for s in stats) == total

    await eventually(all_counted, timeout_s=15, message="every record in one instance")
    share = {k: 10 * sum(1 for t in TENANTS if partition_of(t, 2) == k) for k in (0, 1)}
    stats = [i.get("/stats").json() for i in instances]
    # Partition 0 also takes the unsuffixed subject (the record without a tenant).
    assert [s["records"] for s in stats] == [share[0] + 1, share[1]]
    assert [s["tenants"] for s in stats] == [share[0] // 10, share[1] // 10]

    async def every_tenant_reported() -> bool:
        return set(tenant_snapshots) >= set(TENANTS)

    await eventually(every_tenant_reported, timeout_s=10, message="a snapshot for every tenant")
    for tenant in TENANTS:
        snapshot = tenant_snapshots[tenant]
        assert snapshot["partition"] == partition_of(tenant, 2), tenant
        assert snapshot["windows"]["1m"]["count"] == 10

    async def merged() -> dict[str, Any] | None:
        for snapshot in reversed(global_snapshots):
            if snapshot["windows"]["1m"]["count"] == total:
                return snapshot
        return None

    whole = await eventually(merged, timeout_s=10, message="the merged global snapshot")
    assert whole["instance"] == "metrics-0" and whole["gauges"]["partitions_reporting"] == 2
    assert set(whole["traffic"]) == {"0", "1"}
    assert sum(t["count"] for t in whole["traffic"].values()) == total
    assert whole["windows"]["1m"]["p99_ms"] is not None  # merged from both sketches
    await publisher.stop()
    await client.close()
