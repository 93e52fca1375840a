"""Versioned migrations for schema ``ops`` (the worker's own state), advisory-locked.

Files ``shared/migrations/NNNN_name.sql`` are applied in order, each in its own transaction,
and recorded in ``ops.schema_migrations`` with a checksum. N replicas may start at once: a
session-level advisory lock makes the others wait, then find nothing left to do. An applied
migration whose file changed afterwards is an error, never silently re-run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from ._db import DRIVER_ERRORS, describe
from ._errors import MigrationError
from ._logging import get_logger

log = get_logger(__name__)

# Any fixed 64-bit number, the same in every replica: "opsplane" in ASCII.
MIGRATION_LOCK_ID = 0x6F7073706C616E65
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path | None = None) -> list[Migration]:
    root = directory or Path(str(resources.files("shared") / "migrations"))
    found: list[Migration] = []
    for path in sorted(root.iterdir()):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {root}")
    return found


_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations; returns the versions this call applied."""
    todo = migrations if migrations is not None else load_migrations()
    applied_now: list[int] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        try:
            await conn.execute(_BOOTSTRAP)
            rows = await conn.fetch("SELECT version, checksum FROM ops.schema_migrations")
            applied = {r["version"]: r["checksum"] for r in rows}
            for migration in todo:
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version}_{migration.name} was changed after "
                            "it was applied; add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO ops.schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied_now.append(migration.version)
                log.info("migration.applied", version=migration.version, name=migration.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    except MigrationError:
        raise
    except DRIVER_ERRORS as exc:
        raise MigrationError(describe(exc)) from exc
    return applied_now
