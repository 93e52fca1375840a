"""What an action handler gets: the job, its database, progress and cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import asyncpg
from pydantic import BaseModel

from shared import OpsplaneError, Progress

T = TypeVar("T")


class JobCancelled(OpsplaneError):
    """The job was asked to stop; it ends ``cancelled``."""


class ActionFailed(OpsplaneError):
    """The action cannot do what it was asked; it ends ``failed`` with this message."""


class CancelService(Protocol):
    """What ``job.cancel`` needs from the runner."""

    async def cancel(self, job_id: str, *, by: str) -> str: ...

    async def wait_terminal(self, job_id: str, timeout_s: float) -> str | None: ...


@dataclass
class ActionContext:
    job_id: str
    action: str
    pool: asyncpg.Pool
    # A dedicated connection without a statement timeout (VACUUM of a big table takes long).
    connect: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]
    cancel_event: asyncio.Event
    report: Callable[[Progress, str], Awaitable[None]]
    jobs: CancelService
    extras: dict[str, Any] = field(default_factory=dict)
    last_progress: Progress = field(default_factory=Progress)

    async def progress(self, progress: Progress, message: str = "") -> None:
        self.last_progress = progress
        await self.report(progress, message)

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled("cancelled on request")

    async def cancellable(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless the job is cancelled first: then it is cancelled (asyncpg
        sends the server a cancel request for a running statement) and ``JobCancelled`` raised."""
        self.raise_if_cancelled()
        work: asyncio.Future[Any] = asyncio.ensure_future(awaitable)
        stop: asyncio.Future[Any] = asyncio.ensure_future(self.cancel_event.wait())
        try:
            await asyncio.wait(
                [work, stop], return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            stop.cancel()
        if work.done():
            done: T = work.result()
            return done
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        raise JobCancelled("cancelled on request")


ActionHandler = Callable[[ActionContext, BaseModel], Awaitable[dict[str, Any]]]
