"""Loads the demo app's schema and seed (``deploy/demo/*.sql``) into a database, idempotently."""

from __future__ import annotations

from pathlib import Path

import asyncpg

# The SQL lives in deploy/ (it is the app's, not opsctl's); opsctl runs from a source checkout.
DEMO_DIR = Path(__file__).resolve().parents[2] / "deploy" / "demo"
TABLES = ("tenants", "users", "projects", "project_members", "time_entries", "time_entry_comments")
# Serialises concurrent loads (two `up --demo` on one external database).
_LOCK_ID = 0x6F70736465_6D6F


def demo_sql(name: str) -> str:
    path = DEMO_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: --demo needs a source checkout of opsplane")
    return path.read_text()


async def load_demo(conn: asyncpg.Connection) -> dict[str, int]:
    """Create the demo tables and seed them; returns each table's row count."""
    schema, seed = demo_sql("schema.sql"), demo_sql("seed.sql")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        await conn.execute(schema)
        await conn.execute(seed)
    counts: dict[str, int] = {}
    for table in TABLES:
        counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    return counts
