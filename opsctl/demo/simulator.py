"""The demo app's background work: traffic, gauges and timers, resilient to NATS and DB outages.

Every loop survives its dependency being down: NATS is connected in the background with
unlimited reconnects (records buffer, bounded, in the ``BatchPublisher`` meanwhile), the pool is
retried until Postgres answers, and any error is logged (rate-limited) and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS
from pydantic import Field

from shared import (
    DRIVER_ERRORS,
    BatchPublisher,
    DatabaseError,
    Settings,
    create_pool,
    get_logger,
    publish_pool_gauge,
    publish_ws_gauge,
)

from .first_backup import request_first_backup
from .traffic import PROFILES, TrafficModel

log = get_logger("opsctl.demo")

GAUGE_INTERVAL_S = 2.0
TICK_S = 0.1

_START_TIMER = """
INSERT INTO time_entries (tenant_id, project_id, user_id, description, started_at)
SELECT p.tenant_id, p.id, u.id, 'Demo timer', now()
FROM projects p JOIN users u ON u.tenant_id = p.tenant_id
WHERE p.tenant_id = $1
  AND NOT EXISTS (SELECT 1 FROM time_entries t WHERE t.user_id = u.id AND t.ended_at IS NULL)
ORDER BY random() LIMIT 1
ON CONFLICT DO NOTHING
"""
# Stops the tenant's oldest running timer, but always leaves one running (the page shows them).
_STOP_TIMER = """
UPDATE time_entries SET ended_at = now()
WHERE id = (SELECT id FROM time_entries WHERE tenant_id = $1 AND ended_at IS NULL
            ORDER BY started_at LIMIT 1)
  AND (SELECT count(*) FROM time_entries WHERE tenant_id = $1 AND ended_at IS NULL) > 1
