"""The view tick: every ``tick_s``, ``system`` first (when it changed or is due its refresh),
then at most ``tenant_views_per_tick`` changed tenant views.

The tick runs at a fixed rate (not "sleep after the work"), so ``system`` is checked every
``tick_s`` whatever the work took, and the writer's refresh (due one tick early) keeps its KV
copy no older than ``refresh_s``. A batch of tenant views that is not done when the next tick
is due (NATS slow, a burst of snapshots keeping the loop busy) carries on beside it: that tick
writes ``system`` and starts no new batch. A tick that overruns anyway starts the next one at
once and does not try to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Gauge, Histogram

from shared import utcnow

from .sources import SystemSource
from .tenant_views import TenantBook
from .writer import ViewWriter

VIEW_TICK = Histogram(
    "opsplane_view_tick_seconds", "Wall time of one view tick's work (system, changed tenants).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
TENANT_BACKLOG = Gauge(
    "opsplane_tenant_views_dirty", "Tenant views changed and not yet written to KV.",
)


class TickSettings(Protocol):
    @property
    def tick_s(self) -> float: ...
    @property
    def tenant_refresh_s(self) -> float: ...
    @property
    def tenant_views_per_tick(self) -> int: ...


@dataclass(frozen=True)
class Tick:
    """What one tick did: wall and CPU seconds (system, then waiting for the tenant batch),
    tenant keys looked at by a batch that ended in this tick, the backlog after it."""

    wall_s: float
    cpu_s: float  # this thread's CPU, including what the loop ran during the tick's awaits
    tenants: int
    backlog: int


async def view_ticks(views: ViewWriter, system: SystemSource, tenants: TenantBook,
                     settings: TickSettings, on_tick: Callable[[Tick], None] | None = None,
                     ) -> None:
    loop = asyncio.get_running_loop()
    next_tick = loop.time()
    batch: asyncio.Task[int] | None = None
    try:
        while True:
            wall, cpu = time.perf_counter(), time.thread_time()
            now = utcnow()
            await views.sync(system, now)
            if batch is None:
                batch = asyncio.create_task(views.sync(
                    tenants, now, limit=settings.tenant_views_per_tick,
                    refresh_s=settings.tenant_refresh_s))
            next_tick += settings.tick_s
            await asyncio.wait({batch}, timeout=max(0.0, next_tick - loop.time()))
            looked = 0
            if batch.done():
                looked, batch = batch.result(), None
            tick = Tick(time.perf_counter() - wall, time.thread_time() - cpu, looked,
                        tenants.dirty_count)
            VIEW_TICK.observe(tick.wall_s)
            TENANT_BACKLOG.set(tick.backlog)
            if on_tick is not None:
                on_tick(tick)
            delay = next_tick - loop.time()
            if delay < 0:  # overran: start the next tick now, no catch-up burst
                next_tick, delay = loop.time(), 0.0
            await asyncio.sleep(delay)
    finally:
        if batch is not None:
            batch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batch
