"""The view writer on real NATS KV: compare-and-set, merge on conflict, one event per change."""

from __future__ import annotations

import json
from datetime import timedelta

import nats

from services.aggregator.sources import SystemSource
from services.aggregator.state import SystemState
from services.aggregator.tenant_views import TenantBook
from services.aggregator.writer import ViewWriter, change_subject
from shared import (
    HealthEvent,
    Status,
    StatusChange,
    SystemView,
    TenantView,
    open_status_bucket,
    utcnow,
)
from tests.harness import Servers, eventually


def event(check: str, status: Status, at_s: float, *, critical: bool = True) -> HealthEvent:
    return HealthEvent(check=check, component=check, status=status, critical=critical,
                       time=T0 + timedelta(seconds=at_s), instance="h")


T0 = utcnow()


async def test_two_writers_never_take_back_each_others_news(fresh_views: Servers) -> None:
    client = await nats.connect(fresh_views.nats.url)
    js = client.jetstream()
    kv = await open_status_bucket(js)
    changes: list[StatusChange] = []

    async def collect(msg: nats.aio.msg.Msg) -> None:
        changes.append(StatusChange.model_validate_json(msg.data))

    sub = await client.subscribe("ops.status.>", cb=collect)

    async def publish(change: StatusChange, msg_id: str) -> None:
        await js.publish(change_subject(change), change.to_bytes(), stream="OPS_EVENTS",
                         headers={"Nats-Msg-Id": msg_id})

    state_a, state_b = SystemState(), SystemState()
    writer_a = ViewWriter(kv, publish, refresh_s=60)
    writer_b = ViewWriter(kv, publish, refresh_s=60)
    source_a, source_b = SystemSource(state_a), SystemSource(state_b)
    now = T0 + timedelta(seconds=3)

    state_a.apply_health(event("postgres", Status.PASS, 0))
    await writer_a.sync(source_a, now)
    # B never saw the postgres result; it knows about S3 failing (non-critical: warn).
    state_b.apply_health(event("s3", Status.FAIL, 1, critical=False))
    await writer_b.sync(source_b, now)
    assert writer_b.conflicts == 0  # B had never written: it read A's view first
    # A learns postgres fails; its CAS must fail (B wrote since) and merge B's news.
    state_a.apply_health(event("postgres", Status.FAIL, 2))
    await writer_a.sync(source_a, now)
    assert writer_a.conflicts == 1

    entry = await kv.get("system")
    view = SystemView.model_validate_json(entry.value)
    assert set(view.checks) == {"postgres", "s3"}
    assert view.checks["postgres"].reported is Status.FAIL
    assert view.status is Status.FAIL

    # Nothing new on either side: no writes (no churn between replicas).
    writes = writer_a.writes + writer_b.writes
    await writer_b.sync(source_b, now)
    await writer_a.sync(source_a, now)
    assert writer_a.writes + writer_b.writes == writes
    # B's refresh falls due: its CAS fails, it merges A's view instead of overwriting it.
    writer_b._refresh_s = 0.0
    await writer_b.sync(source_b, now)
    assert writer_b.conflicts == 1 and state_b.checks["postgres"].status is Status.FAIL
    view = SystemView.model_validate_json((await kv.get("system")).value)
    assert view.checks["postgres"].reported is Status.FAIL

    await client.flush()
    await eventually(lambda: len([c for c in changes if c.kind == "system"]) >= 3, timeout_s=5,
                     message="three system transitions")
    system = [(c.previous, c.status) for c in changes if c.kind == "system"]
    assert system == [(None, Status.PASS), (Status.PASS, Status.WARN), (Status.WARN, Status.FAIL)]
    checks = [(c.name, c.previous, c.status) for c in changes if c.kind == "check"]
    assert checks == [("s3", None, Status.WARN), ("postgres", Status.PASS, Status.FAIL)]
    assert len({(c.key, c.revision, c.kind, c.name) for c in changes}) == len(changes)
    await sub.unsubscribe()
    await client.close()


async def test_a_restarted_writer_seeds_from_kv_without_spurious_events(
    fresh_views: Servers,
) -> None:
    client = await nats.connect(fresh_views.nats.url)
    kv = await open_status_bucket(client.jetstream())
    published: list[StatusChange] = []

    async def publish(change: StatusChange, msg_id: str) -> None:
        published.append(change)

    first = SystemState()
    first.apply_health(event("postgres", Status.FAIL, 0))
    await ViewWriter(kv, publish).sync(SystemSource(first), T0)
    published.clear()

    restarted = SystemState()  # knows nothing yet
    writer = ViewWriter(kv, publish, refresh_s=0)
    await writer.sync(SystemSource(restarted), T0)
    assert restarted.checks["postgres"].status is Status.FAIL  # seeded from KV
    assert published == []  # nothing changed, so nothing to announce
    await client.close()


async def test_tenant_views_are_written_and_summarised_worst_first(fresh_views: Servers) -> None:
    client = await nats.connect(fresh_views.nats.url)
    kv = await open_status_bucket(client.jetstream())
    book = TenantBook()
    state = SystemState(contributors=[book])
    writer = ViewWriter(kv)
    for tenant, status in (("acme", Status.PASS), ("slowco", Status.FAIL)):
        book.upsert(TenantView(tenant_id=tenant, status=status, metrics={"p95_ms": 10.0},
                               reasons=[] if status is Status.PASS else ["error rate 5%"]))
    await writer.sync(book, utcnow())
    await writer.sync(SystemSource(state), utcnow())
    tenant = TenantView.model_validate_json((await kv.get("tenant.slowco")).value)
    assert tenant.status is Status.FAIL and tenant.reasons == ["error rate 5%"]
    system = json.loads((await kv.get("system")).value)
    assert system["status"] == "pass"  # one tenant's trouble is not the system's
    assert system["tenants"]["slowco"]["status"] == "fail"
    await client.close()
