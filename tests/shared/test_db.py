"""The asyncpg boundary: driver errors become DatabaseError, and never carry the password."""

from __future__ import annotations

import pytest

from opsctl._procs import free_port
from shared import DatabaseError, Queries, connect, create_pool, database_errors
from tests.harness import Servers


async def test_pool_runs_queries(servers: Servers) -> None:
    pool = await create_pool(servers.database_url, min_size=1, max_size=2)
    try:
        assert await pool.fetchval("SELECT 41 + 1") == 42
    finally:
        await pool.close()


async def test_refused_connections_map_to_database_error_without_the_password() -> None:
    dsn = f"postgresql://app:hunter2@127.0.0.1:{free_port()}/db"
    with pytest.raises(DatabaseError) as pool_error:
        await create_pool(dsn, connect_timeout_s=1)
    with pytest.raises(DatabaseError) as conn_error:
        async with connect(dsn, timeout_s=1):
            pass
    for error in (pool_error.value, conn_error.value):
        assert "hunter2" not in str(error)
        assert "refused" in str(error).lower() or "connect" in str(error).lower()


async def test_query_errors_inside_a_connection_are_mapped(servers: Servers) -> None:
    with pytest.raises(DatabaseError, match="no_such_table"):
        async with connect(servers.database_url) as conn:
            await conn.fetch("SELECT * FROM no_such_table")


async def test_database_errors_maps_a_pools_query_errors(servers: Servers) -> None:
    pool = await create_pool(servers.database_url, min_size=1, max_size=1)
    try:
        with pytest.raises(DatabaseError, match="no_such_table"), database_errors():
            await pool.fetch("SELECT * FROM no_such_table")
        with database_errors():  # a good query passes through untouched
            assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_queries_map_driver_errors_and_pass_results(servers: Servers) -> None:
    pool = await create_pool(servers.database_url, min_size=1, max_size=1)
    try:
        db = Queries(pool)
        assert await db.fetchval("SELECT 2") == 2
        assert [r[0] for r in await db.fetch("SELECT generate_series(1, 3)")] == [1, 2, 3]
        with pytest.raises(DatabaseError, match="no_such_table"):
            await db.execute("DELETE FROM no_such_table")
    finally:
        await pool.close()
