"""Backfill ``tenant_id`` from the parent rows, table by table, parents first.

Per table with NULL ``tenant_id`` rows: keyset batches on the primary key, each its own short
transaction (``SET LOCAL lock_timeout``; a lock timeout retries the batch with backoff) that
locks the batch's rows, sets ``tenant_id`` from the parents' (through every source foreign key:
the value is taken when the parents that have one agree), and writes the checkpoint (the last
key) in the same transaction. A row whose parents give no tenant (no parent row, a parent
without tenant, parents that disagree) is *unresolvable*: left NULL, counted, its key sampled.
A dry run counts, through the whole chain (a comment whose entry is filled first counts as
settable), and writes nothing. Runs are resumable: see ``0005_backfill.sql``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from .batches import BatchConfig, in_batch, key_after, key_columns, key_text, pause, progress
from .graph import ForeignKey, TenantGraph, quote_ident

if TYPE_CHECKING:
    from ..actions.context import ActionContext


@dataclass
class TablePlan:
    name: str
    sources: list[ForeignKey]
    skip: str | None = None  # why this table cannot be backfilled in batches


@dataclass
class TableState:
    """What a run did to one table, cumulative across taken-over runs."""

    updated: int = 0
    unresolvable: int = 0
    sample: list[Any] = field(default_factory=list)
    batches: int = 0
    last_key: list[str] | None = None
    resumed_after: list[str] | None = None


def plan(graph: TenantGraph) -> list[TablePlan]:
    """Every tenant table in backfill order (raises ``GraphCycle``)."""
    out: list[TablePlan] = []
    for name in graph.backfill_order():
        table = graph.table(name)
        skip = None
        if not table.primary_key:
            skip = "no primary key: it cannot be walked in keyset batches; set tenant_id by hand"
        out.append(TablePlan(name, graph.sources(name), skip))
    return out


def resolve_sql(graph: TenantGraph, name: str, alias: str, *, chain: bool, depth: int = 0) -> str:
    """An SQL expression: the tenant ``alias`` (a row of ``name``) gets from its parents, NULL
    when there is none or they disagree. ``chain``: a parent still lacking its own tenant_id
    resolves through its parents too (what a parents-first run will have done by then)."""
    table = graph.table(name)
    assert table.tenant_type is not None
    column = quote_ident(graph.column)
    values: list[str] = []
    for index, fk in enumerate(graph.sources(name)):
        parent = graph.table(fk.parent)
        p = f"p{depth}_{index}"
        own = f"{p}.{column}"
        if chain and not fk.self_reference and graph.sources(fk.parent):
            inner = resolve_sql(graph, fk.parent, p, chain=True, depth=depth + 1)
            own = f"coalesce({own}, {inner})"
        values.append(f"(SELECT ({own})::{table.tenant_type} FROM {parent.sql} {p} "
                      f"WHERE {fk.join(alias, p)})")
    if not values:
        return f"NULL::{table.tenant_type}"
    if len(values) == 1:
        return values[0]
    rows = ", ".join(f"({v})" for v in values)
    return (f"(SELECT CASE WHEN count(DISTINCT s.v) = 1 THEN "
            f"(array_agg(s.v) FILTER (WHERE s.v IS NOT NULL))[1] END "
            f"FROM (VALUES {rows}) AS s (v))")


def _key(value: list[str]) -> Any:
    return value[0] if len(value) == 1 else value


async def dry_run(ctx: ActionContext, conn: asyncpg.Connection, graph: TenantGraph,
                  config: BatchConfig) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    for item in plan(graph):
        table = graph.table(item.name)
        column = quote_ident(graph.column)
        keyed = bool(table.primary_key)
        sample = (f"(array_agg(array_to_json(x.k)::text ORDER BY x.k) "
                  f"FILTER (WHERE x.v IS NULL))[1:{int(config.sample_size)}]"
                  if keyed else "ARRAY[]::text[]")
        key = key_text(table, "t") if keyed else "ARRAY[]::text[]"
        sql = (f"SELECT count(*) AS nulls, count(x.v) AS would_set, {sample} AS sample "
               f"FROM (SELECT {key} AS k, {resolve_sql(graph, item.name, 't', chain=True)} AS v "
               f"FROM {table.sql} t WHERE t.{column} IS NULL) x")

        async def count(c: asyncpg.Connection, sql: str = sql) -> asyncpg.Record:
            row = await c.fetchrow(sql)
            assert row is not None
            return row

        row, _ = await in_batch(ctx, conn, config, f"{item.name} count", count)
        entry: dict[str, Any] = {
            "null_rows": row["nulls"],
            "would_set": 0 if item.skip else row["would_set"],
            "unresolvable": row["nulls"] if item.skip else row["nulls"] - row["would_set"],
            "unresolvable_sample": [_key(json.loads(s)) for s in row["sample"] or []],
        }
        if item.skip:
            entry["skipped"] = item.skip
        tables[item.name] = entry
    return tables


_OPEN_RUN = """
SELECT job_id FROM ops.backfill_runs
WHERE finished_at IS NULL AND taken_over_by IS NULL AND job_id <> $1
ORDER BY started_at DESC LIMIT 1
"""

_CHECKPOINT = """
INSERT INTO ops.backfill_checkpoints
    (job_id, table_name, last_key, updated, unresolvable, sample, batches, updated_at)
