"""The runner: executes accepted jobs as asyncio tasks.

- At most ``concurrency`` jobs run at once in this worker; control actions (``job.cancel``)
  skip the queue, so a cancel never waits behind the job it is meant to stop.
- A job is claimed with a conditional UPDATE (``queued -> running``), so it runs once however
  many workers (or redeliveries) try.
- Destructive actions hold a Postgres advisory lock on a dedicated connection while they run:
  two never run at the same time, across every replica (the lock dies with the connection).
- Cancellation: ``job.cancel`` sets the job's cancel event here, or flags its row for the worker
  that runs it (seen on the next lease renewal). Handlers stop at their next step; one that does
  not within ``cancel_grace_s`` is cancelled outright. Either way the job ends ``cancelled``.
- Leases: this worker renews ``updated_at`` of its running jobs every ``renew_every_s``; a running
  job whose lease lapsed (``lease_s``) belongs to a lost worker and is marked failed by any
  worker. At start-up, jobs this instance left running are failed at once and queued jobs run.
- Progress: at most one event per ``progress_interval_s`` a job; the latest is never lost (sent
  when the interval ends, and carried by the terminal event).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import BaseModel, ValidationError

from shared import (
    DRIVER_ERRORS,
    DatabaseError,
    OpsplaneError,
    Progress,
    describe,
    get_logger,
    reason_of,
    scrub,
)

from . import metrics
from .actions import ActionContext, ActionFailed, ActionHandler, JobCancelled
from .jobs import TERMINAL, JobRecord, JobStore
from .locks import destructive_lock

log = get_logger(__name__)

Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]


@dataclass(frozen=True)
class RunnerConfig:
    concurrency: int = 2
    progress_interval_s: float = 0.25
    lease_s: float = 60.0
    renew_every_s: float = 2.0
    cancel_grace_s: float = 10.0
    lock_poll_s: float = 0.5


class ProgressThrottle:
    """Sends at most one progress update per ``interval_s``; a held-back one follows later."""

    def __init__(self, send: Callable[[Progress, str], Awaitable[None]], interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send, self._interval, self._clock = send, interval_s, clock
        self._last = -1e18
        self._pending: tuple[Progress, str] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.sent = 0

    async def report(self, progress: Progress, message: str) -> None:
        wait = self._last + self._interval - self._clock()
        if wait <= 0:
            self._pending = None
            await self._emit(progress, message)
            return
        self._pending = (progress, message)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_after(wait))

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await self._emit(*pending)

    async def _emit(self, progress: Progress, message: str) -> None:
        self._last = self._clock()
        self.sent += 1
        try:
            await self._send(progress, message)
        except OpsplaneError as exc:  # progress is not worth failing a job over
            log.warning("job.progress_failed", error=str(exc))

    async def close(self) -> None:
        """Drop what is held back (the terminal event carries the latest progress)."""
        self._pending = None
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)


class Runner:
    def __init__(
        self,
        store: JobStore,
        handlers: Mapping[str, ActionHandler],
        params_models: Mapping[str, type[BaseModel]],
        *,
        pool: asyncpg.Pool,
        connect: Connect,
        destructive: frozenset[str],
        control: frozenset[str] = frozenset(),
        config: RunnerConfig | None = None,
    ) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.params_models = params_models
        self.pool = pool
        self.connect = connect
        self.destructive = destructive
        self.control = control
        self.config = config or RunnerConfig()
        self._slots = asyncio.Semaphore(self.config.concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._running: dict[str, str] = {}  # job id -> action, claimed by this worker
        self._closing = False

    # ---- scheduling ----------------------------------------------------------------------

    def supports(self, action: str) -> bool:
        return action in self.handlers

    def submit(self, job_id: str) -> None:
        """Run ``job_id`` (a queued row) when a slot is free; a no-op if already scheduled."""
        if self._closing or job_id in self._tasks:
            return
        self._cancel[job_id] = asyncio.Event()
        task = asyncio.create_task(self._run(job_id), name=f"job.{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._forget(job_id))

    def _forget(self, job_id: str) -> None:
        self._tasks.pop(job_id, None)
        self._cancel.pop(job_id, None)

    @property
    def running(self) -> dict[str, str]:
        return dict(self._running)

    async def recover(self) -> None:
        """Start-up: fail what this instance left running, then run what is queued."""
        await self.store.fail_orphans(lease_s=self.config.lease_s, own=True)
        for job_id in await self.store.queued():
            self.submit(job_id)

    async def _run(self, job_id: str) -> None:
        action_slot = self._slots
        record = await self._claim(job_id, action_slot)
        if record is None:
            return
        try:
            await self._execute(record)
        finally:
            self._running.pop(job_id, None)
            if record.action not in self.control:
                action_slot.release()

    async def _claim(self, job_id: str, slots: asyncio.Semaphore) -> JobRecord | None:
        """Claim the job (after taking a slot unless it is a control action); retried while
        the database is away. ``None``: someone else has it, or it is no longer queued."""
        peek = await self._retry_db(lambda: self.store.get(job_id))
        if peek is None or peek.state != "queued":
            return None
        control = peek.action in self.control
        if not control:
            await slots.acquire()
        try:
            record: JobRecord | None = await self._retry_db(lambda: self.store.claim(job_id))
        except BaseException:
            if not control:
                slots.release()
            raise
        if record is None:
            if not control:
                slots.release()
            return None
        self._running[job_id] = record.action
        return record

    async def _retry_db(self, call: Callable[[], Awaitable[Any]]) -> Any:
        delay = 0.5
        while True:
            try:
                return await call()
            except DatabaseError as exc:
                log.warning("job.db_unavailable", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # ---- execution -----------------------------------------------------------------------

    async def _execute(self, record: JobRecord) -> None:
        event = self._cancel.setdefault(record.job_id, asyncio.Event())
        if record.cancel_requested:
            event.set()

        async def send(progress: Progress, message: str) -> None:
            await self.store.progress(record.job_id, record.action, progress, message)

        throttle = ProgressThrottle(send, self.config.progress_interval_s)
        ctx = ActionContext(
            job_id=record.job_id, action=record.action, pool=self.pool, connect=self.connect,
            cancel_event=event, report=throttle.report, jobs=self,
        )
        state, message = "failed", ""
        result: dict[str, Any] | None = None
        error: str | None = None
        metrics.RUNNING.inc()
        log.info("job.started", job_id=record.job_id, action=record.action)
        try:
            handler = self.handlers.get(record.action)
            if handler is None:
                raise ActionFailed(f"this worker has no handler for {record.action}")
            params = self._params(record)
            async with self._exclusive(record.action, ctx):
                result = await self._race(handler(ctx, params), event)
            state, message = "succeeded", "done"
        except JobCancelled as exc:
            state, message = "cancelled", str(exc)
        except asyncio.CancelledError:
            error = "worker shut down while running"
            await throttle.close()
            await self._finish(record, "failed", ctx, "", None, error, retry_for_s=2.0)
            raise
        except (ActionFailed, OpsplaneError) as exc:
            error = str(exc) or type(exc).__name__
        except DRIVER_ERRORS as exc:
            error = describe(exc)
        except Exception as exc:
            log.exception("job.crashed", job_id=record.job_id, action=record.action)
            error = scrub(f"{type(exc).__name__}: {exc}")[:2000]
        finally:
            metrics.RUNNING.dec()
        await throttle.close()
        await self._finish(record, state, ctx, message, result, error)

    async def _finish(self, record: JobRecord, state: str, ctx: ActionContext, message: str,
                      result: dict[str, Any] | None, error: str | None,
                      retry_for_s: float = 30.0) -> None:
        log.info("job.finished", job_id=record.job_id, action=record.action, state=state,
                 error=error)
        try:
            await self.store.finish(record.job_id, state, progress=ctx.last_progress,
                                    message=message, result=result, error=error,
                                    retry_for_s=retry_for_s)
        except DatabaseError as exc:  # the lease lapses and another sweep fails it
            log.error("job.finish_unrecorded", job_id=record.job_id, state=state, error=str(exc))

    def _params(self, record: JobRecord) -> BaseModel:
        model = self.params_models.get(record.action)
        if model is None:
            raise ActionFailed(f"unknown action {record.action}")
        try:
            return model.model_validate(record.params)
        except ValidationError as exc:
            raise ActionFailed(f"bad params: {reason_of(exc)}") from exc

    async def _race(
        self, work: Awaitable[dict[str, Any]], event: asyncio.Event
    ) -> dict[str, Any]:
        """Run the handler; after a cancel request, give it ``cancel_grace_s`` to stop itself,
        then cancel it."""
        task: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(work)
        stop: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                try:
                    return await asyncio.wait_for(asyncio.shield(task),
                                                  self.config.cancel_grace_s)
                except TimeoutError:
                    raise JobCancelled(
                        "cancelled on request (stopped after the grace period)"
                    ) from None
            return task.result()
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    @asynccontextmanager
    async def _exclusive(self, action: str, ctx: ActionContext) -> AsyncIterator[None]:
        """The destructive-job lock, held on its own connection for the whole job."""
        if action not in self.destructive:
            yield
            return

        async def wait() -> None:
            ctx.raise_if_cancelled()
            await asyncio.sleep(self.config.lock_poll_s)

        async with self.connect() as conn, destructive_lock(conn, ctx, wait=wait):
            yield

    # ---- cancellation (job.cancel) and leases ------------------------------------------

    async def cancel(self, job_id: str, *, by: str) -> str:
        """Ask ``job_id`` to stop; returns its state before ("unknown" if there is none)."""
        record = await self.store.get(job_id)
        if record is None:
            return "unknown"
        if record.state == "queued":
            if await self.store.cancel_queued(job_id, f"cancelled by job {by} before it ran"):
                return "queued"
            record = await self.store.get(job_id)  # it started meanwhile
            if record is None:
                return "unknown"
        if record.state == "running":
            local = self._cancel.get(job_id)
            if local is not None and job_id in self._running:
                local.set()
            else:
                await self.store.request_cancel(job_id)
        return record.state

    async def wait_terminal(self, job_id: str, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while True:
            record = await self.store.get(job_id)
            if record is not None and record.state in TERMINAL:
                return record.state
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.1)

    async def lease_loop(self, housekeeping: Callable[[], Awaitable[None]] | None = None) -> None:
        """Renew leases, pick up cross-worker cancel requests, fail lost workers' jobs."""
        last_sweep = time.monotonic()
        sweep_every = max(self.config.lease_s / 4, self.config.renew_every_s)
        while True:
            await asyncio.sleep(self.config.renew_every_s)
            try:
                for job_id in await self.store.renew(list(self._running)):
                    event = self._cancel.get(job_id)
                    if event is not None and not event.is_set():
                        log.info("job.cancel_requested", job_id=job_id)
                        event.set()
                if time.monotonic() - last_sweep >= sweep_every:
                    last_sweep = time.monotonic()
                    await self.store.fail_orphans(lease_s=self.config.lease_s, own=False)
                    if housekeeping is not None:
                        await housekeeping()
            except DatabaseError as exc:
                log.warning("job.lease_failed", error=str(exc))

    async def close(self, timeout_s: float = 10.0) -> None:
        """Shutdown: queued jobs stay queued (run at the next start); running ones fail."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
