"""Purge application data: every application table (``all``) or one tenant's rows (``tenant``).

- ``all``: one ``TRUNCATE`` of every application table together (never ``ops``, never a
  migrations table, never ``CASCADE``: nothing outside the list is ever touched).
- ``tenant``: the tenant scope of the graph, children first. A row belongs to the tenant when
  it is the tenant's root row, its own ``tenant_id`` says so, or one of its parents belongs to
  the tenant (through the foreign keys, whatever its own ``tenant_id`` says or lacks): so every
  row that would block a parent's deletion goes first. Keyset batches on the primary key (or
  the physical row id for a table without one), each its own transaction with
  ``lock_timeout``, progress and cancel between batches. A table that references itself is
  deleted in one statement: the tenant's rows and every row below them through the
  self-reference (a recursive walk), since its rows may reference each other. If the app
  inserts a child meanwhile, the parent's batch fails on the foreign key and the pass starts
  over, up to ``PASSES`` times.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg

from .batches import BatchConfig, count_of, in_batch, key_after, key_columns, key_text, pause
from .batches import progress as rows_progress
from .graph import TenancyError, TenantGraph, quote_ident

if TYPE_CHECKING:
    from ..actions.context import ActionContext

PASSES = 3


def belongs_sql(graph: TenantGraph, name: str, alias: str, param: str = "$1",
                depth: int = 0, seen: frozenset[str] = frozenset()) -> str:
    """An SQL condition: row ``alias`` of ``name`` belongs to the tenant ``param``."""
    table = graph.table(name)
    roots = graph.roots
    terms: list[str] = []
    if name in roots:
        terms.append(f"{alias}.{quote_ident(roots[name])}::text = {param}")
    if table.has_tenant:
        terms.append(f"{alias}.{quote_ident(graph.column)}::text = {param}")
    inside = set(graph.tenant_scope())
    for index, fk in enumerate(graph.parents_of(name)):
        if fk.self_reference or fk.parent not in inside or fk.parent in seen:
            continue
        if graph.is_root_edge(fk):
            continue  # the same as the tenant_id term above
        if fk.parent in roots and len(fk.child_columns) == 1:
            terms.append(f"{alias}.{quote_ident(fk.child_columns[0])}::text = {param}")
            continue
        p = f"q{depth}_{index}"
        inner = belongs_sql(graph, fk.parent, p, param, depth + 1, seen | {name})
        terms.append(f"EXISTS (SELECT 1 FROM {graph.table(fk.parent).sql} {p} "
                     f"WHERE {fk.join(alias, p)} AND ({inner}))")
    return "(" + " OR ".join(terms) + ")" if terms else "false"


async def _count(ctx: ActionContext, conn: asyncpg.Connection, config: BatchConfig,
                 what: str, sql: str, *args: Any) -> int:
    async def count(c: asyncpg.Connection) -> int:
        return int(await c.fetchval(sql, *args))

    value, _ = await in_batch(ctx, conn, config, f"{what} count", count)
    return value


def self_closure(graph: TenantGraph, name: str) -> str | None:
    """For a table that references itself: a recursive CTE ``doomed (_r)`` of the physical row
    ids of the tenant's rows and of every row below them through the self-references."""
    selfs = [fk for fk in graph.parents_of(name) if fk.self_reference]
    if not selfs:
        return None
    table = graph.table(name)
    below = " OR ".join(f"({fk.join('c', 'p')})" for fk in selfs)
    return (f"WITH RECURSIVE doomed (_r) AS (SELECT t.ctid FROM {table.sql} t "
            f"WHERE {belongs_sql(graph, name, 't')} UNION SELECT c.ctid FROM doomed d "
            f"JOIN {table.sql} p ON p.ctid = d._r JOIN {table.sql} c ON {below})")


def count_sql(graph: TenantGraph, name: str) -> str:
    closure = self_closure(graph, name)
    if closure is not None:
        return f"{closure} SELECT count(*) FROM doomed"
    return f"SELECT count(*) FROM {graph.table(name).sql} t WHERE {belongs_sql(graph, name, 't')}"


async def count_tenant(ctx: ActionContext, conn: asyncpg.Connection, graph: TenantGraph,
                       tenant: str, config: BatchConfig) -> dict[str, int]:
    """``{table: rows of the tenant}`` in deletion order (children first)."""
    return {name: await _count(ctx, conn, config, name, count_sql(graph, name), tenant)
            for name in graph.purge_order()}


async def count_all(ctx: ActionContext, conn: asyncpg.Connection, graph: TenantGraph,
                    config: BatchConfig) -> dict[str, int]:
    return {name: await _count(ctx, conn, config, name,
                               f"SELECT count(*) FROM {graph.table(name).sql}")
            for name in graph.application_tables}