VALUES ($1, $2, $3::jsonb, $4, $5, $6::jsonb, $7, now())
ON CONFLICT (job_id, table_name) DO UPDATE SET
    last_key = EXCLUDED.last_key, updated = EXCLUDED.updated,
    unresolvable = EXCLUDED.unresolvable, sample = EXCLUDED.sample,
    batches = EXCLUDED.batches, updated_at = now()
"""


async def open_run(conn: asyncpg.Connection, job_id: str) -> tuple[str | None,
                                                                   dict[str, TableState]]:
    """Register this run; take over the newest unfinished one (its checkpoints become ours)."""
    states: dict[str, TableState] = {}
    async with conn.transaction():
        await conn.execute("INSERT INTO ops.backfill_runs (job_id) VALUES ($1) "
                           "ON CONFLICT (job_id) DO NOTHING", job_id)
        previous = await conn.fetchval(_OPEN_RUN, job_id)
        if previous is not None:
            await conn.execute(
                "UPDATE ops.backfill_runs SET resumed_from = $2 WHERE job_id = $1", job_id,
                previous)
            await conn.execute(
                "UPDATE ops.backfill_runs SET taken_over_by = $1 WHERE finished_at IS NULL "
                "AND taken_over_by IS NULL AND job_id <> $1", job_id)
            await conn.execute(
                "INSERT INTO ops.backfill_checkpoints (job_id, table_name, last_key, updated, "
                "unresolvable, sample, batches) SELECT $1, table_name, last_key, updated, "
                "unresolvable, sample, 0 FROM ops.backfill_checkpoints WHERE job_id = $2 "
                "ON CONFLICT (job_id, table_name) DO NOTHING", job_id, previous)
        for row in await conn.fetch(
            "SELECT * FROM ops.backfill_checkpoints WHERE job_id = $1", job_id
        ):
            key = json.loads(row["last_key"])
            states[row["table_name"]] = TableState(
                updated=row["updated"], unresolvable=row["unresolvable"],
                sample=json.loads(row["sample"]), last_key=key, resumed_after=key)
    return previous, states


async def close_run(conn: asyncpg.Connection, job_id: str, result: dict[str, Any]) -> None:
    await conn.execute("UPDATE ops.backfill_runs SET finished_at = now(), result = $2::jsonb "
                       "WHERE job_id = $1", job_id, json.dumps(result))


def batch_sql(graph: TenantGraph, name: str, resuming: bool, sample_size: int) -> str:
    """One batch: lock the next NULL rows after the key, set what resolves, report."""
    table = graph.table(name)
    column = quote_ident(graph.column)
    n = len(table.primary_key)
    after = f" AND {key_after(table, 't', 1)}" if resuming else ""
    limit = f"${n + 1}" if resuming else "$1"
    cols = key_columns(table, "t")
    value = resolve_sql(graph, name, "t", chain=False)
    return f"""
