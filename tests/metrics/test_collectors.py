"""Collectors against a real PostgreSQL: saturation, size, active timers; failures give None."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from opsctl._procs import free_port
from services.metrics.collectors import Collectors
from services.metrics.partition import partition_of


@pytest.fixture()
async def timers_table(database_url: str) -> AsyncIterator[str]:
    schema = f"metrics_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        await _create(conn, schema)
        yield schema
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def _create(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.execute(f"CREATE TABLE {schema}.time_entries (id serial, tenant_id text, "
                       "ended_at timestamptz)")
    await conn.executemany(
        f"INSERT INTO {schema}.time_entries (tenant_id, ended_at) VALUES ($1, $2)",
        [("acme", None), ("acme", None), ("globex", None),
         ("globex", datetime(2027, 1, 1, tzinfo=UTC)), (None, None), ("not a.token", None)]
        + [(f"t{i}", None) for i in range(20)],
    )


def timers_sql(schema: str) -> str:
    return (f"SELECT tenant_id, count(*) FROM {schema}.time_entries "
            "WHERE ended_at IS NULL GROUP BY tenant_id")


async def test_server_gauges_and_active_timers(database_url: str, timers_table: str) -> None:
    collectors = Collectors(database_url, timers_sql(timers_table), owns=lambda t: True,
                            server_wide=True)
    await collectors.collect_once()
    gauges = collectors.gauges
    assert gauges["db_connections"] is not None and gauges["db_connections"] >= 1
    assert gauges["db_max_connections"] is not None and gauges["db_max_connections"] > 1
    ratio = gauges["db_server_connections_ratio"]
    assert ratio is not None and 0 < ratio < 1
    assert gauges["db_size_bytes"] is not None and gauges["db_size_bytes"] > 1_000_000
    assert collectors.timers["acme"] == 2 and collectors.timers["globex"] == 1
    assert None not in collectors.timers and "not a.token" not in collectors.timers
    assert gauges["active_timers"] == 23
    assert not collectors.errors


async def test_a_partition_keeps_only_its_tenants(database_url: str, timers_table: str) -> None:
    collectors = Collectors(database_url, timers_sql(timers_table),
                            owns=lambda t: partition_of(t, 2) == 1, server_wide=False)
    await collectors.collect_once()
    assert collectors.timers and all(partition_of(t, 2) == 1 for t in collectors.timers)
    assert "db_connections" not in collectors.gauges  # server-wide queries: partition 0 only


async def test_missing_table_leaves_timers_unknown_not_zero(database_url: str) -> None:
    collectors = Collectors(database_url, "SELECT tenant_id, count(*) FROM no_such_table "
                            "GROUP BY 1", owns=lambda t: True, server_wide=True)
    await collectors.collect_once()
    assert collectors.gauges["active_timers"] is None and collectors.timers == {}
    assert collectors.gauges["db_connections"] is not None  # the other collector still works
    assert "UndefinedTable" in collectors.errors["timers"]


async def test_database_down_gives_none_and_never_raises() -> None:
    dsn = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/app"
    collectors = Collectors(dsn, "SELECT 1, 1", owns=lambda t: True, server_wide=True,
                            timeout_s=1.0)
    collectors.gauges = {"db_connections": 5.0}
    await collectors.collect_once()
    assert collectors.gauges == {"db_connections": None} and collectors.timers == {}
    assert "secret" not in collectors.errors["connect"]
    assert collectors.runs == 1
    await Collectors(None, "", owns=lambda t: True, server_wide=True).collect_once()
