"""The metrics subscribers with FastStream's in-memory TestNatsBroker (handler unit tests)."""

from __future__ import annotations

import json
import time
from typing import Any

from faststream.nats import NatsBroker, TestNatsBroker

from services.metrics.alerts.engine import AlertEngine
from services.metrics.alerts.outbox import AlertOutbox
from services.metrics.collectors import Collectors
from services.metrics.gauges import AppGauges
from services.metrics.handlers import Deps, build_router
from services.metrics.ingest import IngestHandler
from services.metrics.partition import Partitioning
from services.metrics.reporter import Reporter
from services.metrics.store import MetricsStore
from shared import DeadLetter, DeadLetters, MetricSnapshot, subjects


def wire(partitioning: Partitioning) -> tuple[NatsBroker, Deps, list[DeadLetter]]:
    broker = NatsBroker()
    letters: list[DeadLetter] = []

    @broker.subscriber("ops.dlq.*", stream="OPS_DLQ")
    async def dlq(body: DeadLetter) -> None:
        letters.append(body)

    async def nowhere(*args: Any, **kwargs: Any) -> None:
        return None

    store = MetricsStore()
    dead = DeadLetters(broker)
    reporter = Reporter(store=store, engine=AlertEngine([]), outbox=AlertOutbox(nowhere),
                        collectors=Collectors(None, "", owns=partitioning.owns,
                                              server_wide=True),
                        app_gauges=AppGauges(), partitioning=partitioning, instance="t",
                        interval_s=1.0, publish=nowhere)
    deps = Deps(IngestHandler(store, dead), reporter, partitioning, dead)
    broker.include_router(build_router(deps))
    return broker, deps, letters


GOOD = {"ts": time.time(), "tenant_id": "acme", "method": "GET", "route": "/x", "status": 200,
        "duration_ms": 3.0}


async def test_good_records_are_kept_and_bad_input_goes_to_the_dlq() -> None:
    broker, deps, letters = wire(Partitioning())
    async with TestNatsBroker(broker) as test:
        await test.publish(json.dumps([GOOD, {**GOOD, "duration_ms": -5}, GOOD]).encode(),
                           subjects.INGEST_REQUESTS)
        await test.publish(b"{nope", subjects.ingest_requests_tenant("acme"))
        await test.publish(json.dumps({**GOOD, "ts": time.time() + 86_400}).encode(),
                           subjects.INGEST_REQUESTS, headers={"X-Request-ID": "r-9",
                                                              "Authorization": "Bearer s3cret"})
        await test.publish(json.dumps(GOOD).encode(), subjects.ingest_requests_tenant("acme"))
    assert deps.ingest.store.records == 3
    assert deps.ingest.batches == 4 and deps.ingest.rejected == 3
    negative, not_json, future = letters
    assert negative.origin == "requests" and negative.reason.startswith("1 bad records: [1]")
    assert json.loads(negative.body) == [{**GOOD, "duration_ms": -5}]
    assert not_json.subject == "ops.ingest.requests.acme" and "not JSON" in not_json.reason
    assert "ts" in future.reason and future.headers["X-Request-ID"] == "r-9"
    assert "Authorization" not in future.headers  # secrets never reach the DLQ


async def test_a_partition_listens_to_its_share_and_the_owner_merges() -> None:
    broker, deps, _ = wire(Partitioning(partition=0, partitions=2))
    partial = MetricSnapshot(scope="partition.1", instance="other", partition=1, partitions=2)
    async with TestNatsBroker(broker) as test:
        await test.publish(json.dumps([GOOD]).encode(), "ops.ingest.part.0.acme")
        await test.publish(json.dumps([GOOD]).encode(), subjects.INGEST_REQUESTS)
        await test.publish(partial.to_bytes(), subjects.metrics_partition(1))
        await test.publish(b"{}", subjects.INGEST_POOL)  # bad gauge: DLQ, no crash
        await test.publish(json.dumps({"ts": time.time(), "node": "n1", "in_use": 8,
                                       "max": 10}).encode(), subjects.INGEST_POOL)
    assert deps.ingest.store.records == 2
    assert 1 in deps.reporter._partials
    assert deps.reporter.app_gauges.values()["db_pool_ratio"] == 0.8
