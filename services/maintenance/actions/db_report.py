"""``db.report``: a health report of the app's database, as a JSON result.

Database size and uptime, the largest tables with dead tuples and a bloat estimate (the share
of dead tuples, which is what autovacuum acts on), index usage (unused indexes and their size),
queries running longer than a minute, connections by state, and the cache hit ratio. Read-only,
catalog and statistics views only; query texts are cut to 300 characters.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import BaseModel

from shared import Progress

from .context import ActionContext

TOP_TABLES = 25
LONG_QUERY_S = 60.0
QUERY_TEXT = 300
DEAD_RATIO_FLAG = 0.2
DEAD_TUPLES_FLAG = 1000

_DATABASE = """
SELECT current_database() AS name,
       pg_database_size(current_database()) AS size_bytes,
       current_setting('server_version') AS server_version,
       (SELECT system_identifier::text FROM pg_control_system()) AS system_identifier,
       extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS uptime_s
"""

_TABLES = """
SELECT s.schemaname AS schema, s.relname AS table,
       pg_total_relation_size(s.relid) AS total_bytes,
       pg_relation_size(s.relid) AS table_bytes,
       pg_indexes_size(s.relid) AS index_bytes,
       s.n_live_tup AS live_tuples, s.n_dead_tup AS dead_tuples,
       s.seq_scan, s.idx_scan,
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze
FROM pg_stat_user_tables s
ORDER BY pg_total_relation_size(s.relid) DESC, s.schemaname, s.relname
LIMIT $1
"""

_TABLE_COUNT = "SELECT count(*) FROM pg_stat_user_tables"

_INDEXES = """
SELECT s.schemaname AS schema, s.relname AS table, s.indexrelname AS index,
       pg_relation_size(s.indexrelid) AS size_bytes, s.idx_scan AS scans,
       i.indisunique AS is_unique, i.indisprimary AS is_primary
FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
ORDER BY pg_relation_size(s.indexrelid) DESC, s.schemaname, s.indexrelname
"""

_LONG_QUERIES = """
SELECT pid, usename AS user, application_name, state,
       extract(epoch FROM now() - query_start)::float8 AS duration_s,
       wait_event_type, wait_event, left(query, $2) AS query
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'
  AND backend_type = 'client backend' AND query_start < now() - make_interval(secs => $1)
ORDER BY query_start
LIMIT 50
"""

_CONNECTIONS = """
SELECT coalesce(state, backend_type) AS state, count(*) AS count
FROM pg_stat_activity WHERE datname = current_database()
GROUP BY 1 ORDER BY 1
"""

_SERVER_CONNECTIONS = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS total,
       current_setting('max_connections')::int AS max
"""

_CACHE = """
SELECT blks_hit, blks_read, xact_commit, xact_rollback, deadlocks, temp_bytes
FROM pg_stat_database WHERE datname = current_database()
"""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _rows(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in r.items()} for r in records]


def _dead_ratio(live: int, dead: int) -> float:
    return round(dead / (live + dead), 4) if live + dead else 0.0


async def db_report(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
    steps = 7
    unit = "sections"
    async with ctx.pool.acquire() as conn:
        database = dict((await conn.fetchrow(_DATABASE)) or {})
        await ctx.progress(Progress(done=1, total=steps, unit=unit), "database")

        tables = _rows(await conn.fetch(_TABLES, TOP_TABLES))
        for table in tables:
            table["dead_ratio"] = _dead_ratio(table["live_tuples"], table["dead_tuples"])
        candidates = [
            f"{t['schema']}.{t['table']}" for t in tables
            if t["dead_ratio"] >= DEAD_RATIO_FLAG and t["dead_tuples"] >= DEAD_TUPLES_FLAG
        ]
        table_count = await conn.fetchval(_TABLE_COUNT)
        ctx.raise_if_cancelled()
        await ctx.progress(Progress(done=2, total=steps, unit=unit), "tables")

        indexes = _rows(await conn.fetch(_INDEXES))
        unused = [i for i in indexes
                  if i["scans"] == 0 and not i["is_unique"] and not i["is_primary"]]
        await ctx.progress(Progress(done=3, total=steps, unit=unit), "indexes")

        long_queries = _rows(await conn.fetch(_LONG_QUERIES, LONG_QUERY_S, QUERY_TEXT))
        await ctx.progress(Progress(done=4, total=steps, unit=unit), "long-running queries")

        by_state = {r["state"]: r["count"] for r in await conn.fetch(_CONNECTIONS)}
        server = dict((await conn.fetchrow(_SERVER_CONNECTIONS)) or {})
        await ctx.progress(Progress(done=5, total=steps, unit=unit), "connections")

        cache = dict((await conn.fetchrow(_CACHE)) or {})
        await ctx.progress(Progress(done=6, total=steps, unit=unit), "cache")

    hits, reads = int(cache.get("blks_hit") or 0), int(cache.get("blks_read") or 0)
    result: dict[str, Any] = {
        "database": {k: _plain(v) for k, v in database.items()},
        "tables": {
            "count": table_count,
            "largest": tables,
            "vacuum_candidates": candidates,
            "dead_tuples": sum(t["dead_tuples"] for t in tables),
        },
        "indexes": {
            "count": len(indexes),
            "total_bytes": sum(i["size_bytes"] for i in indexes),
            "unused": unused[:50],
            "unused_bytes": sum(i["size_bytes"] for i in unused),
        },
        "long_running_queries": {"threshold_s": LONG_QUERY_S, "queries": long_queries},
        "connections": {
            "by_state": by_state,
            "server_total": server.get("total"),
            "max_connections": server.get("max"),
        },
        "cache": {
            "hit_ratio": round(hits / (hits + reads), 4) if hits + reads else None,
            **{k: _plain(v) for k, v in cache.items()},
        },
    }
    await ctx.progress(Progress(done=steps, total=steps, unit=unit), "done")
    return result
