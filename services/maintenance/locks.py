"""The destructive-job lock: one data-changing job at a time across every replica.

A Postgres session advisory lock, held on a connection of the job's own for the whole job
(closing that connection releases it, so a crashed worker never leaves it held). The runner
takes it for ``shared.DESTRUCTIVE_ACTIONS``; a real backfill takes it itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import asyncpg

from shared import get_logger

if TYPE_CHECKING:
    from .actions.context import ActionContext

log = get_logger(__name__)

# Any fixed 64-bit number shared by every replica: "opsdestr" in ASCII.
DESTRUCTIVE_LOCK_ID = 0x6F70736465737472


@asynccontextmanager
async def destructive_lock(
    conn: asyncpg.Connection, ctx: ActionContext, *, wait: Callable[[], Awaitable[None]]
) -> AsyncIterator[None]:
    """Hold the lock on ``conn``; while another job has it, say so once and ``wait()`` (which
    raises ``JobCancelled`` when the job is cancelled) between tries."""
    waiting = False
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", DESTRUCTIVE_LOCK_ID):
        if not waiting:
            waiting = True
            await ctx.progress(ctx.last_progress, "waiting for another destructive job to finish")
        await wait()
    try:
        yield
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", DESTRUCTIVE_LOCK_ID)
        except Exception as exc:  # closing the connection releases it anyway
            log.warning("job.unlock_failed", error=str(exc))
