"""``db.vacuum``: ``VACUUM (ANALYZE)`` table by table, outside any transaction.

Names in ``params.tables`` are ``table`` or ``schema.table`` as stored in the catalog (no SQL
quoting); each is resolved against ``pg_class`` before anything runs, and the statement is built
from the catalog's own ``format('%I.%I')``, never from the text the command carried. Any name that
does not resolve (or resolves to more than one schema) fails the job before the first VACUUM,
saying which. Without ``tables``: every ordinary table and materialized view outside the system
schemas, smallest first. Progress is one step a table; a cancel stops the statement running.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
from pydantic import BaseModel

from shared import Progress

from .context import ActionContext, ActionFailed

_SYSTEM = "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"

_ALL = f"""
SELECT format('%I.%I', n.nspname, c.relname) AS quoted, n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN {_SYSTEM}
ORDER BY pg_total_relation_size(c.oid), n.nspname, c.relname
"""

_LOOKUP = f"""
SELECT format('%I.%I', n.nspname, c.relname) AS quoted, n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p') AND (c.relname = $2 OR c.relname = lower($2))
  AND (n.nspname = $1 OR n.nspname = lower($1)
       OR ($1 IS NULL AND n.nspname NOT IN {_SYSTEM}))
ORDER BY n.nspname
"""


async def resolve_tables(
    conn: asyncpg.Connection, names: list[str] | None
) -> list[tuple[str, str]]:
    """``[(display name, quoted identifier)]`` for ``names`` (or every user table)."""
    if not names:
        return [(f"{r['schema']}.{r['name']}", r["quoted"]) for r in await conn.fetch(_ALL)]
    found: list[tuple[str, str]] = []
    missing: list[str] = []
    ambiguous: list[str] = []
    for name in dict.fromkeys(names):  # keep order, drop repeats
        schema, _, table = name.rpartition(".")
        rows = await conn.fetch(_LOOKUP, schema or None, table)
        if not rows:
            missing.append(name)
        elif len(rows) > 1:
            ambiguous.append(f"{name} ({', '.join(r['schema'] for r in rows)})")
        else:
            found.append((f"{rows[0]['schema']}.{rows[0]['name']}", rows[0]["quoted"]))
    problems = []
    if missing:
        problems.append("no such table: " + ", ".join(missing))
    if ambiguous:
        problems.append("ambiguous, name the schema: " + ", ".join(ambiguous))
    if problems:
        raise ActionFailed("; ".join(problems))
    return found


async def db_vacuum(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
    names: list[str] | None = getattr(params, "tables", None)
    async with ctx.connect() as conn:
        tables = await resolve_tables(conn, names)
        total = len(tables)
        await ctx.progress(Progress(done=0, total=total, unit="tables"), "starting")
        done: list[dict[str, Any]] = []
        started = time.monotonic()
        for index, (display, quoted) in enumerate(tables):
            ctx.raise_if_cancelled()
            await ctx.progress(
                Progress(done=index, total=total, unit="tables"), f"vacuuming {display}"
            )
            began = time.monotonic()
            # VACUUM cannot run in a transaction block: asyncpg runs a bare statement as is.
            await ctx.cancellable(conn.execute(f"VACUUM (ANALYZE) {quoted}", timeout=None))
            done.append({"table": display, "seconds": round(time.monotonic() - began, 3)})
            await ctx.progress(Progress(done=index + 1, total=total, unit="tables"),
                               f"vacuumed {display}")
    return {
        "tables": done,
        "count": len(done),
        "seconds": round(time.monotonic() - started, 3),
    }
