"""``backfill.tenant_ids``: fill missing ``tenant_id`` from the parent rows, parents first.

The graph comes from the catalog (``tenancy.graph``); the work is ``tenancy.backfill``. A dry
run counts per table what would be set and what cannot be resolved, and writes nothing. A real
run takes the destructive-job lock (one data-changing job at a time), resumes the newest
unfinished run from its checkpoints, and reports per table rows set, rows unresolvable (with a
sample of their primary keys) and the duration. ``BACKFILL_TENANT_IDS_ALLOWED`` is checked at
intake. Tuning: ``ctx.extras["tenancy_config"]`` (a ``tenancy.BatchConfig``).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from shared import BackfillTenantIds, Progress

from ..tenancy import backfill
from ..tenancy.batches import config_of, destructive_lock
from ..tenancy.graph import GraphError, TenancyError, read_graph
from .context import ActionContext, ActionFailed


async def backfill_tenant_ids(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, BackfillTenantIds)
    try:
        return await _backfill(ctx, params)
    except TenancyError as exc:
        raise ActionFailed(str(exc)) from exc


async def _backfill(ctx: ActionContext, params: BackfillTenantIds) -> dict[str, Any]:
    dry, batch_size = params.dry_run, params.batch_size
    config = config_of(ctx)
    started = time.monotonic()
    async with ctx.connect() as conn:
        try:
            graph = await read_graph(conn)
            backfill.plan(graph)
        except GraphError as exc:
            raise ActionFailed(f"cannot backfill: {exc}") from exc
        if not graph.tenant_tables:
            raise ActionFailed(f"no application table has a {graph.column} column")
        if dry:
            await ctx.progress(Progress(done=0, total=1, unit="steps"), "counting")
            tables = await backfill.dry_run(ctx, conn, graph, config)
            await ctx.progress(Progress(done=1, total=1, unit="steps"), "counted")
            return {
                "dry_run": True,
                "order": list(tables),
                "tables": tables,
                "would_set": sum(t["would_set"] for t in tables.values()),
                "unresolvable": sum(t["unresolvable"] for t in tables.values()),
                "graph": graph.describe(),
                "duration_s": round(time.monotonic() - started, 3),
            }
        async with destructive_lock(ctx, conn, config):
            return await backfill.run(ctx, conn, graph, batch_size, config)
