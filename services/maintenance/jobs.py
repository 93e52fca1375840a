"""The job store: ``ops.jobs`` rows and the ``JobEvent`` published on every change.

The table is the truth (a worker restart reads it back); events on ``ops.jobs.<job_id>``
(JetStream ``OPS_EVENTS``) are how followers learn of changes. A state change is published with
``Nats-Msg-Id = <job_id>:<state>``, so a re-publish after a retry is dropped by the server.
Publishing never fails a job: the row already holds the state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from shared import (
    DatabaseError,
    JobEvent,
    Progress,
    Queries,
    get_logger,
    subjects,
)

from . import metrics

log = get_logger(__name__)

TERMINAL = frozenset({"succeeded", "failed", "rejected", "cancelled"})
MAX_TEXT = 4000


class EventPublisher(Protocol):
    """Publishes one event to JetStream with a de-duplication id."""

    def __call__(self, subject: str, body: bytes, msg_id: str) -> Awaitable[None]: ...


def js_publisher(js_factory: Callable[[], Any], *, timeout_s: float = 2.0) -> EventPublisher:
    """An ``EventPublisher`` over nats-py's JetStream context (``js_factory()`` gives it)."""

    async def publish(subject: str, body: bytes, msg_id: str) -> None:
        await js_factory().publish(
            subject, body, timeout=timeout_s, headers={"Nats-Msg-Id": msg_id}
        )

    return publish