WITH batch AS (
    SELECT {cols}, {key_text(table, 't')} AS _ops_key, {value} AS _ops_value
    FROM {table.sql} t WHERE t.{column} IS NULL{after}
    ORDER BY {cols} LIMIT {limit}
    FOR UPDATE OF t
), done AS (
    UPDATE {table.sql} t SET {column} = b._ops_value FROM batch b
    WHERE ({cols}) = ({key_columns(table, 'b')}) AND b._ops_value IS NOT NULL
      AND t.{column} IS NULL
    RETURNING 1
)
SELECT (SELECT count(*) FROM batch) AS seen, (SELECT count(*) FROM done) AS updated,
       (SELECT count(*) FROM batch WHERE _ops_value IS NULL) AS unresolvable,
       (SELECT _ops_key FROM batch ORDER BY {key_columns(table, 'batch')} DESC LIMIT 1)
           AS last_key,
       ARRAY(SELECT array_to_json(_ops_key)::text FROM batch WHERE _ops_value IS NULL
             ORDER BY {key_columns(table, 'batch')} LIMIT {int(sample_size)}) AS sample
"""


async def null_count(ctx: ActionContext, conn: asyncpg.Connection, graph: TenantGraph,
                     name: str, config: BatchConfig) -> int:
    """Rows of ``name`` lacking tenant_id (under lock_timeout, retried like a batch)."""
    sql = f"SELECT count(*) FROM {graph.table(name).sql} WHERE {quote_ident(graph.column)} IS NULL"

    async def count(c: asyncpg.Connection) -> int:
        return int(await c.fetchval(sql))

    value, _ = await in_batch(ctx, conn, config, f"{name} count", count)
    return value


async def run(ctx: ActionContext, conn: asyncpg.Connection, graph: TenantGraph,
              batch_size: int, config: BatchConfig) -> dict[str, Any]:
    """The real backfill, on ``conn`` (a dedicated connection, outside any transaction)."""
    started = time.monotonic()
    plans = plan(graph)
    previous, states = await open_run(conn, ctx.job_id)
    totals = {p.name: await null_count(ctx, conn, graph, p.name, config) for p in plans}
    total, done = sum(totals.values()), 0
    await ctx.progress(progress(0, total), "resuming after job " + previous if previous
                       else f"{total} rows lack {graph.column}")
    tables: dict[str, Any] = {}
    for item in plans:
        state = states.setdefault(item.name, TableState())
        if item.skip:
            tables[item.name] = {"skipped": item.skip, "null_rows": totals[item.name]}
            continue
        while True:
            ctx.raise_if_cancelled()
            resuming = state.last_key is not None
            sql = batch_sql(graph, item.name, resuming, config.sample_size)
            args: list[Any] = [*(state.last_key or []), batch_size]

            async def work(c: asyncpg.Connection, sql: str = sql, args: list[Any] = args,
                           state: TableState = state, name: str = item.name) -> int:
                row = await c.fetchrow(sql, *args)
                assert row is not None
                if not row["seen"]:
                    return 0
                sample = (state.sample + [_key(json.loads(s)) for s in row["sample"]])
                await c.execute(_CHECKPOINT, ctx.job_id, name, json.dumps(row["last_key"]),
                                state.updated + row["updated"],
                                state.unresolvable + row["unresolvable"],
                                json.dumps(sample[:config.sample_size]), state.batches + 1)
                state.updated += row["updated"]
                state.unresolvable += row["unresolvable"]
                state.sample = sample[:config.sample_size]
                state.last_key = list(row["last_key"])
                state.batches += 1
                return int(row["seen"])

            seen, _ = await in_batch(ctx, conn, config, f"{item.name} batch", work)
            if not seen:
                break
            done += seen
            await ctx.progress(progress(done, total),
                               f"{item.name}: {state.updated} set, "
                               f"{state.unresolvable} unresolvable")
            if config.after_batch is not None:
                await config.after_batch(item.name, state.batches)
            if seen < batch_size:
                break
            await pause(ctx, config.throttle_s)
        tables[item.name] = {
            "updated": state.updated,
            "unresolvable": state.unresolvable,
            "unresolvable_sample": state.sample,
            "batches": state.batches,
            "resumed_after": state.resumed_after,
            "remaining_null": await null_count(ctx, conn, graph, item.name, config),
        }
    result: dict[str, Any] = {
        "dry_run": False,
        "order": [p.name for p in plans],
        "tables": tables,
        "updated": sum(t.get("updated", 0) for t in tables.values()),
        "unresolvable": sum(t.get("unresolvable", 0) for t in tables.values()),
        "resumed_from": previous,
        "duration_s": round(time.monotonic() - started, 3),
    }
    await close_run(conn, ctx.job_id, result)
    await ctx.progress(progress(total, total), "done")
    return result
