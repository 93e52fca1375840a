"""SQL the engine runs on the databases it backs up and restores into.

Row counts cover every ordinary table (partitions included, partitioned parents not, so each
row counts once) outside the system schemas, except tables that belong to an extension
(pg_dump does not dump their rows): exactly the tables whose rows a ``pg_dump`` holds.
"""

from __future__ import annotations

import re
import secrets

import asyncpg

from shared import connect

from .errors import db_boundary
from .models import TableMismatch
from .pgtools import APPLICATION_NAME, split_dsn, with_database

_TABLES = r"""
SELECT n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

_USER_RELATIONS = r"""
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
"""


def drill_database_name(job_id: str) -> str:
    """The restore drill's scratch database: ``opsplane_drill_<short job id>``."""
    short = re.sub(r"[^a-z0-9]", "", job_id.lower())[:16] or secrets.token_hex(6)
    return f"opsplane_drill_{short}"


def restoring_database_name(target: str, job_id: str) -> str:
    """Where a restore lands before it is renamed to ``target`` (63 bytes at most)."""
    short = re.sub(r"[^a-z0-9]", "", job_id.lower())[:12] or secrets.token_hex(6)
    suffix = f"_restoring_{short}"
    head = target.encode()[: 63 - len(suffix)].decode(errors="ignore")
    return head + suffix


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def count_rows(conn: asyncpg.Connection) -> dict[str, int]:
    """``{"schema.table": rows}`` as ``conn``'s current snapshot sees them."""
    counts: dict[str, int] = {}
    for row in await conn.fetch(_TABLES):
        qualified = f"{quote_ident(row['schema'])}.{quote_ident(row['name'])}"
        counts[f"{row['schema']}.{row['name']}"] = await conn.fetchval(
            f"SELECT count(*) FROM {qualified}"
        )
    return counts


async def server_version(conn: asyncpg.Connection) -> tuple[int, str]:
    """(major, "16.2") of the server ``conn`` talks to."""
    number = int(await conn.fetchval("SHOW server_version_num"))
    text = str(await conn.fetchval("SHOW server_version")).split()[0]
    return number // 10000, text


def admin_dsn(dsn: str, avoid: str) -> str:
    """A DSN for CREATE/DROP DATABASE ``avoid``: ``dsn`` itself unless it points at ``avoid``
    (nobody can drop the database they are connected to), then the ``postgres`` database."""
    return with_database(dsn, "postgres") if split_dsn(dsn).database == avoid else dsn


async def database_exists(dsn: str, name: str) -> bool:
    async with connect(dsn, application_name=APPLICATION_NAME) as conn:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))


async def create_database(dsn: str, name: str) -> None:
    async with connect(admin_dsn(dsn, name), application_name=APPLICATION_NAME) as conn:
        with db_boundary(f"creating database {name}"):
            await conn.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")


async def drop_database(dsn: str, name: str) -> None:
    """DROP DATABASE IF EXISTS, disconnecting whoever is still in it (PostgreSQL 13+)."""
    async with connect(admin_dsn(dsn, name), application_name=APPLICATION_NAME) as conn:
        major, _ = await server_version(conn)
        force = " WITH (FORCE)" if major >= 13 else ""
        with db_boundary(f"dropping database {name}"):
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}{force}")


async def rename_database(dsn: str, old: str, new: str) -> None:
    async with connect(
        admin_dsn(admin_dsn(dsn, old), new), application_name=APPLICATION_NAME
    ) as conn:
        with db_boundary(f"renaming database {old} to {new}"):
            await conn.execute(f"ALTER DATABASE {quote_ident(old)} RENAME TO {quote_ident(new)}")


async def is_empty(dsn: str) -> bool:
    """No tables, views, sequences or foreign tables outside the system schemas."""
    async with connect(dsn, application_name=APPLICATION_NAME) as conn:
        return int(await conn.fetchval(_USER_RELATIONS)) == 0


async def count_rows_in(dsn: str) -> dict[str, int]:
    async with connect(dsn, timeout_s=10, application_name=APPLICATION_NAME) as conn:
        return await count_rows(conn)


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> list[TableMismatch]:
    """Every table whose row count differs, or that is only on one side."""
    return [
        TableMismatch(table=name, expected=expected.get(name), actual=actual.get(name))
        for name in sorted(expected.keys() | actual.keys())
        if expected.get(name) != actual.get(name)
    ]
