"""What backfill and purge share: keyset SQL on a primary key, short batch transactions with
``lock_timeout`` retried with backoff, cancellable pauses, and the destructive-job lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from shared import DESTRUCTIVE_ACTIONS, Progress, get_logger

from ..locks import destructive_lock as hold_destructive_lock
from .graph import Table, TenancyError, quote_ident

if TYPE_CHECKING:
    from ..actions.context import ActionContext

log = get_logger(__name__)
T = TypeVar("T")


# Errors a batch is retried on: lock_timeout, deadlock victim, serialization failure.
RETRYABLE = (
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)


@dataclass(frozen=True)
class BatchConfig:
    """Tuning shared by backfill and purge (``ctx.extras["tenancy_config"]`` overrides it)."""

    lock_timeout_s: float = 2.0  # SET LOCAL lock_timeout of each batch transaction
    throttle_s: float = 0.05  # pause between batches (give the app room)
    retry_base_s: float = 0.2  # first backoff after a lock timeout, doubled each time
    retry_max_s: float = 5.0  # backoff ceiling
    max_attempts: int = 100  # attempts of one batch before the job fails (cancellable anyway)
    purge_batch_size: int = 1000  # rows a purge batch deletes
    sample_size: int = 20  # primary keys of unresolvable rows kept for the report
    lock_poll_s: float = 0.5  # while waiting for the destructive lock
    # Test hook: awaited after each committed backfill batch with (table, batch number).
    after_batch: Callable[[str, int], Awaitable[None]] | None = None


def config_of(ctx: ActionContext) -> BatchConfig:
    value = ctx.extras.get("tenancy_config")
    return value if isinstance(value, BatchConfig) else BatchConfig()


def key_columns(table: Table, alias: str) -> str:
    return ", ".join(f"{alias}.{quote_ident(c)}" for c in table.primary_key)


def key_after(table: Table, alias: str, first: int) -> str:
    """``(t.a, t.b) > ($n::text::type, ...)``: the keyset condition after a stored key."""
    params = ", ".join(f"${first + i}::text::{typ}" for i, typ in enumerate(table.key_types))
    return f"({key_columns(table, alias)}) > ({params})"


def key_text(table: Table, alias: str) -> str:
    """The key as a text array (JSON-able, stored in checkpoints, fed back as parameters)."""
    return "ARRAY[" + ", ".join(f"{alias}.{quote_ident(c)}::text" for c in table.primary_key) + "]"


async def pause(ctx: ActionContext, seconds: float) -> None:
    """Sleep, but wake up (and raise ``JobCancelled``) on a cancel."""
    ctx.raise_if_cancelled()
    if seconds <= 0:
        return
    try:
        await asyncio.wait_for(ctx.cancel_event.wait(), timeout=seconds)
    except TimeoutError:
        return
    ctx.raise_if_cancelled()


async def in_batch(
    ctx: ActionContext,
    conn: asyncpg.Connection,
    config: BatchConfig,
    what: str,
    work: Callable[[asyncpg.Connection], Awaitable[T]],
) -> tuple[T, int]:
    """Run ``work`` in its own transaction with ``SET LOCAL lock_timeout``; a lock timeout
    (or deadlock) rolls it back and retries with backoff. Returns (result, retries)."""
    attempt = 0
    while True:
        ctx.raise_if_cancelled()
        try:
            async with conn.transaction():
                await conn.execute(
                    f"SET LOCAL lock_timeout = '{int(config.lock_timeout_s * 1000)}ms'"
                )
                result = await ctx.cancellable(work(conn))
            return result, attempt
        except RETRYABLE as exc:
            attempt += 1
            if attempt >= config.max_attempts:
                raise TenancyError(
                    f"{what}: still blocked by other transactions after {attempt} attempts "
                    f"({type(exc).__name__}); nothing of this batch was written — find the "
                    "blocking sessions (db.report) and re-run"
                ) from exc
            delay = min(config.retry_base_s * 2 ** (attempt - 1), config.retry_max_s)
            log.info("tenancy.batch_retry", what=what, attempt=attempt, delay_s=delay,
                     error=type(exc).__name__)
            await ctx.progress(ctx.last_progress,
                               f"{what}: waiting for locks (attempt {attempt}, "
                               f"retry in {delay:.1f} s)")
            await pause(ctx, delay)


@asynccontextmanager
async def destructive_lock(
    ctx: ActionContext, conn: asyncpg.Connection, config: BatchConfig
) -> AsyncIterator[None]:
    """Hold the runner's destructive-job lock on ``conn`` unless the runner already holds it
    for this action (it does for ``shared.DESTRUCTIVE_ACTIONS``)."""
    if ctx.action in DESTRUCTIVE_ACTIONS:
        yield
        return
    async with hold_destructive_lock(conn, ctx, wait=lambda: pause(ctx, config.lock_poll_s)):
        yield


def progress(done: int, total: int) -> Progress:
    return Progress(done=done, total=max(total, done), unit="rows")


def count_of(status: Any) -> int:
    """Rows affected from a command status such as ``DELETE 12``."""
    try:
        return int(str(status).rsplit(" ", 1)[-1])
    except ValueError:
        return 0

