"""What every backup job shares: cancellation by event, best-effort progress, the clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

from shared import Progress, get_logger

from .errors import BackupCancelled
from .models import ProgressCallback

log = get_logger(__name__)
T = TypeVar("T")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


async def run_cancellable(cancel: asyncio.Event, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` until it ends or ``cancel`` is set; on cancel, ``work`` is cancelled (its
    ``finally`` blocks clean up: kill the child, abort the upload, drop the scratch database)
    and ``BackupCancelled`` is raised. Cancelling the caller cancels ``work`` the same way."""
    if cancel.is_set():
        work.close()
        raise BackupCancelled("cancelled before it started")
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(cancel.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.shield(task)
        raise
    finally:
        waiter.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise BackupCancelled("cancelled; everything it started was cleaned up")


class Reporter:
    """Calls the job's progress callback; a failing callback is logged, never fatal."""

    def __init__(
        self, callback: ProgressCallback, unit: str = "bytes", every_s: float = 1.0
    ) -> None:
        self._callback = callback
        self._unit = unit
        self._every_s = every_s
        self._last: float | None = None

    async def throttled(self, done: int, total: int | None, message: str) -> None:
        """Report at most once every ``every_s`` seconds (for per-chunk call sites)."""
        now = time.monotonic()
        if self._last is None or now - self._last >= self._every_s:
            self._last = now
            await self(done, total, message)

    async def __call__(self, done: int, total: int | None, message: str) -> None:
        progress = Progress(done=max(0, done), total=total, unit=self._unit)
        try:
            await self._callback(progress, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("backup.progress_failed", error=f"{type(exc).__name__}: {exc}"[:300])