"""


class DemoSettings(Settings):
    demo_rate: float = Field(default=20.0, alias="DEMO_RATE")  # requests/s for a weight-1 tenant
    demo_pool_max: int = Field(default=10, alias="DEMO_POOL_MAX")
    # At most this many simulated requests hold a pool connection at once (in_use <= this).
    demo_db_concurrency: int = Field(default=6, alias="DEMO_DB_CONCURRENCY")
    demo_timer_interval_s: float = Field(default=3.0, alias="DEMO_TIMER_INTERVAL")
    # The local stack's signing key: the demo asks for one backup at start (first_backup.py).
    demo_signing_key: Path | None = Field(default=None, alias="DEMO_SIGNING_KEY")


class Simulator:
    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self.node = settings.instance
        self.nc = NATS()
        self.publisher = BatchPublisher(self.nc)
        self.traffic = TrafficModel(settings.demo_rate)
        self.pool: asyncpg.Pool | None = None
        self.ws_connections = 0
        self.ws_total = 0
        self._db_slots = asyncio.Semaphore(settings.demo_db_concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._last_log: dict[str, float] = {}
        self._nats_up = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self.publisher.start()
        for name, body in (
            ("nats", self._connect_nats),
            ("db", self._connect_db),
            ("traffic", self._traffic_loop),
            ("gauges", self._gauge_loop),
            ("timers", self._timer_loop),
            ("first-backup", self._first_backup),
        ):
            self._tasks.append(asyncio.create_task(self._guard(name, body), name=f"demo.{name}"))

    async def stop(self) -> None:
        for task in [*self._tasks, *self._inflight]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._inflight, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.publisher.stop(flush=True), timeout=2)
        with contextlib.suppress(Exception):
            if self.nc.is_connected:
                await asyncio.wait_for(self.nc.drain(), timeout=3)
        with contextlib.suppress(Exception):
            await self.nc.close()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), timeout=3)
            except Exception:
                self.pool.terminate()

    def stats(self) -> dict[str, Any]:
        pool = self.pool
        return {
            "node": self.node,
            "nats_connected": self.nc.is_connected,
            "db_pool": None
            if pool is None
            else {"in_use": _in_use(pool), "max": pool.get_max_size()},
            "ws_connections": self.ws_connections,
            "ws_connections_total": self.ws_total,
            "records_published": self.publisher.published,
            "records_dropped": self.publisher.dropped,
            "records_pending": self.publisher.pending,
            "batches": self.publisher.batches,
            "tenants": [p.tenant_id for p in PROFILES],
        }

    # ---- loops -------------------------------------------------------------------------
    async def _first_backup(self) -> None:
        key = self.settings.demo_signing_key
        if key is None:
            return
        private_pem = await asyncio.to_thread(key.read_bytes)
        await self._nats_up.wait()
        await request_first_backup(self.nc, private_pem, audience=self.settings.deployment)

    async def _guard(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body``; if it ever raises, log and run it again (the demo never crashes)."""
        while True:
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._warn(f"loop.{name}", "demo.loop_failed", loop=name, error=str(exc))
                await asyncio.sleep(1.0)

    async def _connect_nats(self) -> None:
        async def on_error(exc: Exception) -> None:
            self._warn("nats.error", "demo.nats_error", error=str(exc) or type(exc).__name__)

        async def on_disconnect() -> None:
            log.warning("demo.nats_disconnected")

        async def on_reconnect() -> None:
            log.info("demo.nats_reconnected")

        # max_reconnect_attempts=-1 also makes the *first* connect retry until NATS is up.
        await self.nc.connect(
            servers=self.settings.nats_servers,
            name=f"demo-app.{self.node}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=2,
            ping_interval=5,
            max_outstanding_pings=3,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        log.info("demo.nats_connected")
        self._nats_up.set()

    async def _connect_db(self) -> None:
        if self.settings.database_url is None:
            log.warning("demo.no_database", detail="DATABASE_URL unset: pool gauge and timers off")
            return
        delay = 0.5
        while self.pool is None:
            try:
                self.pool = await create_pool(
                    self.settings.database_dsn(),
                    min_size=1,
                    max_size=self.settings.demo_pool_max,
                    application_name="demo-app",
                    command_timeout_s=10,
                )
            except DatabaseError as exc:
                self._warn("db.connect", "demo.db_unavailable", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.info("demo.db_pool_ready", max_size=self.settings.demo_pool_max)

    async def _traffic_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            for record in self.traffic.tick(now - last):
                self.publisher.add(record)
                self._maybe_hit_db(record)
            last = now

    def _maybe_hit_db(self, record: dict[str, Any]) -> None:
        """A share of requests really hold a pool connection for their duration."""
        if self.pool is None or self._db_slots.locked() or not self.traffic.chance(0.3):
            return
        task = asyncio.create_task(self._db_request(min(record["duration_ms"], 1500) / 1000))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _db_request(self, seconds: float) -> None:
        assert self.pool is not None
        async with self._db_slots:
            try:
                async with self.pool.acquire(timeout=1) as conn:
                    await conn.execute("SELECT pg_sleep($1)", seconds)
            except DRIVER_ERRORS as exc:
                self._warn("db.request", "demo.db_request_failed", error=str(exc))

    async def _gauge_loop(self) -> None:
        while True:
            if self.nc.is_connected:
                try:
                    await publish_ws_gauge(
                        self.nc, node=self.node, connections=self.ws_connections
                    )
                    if self.pool is not None:
                        await publish_pool_gauge(
                            self.nc,
                            node=self.node,
                            in_use=_in_use(self.pool),
                            max_size=self.pool.get_max_size(),
                        )
                except Exception as exc:
                    self._warn("nats.gauge", "demo.gauge_failed", error=str(exc))
            await asyncio.sleep(GAUGE_INTERVAL_S)

    async def _timer_loop(self) -> None:
        tenants = [p.tenant_id for p in PROFILES]
        while True:
            await asyncio.sleep(self.settings.demo_timer_interval_s)
            if self.pool is None:
                continue
            tenant = self.traffic.pick(tenants)
            sql = _START_TIMER if self.traffic.chance(0.5) else _STOP_TIMER
            try:
                await self.pool.execute(sql, tenant, timeout=5)
            except DRIVER_ERRORS as exc:
                self._warn("db.timers", "demo.timer_update_failed", error=str(exc))

    def _warn(self, key: str, event: str, **fields: Any) -> None:
        """Log a recurring failure at most every 30 s per kind (an outage is not a log flood)."""
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= 30:
            self._last_log[key] = now
            log.warning(event, **fields)


def _in_use(pool: asyncpg.Pool) -> int:
    return int(pool.get_size() - pool.get_idle_size())
