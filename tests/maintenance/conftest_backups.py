"""Fixtures of the backup engine's tests (imported by tests/maintenance/test_backup_*.py).

Real servers only: the session's PostgreSQL (databases of our own per module) and moto S3.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aioboto3
import asyncpg
import pytest
from aiobotocore.config import AioConfig

from services.maintenance.backups import (
    BackupCatalog,
    BackupResult,
    CatalogEntry,
    ProgressCallback,
    PruneResult,
    RestoreResult,
    RetentionPolicy,
    VerifyResult,
    create_backup,
    prune_backups,
    restore_backup,
    verify_backup,
)
from services.maintenance.backups.verify import Mode
from shared import Progress, create_pool, load_migrations, migrate
from tests.harness import BUCKET, Servers

CATALOG_MIGRATIONS = (1, 3)  # ops schema basics + the backup catalog (no other helper's files)

APP_SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 50) g;
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers (id),
    amount numeric(10, 2) NOT NULL
);
INSERT INTO orders (customer_id, amount)
    SELECT 1 + g % 50, g * 1.5 FROM generate_series(1, 120) g;
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text);
INSERT INTO billing.invoices (note) SELECT 'n' || g FROM generate_series(1, 7) g;
CREATE TABLE "Mixed Case" (x int);
INSERT INTO "Mixed Case" VALUES (1), (2), (3);
CREATE TABLE empty_table (id int);
CREATE TABLE events (id int, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO events SELECT g, date '2024-06-01' + g * 20 FROM generate_series(1, 12) g;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 100;
"""

APP_COUNTS = {
    "public.customers": 50,
    "public.orders": 120,
    "billing.invoices": 7,
    "public.Mixed Case": 3,
    "public.empty_table": 0,
    "public.events_2024": 10,
    "public.events_2025": 2,
}


def dsn_of(servers: Servers, database: str) -> str:
    return urlunsplit(urlsplit(servers.database_url)._replace(path=f"/{database}"))


async def create_database(servers: Servers, name: str, sql: str = "") -> str:
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = dsn_of(servers, name)
    if sql:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
    return dsn


async def drop_database(servers: Servers, name: str) -> None:
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def database_names(servers: Servers, like: str) -> list[str]:
    admin = await asyncpg.connect(servers.database_url)
    try:
        rows = await admin.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", like)
    finally:
        await admin.close()
    return sorted(r["datname"] for r in rows)


@pytest.fixture(scope="module")
async def catalog_dsn(servers: Servers) -> AsyncIterator[str]:
    """A database holding the ops schema with the backup catalog (the worker's own state)."""
    name = f"bk_ops_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(servers, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, [m for m in load_migrations() if m.version in CATALOG_MIGRATIONS])
    finally:
        await conn.close()
    yield dsn
    await drop_database(servers, name)


@pytest.fixture(scope="module")
async def catalog_pool(catalog_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(catalog_dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture()
async def catalog(catalog_pool: asyncpg.Pool) -> BackupCatalog:
    await catalog_pool.execute("TRUNCATE ops.backups")
    return BackupCatalog(catalog_pool)


@pytest.fixture(scope="module")
async def app_db(servers: Servers) -> AsyncIterator[str]:
    """A small application database: several schemas, a partitioned table, a view."""
    name = f"bk_app_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(servers, name, APP_SCHEMA)
    yield dsn
    await drop_database(servers, name)


def s3_client(endpoint_url: str, **config: Any) -> Any:
    return aioboto3.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        config=AioConfig(**config) if config else None,
    )


@pytest.fixture(scope="module")
async def s3(servers: Servers) -> AsyncIterator[Any]:
    async with s3_client(servers.s3.url) as client:
        yield client


@pytest.fixture()
def prefix() -> str:
    """A key prefix of this test's own in the shared bucket."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def bucket() -> str:
    return BUCKET


async def keys_under(s3: Any, prefix: str) -> list[str]:
    response = await s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in response.get("Contents", []))


async def uploads_under(s3: Any, prefix: str) -> list[str]:
    response = await s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    return [u["Key"] for u in response.get("Uploads", [])]


async def get_bytes(s3: Any, key: str) -> bytes:
    response = await s3.get_object(Bucket=BUCKET, Key=key)
    async with response["Body"] as body:
        data: bytes = await body.read()
    return data


@dataclass
class ProgressLog:
    """A progress callback that records every call; ``hook`` runs on each (may act mid-job)."""

    calls: list[tuple[Progress, str]] = field(default_factory=list)
    hook: Callable[[Progress, str], Awaitable[None]] | None = None

    async def __call__(self, progress: Progress, message: str) -> None:
        self.calls.append((progress, message))
        if self.hook is not None:
            await self.hook(progress, message)


def new_job_id() -> str:
    return str(uuid.uuid4())


async def failed_job(catalog: BackupCatalog, job_id: str) -> CatalogEntry:
    """The catalog row of ``job_id``, asserted to be there and ``failed``."""
    row = await catalog.get_job(job_id)
    assert row is not None and row.status == "failed", row
    return row


# The engine's calls with the tests' defaults: BUCKET, a fresh job id, no label, a ProgressLog and
# a cancel event nobody sets. A keyword given overrides its default; any other keyword (part_size,
# pg_bin_dir, clock, replace, ...) goes through to the engine as it is.


async def make_backup(
    dsn: str,
    s3: Any,
    catalog: BackupCatalog,
    prefix: str,
    *,
    bucket: str = BUCKET,
    job_id: str | None = None,
    label: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: asyncio.Event | None = None,
    **options: Any,
) -> BackupResult:
    return await create_backup(
        dsn=dsn,
        s3=s3,
        bucket=bucket,
        prefix=prefix,
        job_id=new_job_id() if job_id is None else job_id,
        label=label,
        progress=ProgressLog() if progress is None else progress,
        cancel=asyncio.Event() if cancel is None else cancel,
        catalog=catalog,
        **options,
    )


async def run_verify(
    servers: Servers,
    s3: Any,
    catalog: BackupCatalog,
    key: str | None,
    mode: Mode,
    *,
    job_id: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: asyncio.Event | None = None,
    **options: Any,
) -> VerifyResult:
    return await verify_backup(
        dsn=servers.database_url,
        s3=s3,
        bucket=BUCKET,
        key=key,
        mode=mode,
        job_id=new_job_id() if job_id is None else job_id,
        progress=ProgressLog() if progress is None else progress,
        cancel=asyncio.Event() if cancel is None else cancel,
        catalog=catalog,
        **options,
    )


async def run_restore(
    servers: Servers,
    s3: Any,
    catalog: BackupCatalog,
    key: str,
    database: str,
    **options: Any,
) -> RestoreResult:
    return await restore_backup(
        dsn=servers.database_url,
        s3=s3,
        bucket=BUCKET,
        key=key,
        database=database,
        job_id=new_job_id(),
        progress=ProgressLog(),
        cancel=asyncio.Event(),
        catalog=catalog,
        **options,
    )


async def run_prune(
    s3: Any,
    catalog: BackupCatalog,
    policy: RetentionPolicy,
    *,
    dry_run: bool,
    now: datetime,
) -> PruneResult:
    return await prune_backups(
        s3=s3, bucket=BUCKET, catalog=catalog, policy=policy, dry_run=dry_run, now=now
    )
