"""Tenant views at scale: only changed tenants are written, a bounded number per tick, and a
failed write is retried once NATS is back (real nats-server KV throughout)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.kv import KeyValue

from services.aggregator.main import AggregatorSettings
from services.aggregator.metrics_views import MetricsFolder
from services.aggregator.sources import SystemSource
from services.aggregator.state import SystemState
from services.aggregator.tenant_views import TenantBook
from services.aggregator.ticks import view_ticks
from services.aggregator.writer import ViewSource, ViewWriter
from shared import (
    Status,
    TenantView,
    ensure_jetstream,
    open_status_bucket,
    tenant_key,
    utcnow,
)
from tests.harness import Servers, eventually

T0 = utcnow()


def tenant(name: str, status: Status = Status.PASS, *, at_s: float = 0.0,
           avg_ms: float = 20.0) -> TenantView:
    return TenantView(tenant_id=name, status=status, generated_at=T0 + timedelta(seconds=at_s),
                      metrics={"avg_ms_5m": avg_ms}, reasons=[] if status is Status.PASS else ["x"])


@contextlib.asynccontextmanager
async def bucket(url: str, **options: Any) -> AsyncIterator[tuple[Client, KeyValue]]:
    client = await nats.connect(url, **options)
    try:
        js = client.jetstream(timeout=1.0)
        await ensure_jetstream(js)
        yield client, await open_status_bucket(js)
    finally:
        await client.close()


async def revision(kv: KeyValue, key: str) -> int:
    entry = await kv.get(key)
    assert entry.revision is not None
    return entry.revision


async def stored(kv: KeyValue, key: str) -> TenantView:
    value = (await kv.get(key)).value
    assert value is not None
    return TenantView.model_validate_json(value)


def test_the_book_tracks_changes_oldest_first() -> None:
    book = TenantBook()
    assert book.upsert(tenant("a")) and book.upsert(tenant("b"))
    assert not book.upsert(tenant("a", at_s=-1))  # older than what we hold: no change
    first = book.version("tenant.a")
    book.upsert(tenant("a", Status.WARN, at_s=1))  # changed again: keeps its place in line
    assert list(book.pending()) == ["tenant.a", "tenant.b"]
    book.settle("tenant.a", first)  # KV got the older version only: still dirty
    assert book.dirty_count == 2
    book.retry_later("tenant.a")  # a failed write goes behind the others
    assert list(book.pending()) == ["tenant.b", "tenant.a"]
    book.settle("tenant.a", book.version("tenant.a"))
    book.forget("b")
    assert book.dirty_count == 0 and list(book.views) == ["a"]


async def test_unchanged_tenants_are_not_rewritten_and_a_change_is_written_next_tick(
    fresh_views: Servers,
) -> None:
    async with bucket(fresh_views.nats.url) as (_, kv):
        book = TenantBook()
        writer = ViewWriter(kv, refresh_s=0.0)  # even with every refresh due at once
        for name in ("a", "b", "c"):
            book.upsert(tenant(name))
        assert await writer.sync(book, utcnow()) == 3
        assert writer.writes == 3 and book.dirty_count == 0
        before = {name: await revision(kv, tenant_key(name)) for name in "abc"}
        for _ in range(5):  # ticks with nothing new: nothing looked at, nothing written
            assert await writer.sync(book, utcnow(), refresh_s=60.0) == 0
        assert writer.writes == 3

        book.upsert(tenant("b", Status.FAIL, at_s=1))
        await writer.sync(book, utcnow(), refresh_s=60.0)
        assert writer.writes == 4
        written = await stored(kv, "tenant.b")
        assert written.status is Status.FAIL
        after = {name: await revision(kv, tenant_key(name)) for name in "abc"}
        assert after["a"] == before["a"] and after["c"] == before["c"]
        assert after["b"] > before["b"]

        # A newer snapshot saying the same: no write until the KV copy is refresh_s old.
        book.upsert(tenant("b", Status.FAIL, at_s=2))
        await writer.sync(book, utcnow(), refresh_s=60.0)
        assert writer.writes == 4 and book.dirty_count == 0
        book.upsert(tenant("b", Status.FAIL, at_s=3))
        await writer.sync(book, utcnow(), refresh_s=0.0)
        assert writer.writes == 5
        stamp = (await stored(kv, "tenant.b")).generated_at
        assert stamp == T0 + timedelta(seconds=3)


class ChangingDuringWrite:
    """A KV where a newer view arrives while an update is in flight."""

    def __init__(self, kv: KeyValue, book: TenantBook, newer: TenantView) -> None:
        self._kv, self._book, self._newer = kv, book, newer

    async def get(self, key: str) -> Any:
        return await self._kv.get(key)

    async def create(self, key: str, value: bytes) -> int:
        return int(await self._kv.create(key, value))

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        self._book.upsert(self._newer)
        return int(await self._kv.update(key, value, last=last))


async def test_a_change_during_the_write_keeps_the_key_dirty(fresh_views: Servers) -> None:
    async with bucket(fresh_views.nats.url) as (_, kv):
        book = TenantBook()
        book.upsert(tenant("a"))
        await ViewWriter(kv).sync(book, utcnow())
        book.upsert(tenant("a", Status.WARN, at_s=1))
        racing = ChangingDuringWrite(kv, book, tenant("a", Status.FAIL, at_s=2))
        writer = ViewWriter(racing)
        await writer.sync(book, utcnow())
        assert book.dirty_count == 1  # what KV holds (warn) is not what we know (fail)
        await ViewWriter(kv).sync(book, utcnow())
        view = await stored(kv, "tenant.a")
        assert view.status is Status.FAIL and book.dirty_count == 0


def fast_settings(**extra: Any) -> AggregatorSettings:
    values: dict[str, Any] = {"OPS_AGGREGATOR_TICK": 0.05, "OPS_VIEW_REFRESH": 0.3,
                              "OPS_TENANT_VIEW_REFRESH": 60.0, **extra}
    return AggregatorSettings(**values)


async def test_a_failed_write_stays_dirty_until_nats_is_back(private_servers: Servers) -> None:
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    server = private_servers.nats
    async with bucket(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                      reconnected_cb=on_reconnect) as (client, kv):
        book, settings = TenantBook(), fast_settings()
        state = SystemState(contributors=[book])
        writer = ViewWriter(kv, refresh_s=settings.refresh_s, tick_s=settings.tick_s)
        book.upsert(tenant("a"))
        ticks = asyncio.create_task(view_ticks(writer, SystemSource(state), book, settings))
        try:
            await eventually(lambda: book.dirty_count == 0, timeout_s=10, message="first write")
            written = writer.writes
            await asyncio.to_thread(server.stop)
            book.upsert(tenant("a", Status.FAIL, at_s=1))
            book.upsert(tenant("b", Status.WARN, at_s=1))
            await eventually(lambda: writer.failures >= 3, timeout_s=20,
                             message="writes failing while NATS is down")
            assert book.dirty_count == 2  # nothing was lost: both still wait for KV
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(reconnected.wait(), timeout=20)
            await eventually(lambda: book.dirty_count == 0, timeout_s=20,
                             message="the dirty tenants written once NATS is back")
            assert writer.writes >= written + 2
        finally:
            ticks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticks
        assert client.is_connected
        view = await stored(kv, "tenant.a")
        assert view.status is Status.FAIL
        other = await stored(kv, "tenant.b")
        assert other.status is Status.WARN


class BatchLog(ViewWriter):
    """Records every ``sync``: its source, the keys it looked at and the views it wrote (a
    tenant batch may run beside the next tick's ``system`` sync, so writes are counted by key)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[tuple[str, int, int]] = []  # (source, keys looked at, writes)
        self.written = {"system": 0, "tenants": 0}

    async def _cas(self, key: str, value: bytes, revision: int | None) -> int:
        written = await super()._cas(key, value, revision)
        self.written["system" if key == "system" else "tenants"] += 1
        return written

    async def sync(self, source: ViewSource, *args: Any, **kwargs: Any) -> int:
        name = "system" if isinstance(source, SystemSource) else "tenants"
        before = self.written[name]
        looked = await super().sync(source, *args, **kwargs)
        self.batches.append((name, looked, self.written[name] - before))
        return looked


async def test_a_burst_drains_over_ticks_while_system_keeps_being_refreshed(
    fresh_views: Servers,
) -> None:
    burst, cap = 1_000, 100
    async with bucket(fresh_views.nats.url) as (_, kv):
        book, settings = TenantBook(), fast_settings(OPS_TENANT_VIEWS_PER_TICK=cap)
        state = SystemState(contributors=[book, MetricsFolder(book)])
        writer = BatchLog(kv, refresh_s=settings.refresh_s, tick_s=settings.tick_s)
        for n in range(burst):
            book.upsert(tenant(f"t{n:05d}", avg_ms=float(n)))

        def system_writes_after_drain() -> int:
            drained = [i for i, (name, looked, _) in enumerate(writer.batches)
                       if name == "tenants" and looked]
            after = writer.batches[drained[-1] + 1:] if drained else []
            return sum(1 for name, _, w in after if name == "system" and w)

        loop = asyncio.create_task(view_ticks(writer, SystemSource(state), book, settings))
        try:
            await eventually(lambda: book.dirty_count == 0 and system_writes_after_drain() >= 2,
                             timeout_s=30, message="burst drained, then system refreshed twice")
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        assert writer.batches[0][0] == "system"  # the first tick wrote system first
        batches = [(looked, w) for name, looked, w in writer.batches
                   if name == "tenants" and looked]
        assert [looked for looked, _ in batches] == [cap] * (burst // cap)
        assert sum(w for _, w in batches) == burst
        assert len(await kv.keys()) == burst + 1
        # One system sync a tick, drain or not; written on its refresh, never more than
        # refresh/tick ticks apart (due one tick early, checked every tick).
        system = [w for name, _, w in writer.batches if name == "system"]
        written = [i for i, w in enumerate(system) if w]
        assert written[0] == 0 and len(written) >= 3
        assert max(b - a for a, b in itertools.pairwise(written)) <= round(
            settings.refresh_s / settings.tick_s)
