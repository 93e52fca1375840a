"""The demo schema and seed against a real PostgreSQL: idempotent, and shaped for the ops plane."""

from __future__ import annotations

import asyncpg

from opsctl.demo.schema import TABLES, load_demo
from shared import Settings

TENANTS = {"acme", "globex", "initech", "umbrella", "hooli"}
ACTIVE_TIMERS_SQL = Settings.model_fields["active_timers_sql"].default


async def test_schema_and_seed_load_twice_with_the_same_result(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        first = await load_demo(conn)
        second = await load_demo(conn)
        assert first == second
        assert set(first) == set(TABLES)
        assert first["tenants"] == 5
        assert all(count > 0 for count in first.values())
    finally:
        await conn.close()


async def test_active_timers_sql_returns_running_timers_per_tenant(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        await load_demo(conn)
        rows = await conn.fetch(ACTIVE_TIMERS_SQL)
        counts = {row["tenant_id"]: row["count"] for row in rows}
        assert set(counts) == TENANTS
        assert all(count >= 1 for count in counts.values())
        assert counts["umbrella"] == 3
    finally:
        await conn.close()


async def test_every_table_has_a_primary_key_and_children_lack_some_tenant_ids(
    fresh_database: str,
) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        await load_demo(conn)
        without_pk = await conn.fetch(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind = 'r' AND NOT EXISTS (
                   SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p')"""
        )
        assert without_pk == []
        # Rows lacking tenant_id, each resolvable through its parent's foreign key.
        for child, parent_sql in (
            ("project_members", "SELECT p.tenant_id FROM projects p WHERE p.id = c.project_id"),
            ("time_entries", "SELECT p.tenant_id FROM projects p WHERE p.id = c.project_id"),
        ):
            missing = await conn.fetchval(f"SELECT count(*) FROM {child} WHERE tenant_id IS NULL")
            unresolvable = await conn.fetchval(
                f"SELECT count(*) FROM {child} c "
                f"WHERE c.tenant_id IS NULL AND ({parent_sql}) IS NULL"
            )
            assert missing > 0, child
            assert unresolvable == 0, child
        # A grandchild whose parent lacks tenant_id too: a backfill must go parents first.
        chained = await conn.fetchval(
            """SELECT count(*) FROM time_entry_comments c JOIN time_entries t
               ON t.id = c.time_entry_id WHERE c.tenant_id IS NULL AND t.tenant_id IS NULL"""
        )
        assert chained > 0
        # Running timers all carry their tenant (the collector counts them per tenant).
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM time_entries WHERE ended_at IS NULL AND tenant_id IS NULL"
            )
            == 0
        )
    finally:
        await conn.close()


async def test_seed_is_idempotent_after_the_app_changed_data(fresh_database: str) -> None:
    """The simulator starts and stops timers; reloading on the next `up --demo` must not fail."""
    conn = await asyncpg.connect(fresh_database)
    try:
        await load_demo(conn)
        # The app stops every seeded running timer and starts new ones for the same users.
        await conn.execute("UPDATE time_entries SET ended_at = now() WHERE ended_at IS NULL")
        new_id = await conn.fetchval(
            """INSERT INTO time_entries (tenant_id, project_id, user_id, started_at)
               VALUES ('acme', 101, 101, now()) RETURNING id"""
        )
        assert new_id > await conn.fetchval(
            "SELECT max(id) FROM time_entries WHERE id <> $1", new_id
        )
        await load_demo(conn)
        running = await conn.fetchval("SELECT count(*) FROM time_entries WHERE ended_at IS NULL")
        assert running == 1  # the seed did not resurrect stopped timers
    finally:
        await conn.close()
