"""The ops-schema migration runner against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from shared import Migration, MigrationError, load_migrations, migrate
from tests.harness import Servers


@pytest.fixture()
async def fresh_db(servers: Servers) -> AsyncIterator[str]:
    """A database of this test's own on the session's server (embedded or ``DATABASE_URL``)."""
    name = f"mig_{uuid.uuid4().hex[:10]}"
    url = urlsplit(servers.database_url)
    admin = await asyncpg.connect(servers.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(url._replace(path=f"/{name}"))
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def applied(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [
            r["version"]
            for r in await conn.fetch("SELECT version FROM ops.schema_migrations ORDER BY 1")
        ]
    finally:
        await conn.close()


async def test_shipped_migrations_apply_once_from_many_replicas(fresh_db: str) -> None:
    async def replica() -> list[int]:
        conn = await asyncpg.connect(fresh_db)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    results = await asyncio.gather(*(replica() for _ in range(6)))
    shipped = [m.version for m in load_migrations()]
    assert sorted(v for r in results for v in r) == shipped, "each migration applied exactly once"
    assert await applied(fresh_db) == shipped


async def test_a_changed_applied_migration_is_refused(fresh_db: str) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        first = [Migration(1, "one", "CREATE TABLE ops.t1 (id int)")]
        assert await migrate(conn, first) == [1]
        tampered = [Migration(1, "one", "CREATE TABLE ops.t1 (id bigint)")]
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, tampered)
    finally:
        await conn.close()


async def test_a_failing_migration_rolls_back_and_is_not_recorded(fresh_db: str) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        bad = [
            Migration(1, "good", "CREATE TABLE ops.good (id int)"),
            Migration(2, "bad", "CREATE TABLE ops.half (id int); SELECT * FROM no_such_table"),
        ]
        with pytest.raises(MigrationError, match="no_such_table"):
            await migrate(conn, bad)
        assert await conn.fetchval("SELECT to_regclass('ops.half')") is None
        assert await applied(fresh_db) == [1]
        # The lock was released: a fixed migration set goes through.
        bad[1] = Migration(2, "bad", "CREATE TABLE ops.half (id int)")
        assert await migrate(conn, bad) == [2]
    finally:
        await conn.close()


def test_migration_files_are_named_and_numbered(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0001_b.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="duplicate"):
        load_migrations(tmp_path)
