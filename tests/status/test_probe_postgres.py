"""PostgreSQL probes against a real server: up, saturation, down, slow, misconfigured, backups."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.health.probe import ProbeConfig, run_once
from services.health.probes.backups import BackupsProbe
from services.health.probes.postgres import PostgresConnectionsProbe, PostgresProbe
from shared import Status
from tests.status.fakes import blackhole

FAST = ProbeConfig(interval_s=1, timeout_s=1.5)


def with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


async def test_up_reports_select_1_latency(database_url: str) -> None:
    event = await run_once(PostgresProbe(database_url, FAST), "t")
    assert event.status is Status.PASS, event.output
    assert event.component == "postgres" and event.measurement == "responseTime"
    assert event.observed_unit == "ms" and event.observed_value is not None
    assert "SELECT 1" in event.output and "connect" in event.output


async def test_slower_than_warn_ms_is_warn(database_url: str) -> None:
    config = FAST.model_copy(update={"warn_ms": 0.000001})
    event = await run_once(PostgresProbe(database_url, config), "t")
    assert event.status is Status.WARN and "slower than" in event.output


async def test_down_fails_fast_without_leaking_the_password() -> None:
    with blackhole() as port:
        pass  # the port is free again: nothing listens there now
    dsn = f"postgresql://ops:hunter2@127.0.0.1:{port}/app"
    event = await run_once(PostgresProbe(dsn, FAST), "t")
    assert event.status is Status.FAIL
    assert event.latency_ms is not None and event.latency_ms < 1500
    assert "hunter2" not in event.output


async def test_a_server_that_hangs_times_out() -> None:
    with blackhole() as port:
        dsn = f"postgresql://ops@127.0.0.1:{port}/app"
        event = await run_once(PostgresProbe(dsn, ProbeConfig(timeout_s=0.5)), "t")
    assert event.status is Status.FAIL
    assert "tim" in event.output.lower()  # "timed out" (ours) or TimeoutError (the driver's)
    assert event.latency_ms is not None and event.latency_ms < 1200


async def test_misconfigured_database_name_fails_with_the_reason(database_url: str) -> None:
    dsn = with_database(database_url, "no_such_database").replace(
        "postgres@", "postgres:s3cret-pw@"
    )
    event = await run_once(PostgresProbe(dsn, FAST), "t")
    assert event.status is Status.FAIL
    assert "no_such_database" in event.output and "does not exist" in event.output
    assert "s3cret-pw" not in event.output


async def test_connection_saturation_counts_client_sessions(database_url: str) -> None:
    probe = PostgresConnectionsProbe(database_url, FAST.model_copy(update={"warn_at": 80}))
    before = await run_once(probe, "t")
    assert before.status is Status.PASS, before.output
    assert before.observed_unit == "%" and before.measurement == "connections"
    held = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        during = await run_once(probe, "t")
        assert during.observed_value is not None and before.observed_value is not None
        assert during.observed_value > before.observed_value
        assert "max_connections 200" in during.output
        strict = PostgresConnectionsProbe(database_url, FAST.model_copy(update={"warn_at": 0.5}))
        assert (await run_once(strict, "t")).status is Status.WARN
        failing = PostgresConnectionsProbe(database_url, FAST.model_copy(update={"fail_at": 0.5}))
        assert (await run_once(failing, "t")).status is Status.FAIL
    finally:
        for conn in held:
            await conn.close()


async def test_connection_saturation_down() -> None:
    with blackhole() as port:
        pass
    probe = PostgresConnectionsProbe(f"postgresql://ops@127.0.0.1:{port}/app", FAST)
    assert (await run_once(probe, "t")).status is Status.FAIL


# ---- backups: the maintenance worker's catalog ------------------------------------------------


@pytest.fixture()
async def scratch_db(database_url: str) -> AsyncIterator[str]:
    """A database of this test's own (the real catalog belongs to the maintenance worker)."""
    name = f"probe_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(database_url, name)
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


CATALOG = """
CREATE SCHEMA ops;
CREATE TABLE ops.backups (
    job_id text PRIMARY KEY, key text NOT NULL, database text NOT NULL, status text NOT NULL,
    started_at timestamptz NOT NULL, finished_at timestamptz, size_bytes bigint, sha256 text
);
"""


async def add_backup(dsn: str, key: str, status: str, hours_ago: float) -> None:
    conn = await asyncpg.connect(dsn)
    finished = datetime.now(UTC) - timedelta(hours=hours_ago)
    await conn.execute(
        "INSERT INTO ops.backups VALUES ($1, $2, 'app', $3, $4, $5, 1, 'x')",
        uuid.uuid4().hex, key, status, finished - timedelta(minutes=5), finished,
    )
    await conn.close()


async def test_backups_skipped_until_the_catalog_exists(scratch_db: str) -> None:
    probe = BackupsProbe(scratch_db, FAST.model_copy(update={"warn_at": 26, "fail_at": 50}))
    event = await run_once(probe, "t")
    assert event.skipped and event.status is Status.PASS
    assert "ops.backups" in event.output

    conn = await asyncpg.connect(scratch_db)
    await conn.execute(CATALOG)
    await conn.close()
    event = await run_once(probe, "t")
    assert (event.status, event.skipped) == (Status.FAIL, False)
    assert "no successful backup" in event.output

    await add_backup(scratch_db, "db/2026/old.dump", "succeeded", 60)
    event = await run_once(probe, "t")
    assert event.status is Status.FAIL and event.observed_unit == "h"
    assert event.observed_value is not None and 59.9 < event.observed_value < 60.1

    await add_backup(scratch_db, "db/2026/mid.dump", "succeeded", 30)
    assert (await run_once(probe, "t")).status is Status.WARN

    await add_backup(scratch_db, "db/2026/failed.dump", "failed", 0.1)  # a failure is no backup
    assert (await run_once(probe, "t")).status is Status.WARN

    await add_backup(scratch_db, "db/2026/new.dump", "succeeded", 1)
    event = await run_once(probe, "t")
    assert event.status is Status.PASS and "db/2026/new.dump" in event.output


async def test_backups_catalog_of_the_wrong_shape_fails(scratch_db: str) -> None:
    conn = await asyncpg.connect(scratch_db)
    await conn.execute("CREATE SCHEMA ops; CREATE TABLE ops.backups (id int, state text)")
    await conn.close()
    event = await run_once(BackupsProbe(scratch_db, FAST), "t")
    assert event.status is Status.FAIL and "unexpected shape" in event.output


async def test_backups_down_and_a_bad_catalog_name() -> None:
    with blackhole() as port:
        pass
    event = await run_once(BackupsProbe(f"postgresql://ops@127.0.0.1:{port}/app", FAST), "t")
    assert event.status is Status.FAIL
    with pytest.raises(ValueError, match=r"schema\.table"):
        BackupsProbe("postgresql://x/y", FAST, catalog="ops.backups; DROP TABLE x")
