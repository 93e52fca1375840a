"""``purge.app_data``: delete application data, a backup first.

``scope=all`` truncates every application table in one statement; ``scope=tenant`` deletes the
tenant's rows children first through the foreign-key graph (``tenancy.purge``). Guards, confirm
and the target claim are checked at intake; the runner holds the destructive-job lock.

A dry run counts per table what would go; nothing is deleted and no backup is taken (nor when
there is nothing to delete). A real purge first calls the backup callable
``ctx.extras["backup"]`` (``async (ctx, label) -> {"key": ..., ...}``): when there is none, it
raises, or it returns no key, the purge refuses and nothing is deleted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from shared import Progress, PurgeAppData

from ..tenancy import purge
from ..tenancy.batches import config_of
from ..tenancy.graph import GraphError, TenancyError, read_graph
from .context import ActionContext, ActionFailed, ActionHandler, JobCancelled

BackupFn = Callable[[ActionContext, str], Awaitable[dict[str, Any]]]
REFUSED = "purge refused, nothing was deleted"


def backup_label(scope: str, tenant: str | None) -> str:
    """A backup label (1-64 of letters, digits, '.', '_', '-')."""
    return (f"before-purge-{tenant}" if scope == "tenant" else "before-purge-all")[:64]


async def take_backup(ctx: ActionContext, label: str) -> dict[str, Any]:
    backup = ctx.extras.get("backup")
    if backup is None:
        raise ActionFailed(f"{REFUSED}: this worker has no backup configured to take first")
    try:
        taken = await backup(ctx, label)
    except JobCancelled:
        raise
    except Exception as exc:  # any failure of the backup refuses the purge
        message = str(exc) or type(exc).__name__
        raise ActionFailed(f"{REFUSED}: the backup before it failed: {message}") from exc
    if not isinstance(taken, dict) or not taken.get("key"):
        raise ActionFailed(f"{REFUSED}: the backup before it returned no key: {taken!r}"[:500])
    return taken


async def purge_app_data(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, PurgeAppData)
    try:
        return await _purge(ctx, params)
    except TenancyError as exc:
        raise ActionFailed(str(exc)) from exc


async def _purge(ctx: ActionContext, params: PurgeAppData) -> dict[str, Any]:
    scope, tenant, dry = params.scope, params.tenant_id, params.dry_run
    config = config_of(ctx)
    started = time.monotonic()
    result: dict[str, Any] = {"scope": scope, "dry_run": dry}
    if tenant is not None:
        result["tenant_id"] = tenant
    async with ctx.connect() as conn:
        try:
            graph = await read_graph(conn)
            if scope == "tenant":
                graph.purge_order()
        except GraphError as exc:
            raise ActionFailed(f"cannot purge: {exc}") from exc
        await ctx.progress(Progress(done=0, total=None, unit="rows"), "counting")
        if scope == "tenant":
            assert tenant is not None
            counts = await purge.count_tenant(ctx, conn, graph, tenant, config)
        else:
            counts = await purge.count_all(ctx, conn, graph, config)
        result["tables"] = counts
        result["total"] = sum(counts.values())
        if dry or not result["total"]:  # nothing to delete: no backup needed either
            result["duration_s"] = round(time.monotonic() - started, 3)
            if not dry:
                result["deleted"] = counts
            return result
        ctx.raise_if_cancelled()
        await ctx.progress(Progress(done=0, total=result["total"], unit="rows"),
                           "taking a backup first")
        backup = await take_backup(ctx, backup_label(scope, tenant))
        result["backup"] = backup
        result["backup_key"] = backup["key"]
        ctx.raise_if_cancelled()
        if scope == "tenant":
            assert tenant is not None
            result["deleted"] = await purge.delete_tenant(ctx, conn, graph, tenant, counts,
                                                          config)
        else:
            await ctx.progress(Progress(done=0, total=result["total"], unit="rows"),
                               "truncating")
            result["truncated"] = await purge.truncate_all(ctx, conn, graph, config)
            result["deleted"] = counts
        await ctx.progress(Progress(done=result["total"], total=result["total"], unit="rows"),
                           "done")
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result


def purge_with_backup(backup: BackupFn) -> ActionHandler:
    """``purge_app_data`` with ``backup`` as the backup taken first (unless the context
    already carries one in ``extras["backup"]``)."""

    async def handler(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
        ctx.extras.setdefault("backup", backup)
        return await purge_app_data(ctx, params)

    return handler