def delete_sql(graph: TenantGraph, name: str, resuming: bool, whole: bool) -> str:
    """One batch of the tenant's rows of ``name``: ``$1`` tenant, then the key, then limit."""
    table = graph.table(name)
    cond = belongs_sql(graph, name, "t")
    closure = self_closure(graph, name) if whole else None
    if closure is not None:  # rows may reference each other: all in one statement
        return (f"{closure}, done AS (DELETE FROM {table.sql} t WHERE t.ctid IN "
                "(SELECT _r FROM doomed) RETURNING 1) "
                "SELECT count(*) AS seen, count(*) AS deleted, NULL::text[] AS last_key "
                "FROM done")
    if not table.primary_key:  # physical row ids: a table without a key
        return f"""
WITH batch AS (SELECT t.ctid AS _ops_row FROM {table.sql} t WHERE {cond} LIMIT $2),
done AS (DELETE FROM {table.sql} t USING batch b WHERE t.ctid = b._ops_row RETURNING 1)
SELECT (SELECT count(*) FROM batch) AS seen, (SELECT count(*) FROM done) AS deleted,
       NULL::text[] AS last_key"""
    n = len(table.primary_key)
    after = f" AND {key_after(table, 't', 2)}" if resuming else ""
    limit = f"${n + 2}" if resuming else "$2"
    cols = key_columns(table, "t")
    return f"""
WITH batch AS (
    SELECT {cols}, {key_text(table, 't')} AS _ops_key FROM {table.sql} t
    WHERE {cond}{after} ORDER BY {cols} LIMIT {limit}
), done AS (
    DELETE FROM {table.sql} t USING batch b WHERE ({cols}) = ({key_columns(table, 'b')})
    RETURNING 1
)
SELECT (SELECT count(*) FROM batch) AS seen, (SELECT count(*) FROM done) AS deleted,
       (SELECT _ops_key FROM batch ORDER BY {key_columns(table, 'batch')} DESC LIMIT 1)
           AS last_key"""


async def delete_tenant(ctx: ActionContext, conn: asyncpg.Connection, graph: TenantGraph,
                        tenant: str, expected: dict[str, int], config: BatchConfig
                        ) -> dict[str, int]:
    """Delete the tenant's rows children first; returns rows deleted per table."""
    order = graph.purge_order()
    deleted = dict.fromkeys(order, 0)
    total = sum(expected.values())
    for attempt in range(1, PASSES + 1):
        blocked: str | None = None
        for name in order:
            whole = any(fk.self_reference for fk in graph.parents_of(name))
            last: list[str] | None = None
            while True:
                sql = delete_sql(graph, name, last is not None, whole)
                args: list[Any] = [tenant, *(last or []), config.purge_batch_size]
                if whole:
                    args = [tenant]

                async def work(c: asyncpg.Connection, sql: str = sql, args: list[Any] = args
                               ) -> asyncpg.Record:
                    row = await c.fetchrow(sql, *args)
                    assert row is not None
                    return row

                try:
                    row, _ = await in_batch(ctx, conn, config, f"{name} delete", work)
                except asyncpg.exceptions.ForeignKeyViolationError as exc:
                    blocked = f"{name}: {exc}"
                    break
                deleted[name] += row["deleted"]
                done = sum(deleted.values())
                await ctx.progress(rows_progress(done, total),
                                   f"{name}: {deleted[name]} rows deleted")
                if whole or row["seen"] < config.purge_batch_size:
                    break
                if row["last_key"] is not None:
                    last = list(row["last_key"])
                await pause(ctx, config.throttle_s)
            if blocked:
                break
        left = {n: c for n, c in
                (await count_tenant(ctx, conn, graph, tenant, config)).items() if c}
        if not blocked and not left:
            return deleted
        await ctx.progress(ctx.last_progress,
                           f"pass {attempt}: rows arrived meanwhile ({blocked or left}); again")
    raise TenancyError(
        f"tenant {tenant}: rows kept arriving while purging (the app is still writing for it): "
        f"deleted so far {deleted}; stop the tenant's writes and re-run the purge"
    )


async def truncate_all(ctx: ActionContext, conn: asyncpg.Connection, graph: TenantGraph,
                       config: BatchConfig) -> list[str]:
    names = graph.application_tables
    if not names:
        return []
    statement = "TRUNCATE TABLE " + ", ".join(graph.table(n).sql for n in names)

    async def work(c: asyncpg.Connection) -> int:
        return count_of(await c.execute(statement))

    await in_batch(ctx, conn, config, "truncate", work)
    return names
