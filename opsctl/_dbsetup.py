"""Database set-up that ``opsctl up`` and ``opsctl migrate`` run: ops migrations, demo data."""

from __future__ import annotations

from shared import connect, migrate


async def migrate_database(dsn: str) -> list[int]:
    """Apply pending ``ops`` migrations (advisory-locked, so safe beside starting services)."""
    async with connect(dsn, timeout_s=10, application_name="opsctl") as conn:
        return await migrate(conn)


async def load_demo_data(dsn: str) -> dict[str, int]:
    from .demo.schema import load_demo

    async with connect(dsn, timeout_s=10, application_name="opsctl") as conn:
        return await load_demo(conn)