@dataclass
class JobRecord:
    job_id: str
    action: str
    state: str
    params: dict[str, Any]
    progress: Progress = field(default_factory=Progress)
    message: str = ""
    result: dict[str, Any] | None = None
    error: str | None = None
    issuer: str | None = None
    kid: str | None = None
    worker: str | None = None
    stream_seq: int | None = None
    cancel_requested: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> JobRecord:
        return cls(
            job_id=row["job_id"], action=row["action"], state=row["state"],
            params=_json(row["params"]) or {}, progress=Progress(**(_json(row["progress"]) or {})),
            message=row["message"], result=_json(row["result"]), error=row["error"],
            issuer=row["issuer"], kid=row["kid"], worker=row["worker"],
            stream_seq=row["stream_seq"], cancel_requested=row["cancel_requested"],
            created_at=row["created_at"], started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    def event(self) -> JobEvent:
        return JobEvent(
            job_id=self.job_id, action=self.action[:64], state=self.state,
            progress=self.progress, message=self.message[:MAX_TEXT], result=self.result,
            error=self.error[:MAX_TEXT] if self.error is not None else None,
        )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


_COLUMNS = (
    "job_id, action, state, issuer, kid, params, progress, message, result, error, worker, "
    "stream_seq, cancel_requested, created_at, started_at, finished_at"
)


class JobStore:
    """Rows of ``ops.jobs`` and their events. ``pool`` is an asyncpg pool (or anything with
    ``acquire()``/``fetchrow``/``fetch``/``execute`` like one)."""

    def __init__(self, pool: asyncpg.Pool, publish: EventPublisher, *, worker: str) -> None:
        self.pool = pool
        self.db = Queries(pool)
        self._publish = publish
        self.worker = worker
        self._progress_seq: dict[str, int] = {}

    # ---- reads -------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM ops.jobs WHERE job_id = $1", job_id)
        return JobRecord.from_row(row) if row else None

    async def recent(self, limit: int = 50) -> list[JobRecord]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM ops.jobs ORDER BY created_at DESC LIMIT $1", limit
        )
        return [JobRecord.from_row(r) for r in rows]

    async def queued(self) -> list[str]:
        rows = await self.db.fetch(
            "SELECT job_id FROM ops.jobs WHERE state = 'queued' ORDER BY created_at"
        )
        return [r["job_id"] for r in rows]

    # ---- transitions -------------------------------------------------------------------

    async def claim(self, job_id: str) -> JobRecord | None:
        """queued -> running for this worker; ``None`` when it is not queued (any more)."""
        row = await self.db.fetchrow(
            f"UPDATE ops.jobs SET state = 'running', worker = $2, started_at = now(), "
            f"updated_at = now(), message = '' WHERE job_id = $1 AND state = 'queued' "
            f"RETURNING {_COLUMNS}",
            job_id, self.worker,
        )
        if row is None:
            return None
        record = JobRecord.from_row(row)
        metrics.JOBS.labels(action=record.action, state="running").inc()
        await self.announce(record)
        return record

    async def progress(self, job_id: str, action: str, progress: Progress, message: str) -> None:
        """Record and publish progress of a running job (the caller throttles)."""
        await self.db.execute(
            "UPDATE ops.jobs SET progress = $2::jsonb, message = $3, updated_at = now() "
            "WHERE job_id = $1 AND state = 'running'",
            job_id, progress.model_dump_json(), message[:MAX_TEXT],
        )
        seq = self._progress_seq.get(job_id, 0) + 1
        self._progress_seq[job_id] = seq
        event = JobEvent(job_id=job_id, action=action[:64], state="running", progress=progress,
                         message=message[:MAX_TEXT])
        await self._send(event, f"{job_id}:p{seq}")

    async def finish(
        self,
        job_id: str,
        state: str,
        *,
        progress: Progress | None = None,
        message: str = "",
        result: dict[str, Any] | None = None,
        error: str | None = None,
        retry_for_s: float = 30.0,
    ) -> JobRecord | None:
        """running -> a terminal state, retried while the database is away (a job's outcome
        is worth waiting for); ``None`` when the job was not running (any more)."""
        assert state in TERMINAL
        delay, waited = 0.5, 0.0
        while True:
            try:
                row = await self.db.fetchrow(
                    f"UPDATE ops.jobs SET state = $2, progress = COALESCE($3::jsonb, progress), "
                    f"message = $4, result = $5::jsonb, error = $6, finished_at = now(), "
                    f"updated_at = now() WHERE job_id = $1 AND state = 'running' "
                    f"RETURNING {_COLUMNS}",
                    job_id, state, progress.model_dump_json() if progress else None,
                    message[:MAX_TEXT], _dump(result),
                    error[:MAX_TEXT] if error is not None else None,
                )
                break
            except DatabaseError:
                if waited >= retry_for_s:
                    raise
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)
        self._progress_seq.pop(job_id, None)
        if row is None:
            return None
        record = JobRecord.from_row(row)
        self._count_terminal(record)
        await self.announce(record)
        return record

    async def cancel_queued(self, job_id: str, message: str) -> JobRecord | None:
        """queued -> cancelled (it never started); ``None`` when it was not queued."""
        row = await self.db.fetchrow(
            f"UPDATE ops.jobs SET state = 'cancelled', message = $2, finished_at = now(), "
            f"updated_at = now() WHERE job_id = $1 AND state = 'queued' RETURNING {_COLUMNS}",
            job_id, message,
        )
        if row is None:
            return None
        record = JobRecord.from_row(row)
        metrics.JOBS.labels(action=record.action, state="cancelled").inc()
        await self.announce(record)
        return record

    async def request_cancel(self, job_id: str) -> None:
        """Flag a running job for cancellation (the worker running it sees it on its lease)."""
        await self.db.execute(
            "UPDATE ops.jobs SET cancel_requested = true WHERE job_id = $1 AND state = 'running'",
            job_id,
        )

    async def renew(self, job_ids: Sequence[str]) -> set[str]:
        """Renew the lease of this worker's running jobs; returns those asked to cancel."""
        if not job_ids:
            return set()
        rows = await self.db.fetch(
            "UPDATE ops.jobs SET updated_at = now() WHERE job_id = ANY($1::text[]) "
            "AND state = 'running' RETURNING job_id, cancel_requested",
            list(job_ids),
        )
        return {r["job_id"] for r in rows if r["cancel_requested"]}

    async def fail_orphans(self, *, lease_s: float, own: bool) -> list[JobRecord]:
        """Mark failed the running jobs of a lost worker: this worker's own, left by a previous
        process (``own``, at start-up), and any whose lease lapsed ``lease_s`` ago."""
        rows = await self.db.fetch(
            f"UPDATE ops.jobs SET state = 'failed', finished_at = now(), updated_at = now(), "
            f"error = CASE WHEN worker = $1 AND $3 THEN 'worker restarted while running' "
            f"ELSE 'worker lost while running (lease expired)' END "
            f"WHERE state = 'running' AND ((worker = $1 AND $3) "
            f"OR updated_at < now() - make_interval(secs => $2)) RETURNING {_COLUMNS}",
            self.worker, lease_s, own,
        )
        records = [JobRecord.from_row(r) for r in rows]
        for record in records:
            log.warning("job.orphan_failed", job_id=record.job_id, action=record.action,
                        error=record.error, worker=record.worker)
            self._count_terminal(record)
            await self.announce(record)
        return records

    # ---- events --------------------------------------------------------------------------

    async def announce(self, record: JobRecord) -> None:
        """Publish the record's current state (idempotent: de-duplicated by the server)."""
        await self._send(record.event(), f"{record.job_id}:{record.state}", attempts=3)

    async def _send(self, event: JobEvent, msg_id: str, *, attempts: int = 1) -> None:
        for attempt in range(attempts):
            try:
                await self._publish(subjects.job(event.job_id), event.to_bytes(), msg_id)
                return
            except Exception as exc:
                if attempt + 1 >= attempts:
                    log.warning("job.event_publish_failed", job_id=event.job_id,
                                state=event.state, error=str(exc) or type(exc).__name__)
                    return
                await asyncio.sleep(0.5 * (attempt + 1))

    @staticmethod
    def _count_terminal(record: JobRecord) -> None:
        metrics.JOBS.labels(action=record.action, state=record.state).inc()
        if record.started_at is not None and record.finished_at is not None:
            seconds = (record.finished_at - record.started_at).total_seconds()
            metrics.JOB_DURATION.labels(action=record.action).observe(max(seconds, 0.0))

