"""Support for the tenant-graph, backfill and purge tests (no tests here): a fresh database of
each test's own with the demo app's schema and seed, and an ``ActionContext`` that records the
progress it is sent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from opsctl.demo.schema import load_demo
from services.maintenance.actions import ActionContext
from services.maintenance.tenancy import BatchConfig
from shared import Progress, connect, migrate
from tests.harness import Servers

from .conftest import create_database, drop_database

APP_TABLES = ("tenants", "users", "projects", "project_members", "time_entries",
              "time_entry_comments")
CHILDREN_WITH_NULLS = ("project_members", "time_entries", "time_entry_comments")
FAST = BatchConfig(lock_timeout_s=0.2, throttle_s=0.0, retry_base_s=0.05, retry_max_s=0.2)


@pytest.fixture()
async def demo_db(servers: Servers) -> AsyncIterator[str]:
    """A migrated database with the demo app loaded (schema.sql + seed.sql)."""
    dsn = await create_database(servers.database_url)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await load_demo(conn)
    finally:
        await conn.close()
    yield dsn
    await drop_database(servers.database_url, dsn)


class NoJobs:
    async def cancel(self, job_id: str, *, by: str) -> str:
        raise AssertionError("not used")

    async def wait_terminal(self, job_id: str, timeout_s: float) -> str | None:
        raise AssertionError("not used")


@dataclass
class Recorder:
    """Progress sent by a handler; ``on_report`` may act on it (e.g. cancel after N)."""

    events: list[tuple[Progress, str]] = field(default_factory=list)
    on_report: Callable[[Progress, str], Awaitable[None]] | None = None

    async def __call__(self, progress: Progress, message: str) -> None:
        self.events.append((progress, message))
        if self.on_report is not None:
            await self.on_report(progress, message)

    @property
    def messages(self) -> list[str]:
        return [m for _, m in self.events]


@asynccontextmanager
async def context(dsn: str, action: str, *, extras: dict[str, Any] | None = None,
                  recorder: Recorder | None = None,
                  job_id: str | None = None) -> AsyncIterator[ActionContext]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)

    @asynccontextmanager
    async def dedicated() -> AsyncIterator[asyncpg.Connection]:
        async with connect(dsn) as conn:
            yield conn

    try:
        yield ActionContext(
            job_id=job_id or str(uuid.uuid4()), action=action, pool=pool, connect=dedicated,
            cancel_event=asyncio.Event(), report=recorder or Recorder(), jobs=NoJobs(),
            extras={"tenancy_config": FAST, **(extras or {})},
        )
    finally:
        await pool.close()


async def counts(dsn: str, where: str = "true") -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t} WHERE {where}"))
                for t in APP_TABLES}
    finally:
        await conn.close()


async def nulls(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t} WHERE tenant_id IS NULL"))
                for t in APP_TABLES if t != "tenants"}
    finally:
        await conn.close()
