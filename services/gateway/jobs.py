"""The gateway's index of maintenance jobs, fed by the job events on JetStream.

The worker publishes every state change of a job on ``ops.jobs.<job id>`` (stream OPS_EVENTS,
kept 30 days). The gateway follows ``ops.jobs.*`` with an ordered consumer that starts with
the *last* event of every job (``DeliverPolicy.LAST_PER_SUBJECT``) and then sees each new one,
so ``/api/jobs`` answers from memory without a database: the gateway stays up and useful when
PostgreSQL is the thing that is down. A job's whole history is read on demand
(``history``), from the same stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any

from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from shared import EVENTS_STREAM, JobEvent, get_logger, subjects

log = get_logger(__name__)

# A job id as the worker makes them (a UUID jti, or ``t-<hex>`` for unreadable tokens): checked
# before it goes into a subject, so a path can never widen the filter (``*``, ``>``, dots).
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TERMINAL = frozenset({"succeeded", "failed", "rejected", "cancelled"})


class JobIndex:
    """The latest event of every job seen, bounded: the oldest finished jobs go first."""

    def __init__(self, *, max_jobs: int = 10_000) -> None:
        self.latest: dict[str, JobEvent] = {}
        self.ready = False  # subscribed: what the stream holds is being (or was) replayed
        self.watch_restarts = 0
        self._max_jobs = max_jobs

    def apply(self, event: JobEvent) -> None:
        current = self.latest.get(event.job_id)
        if current is not None and current.time > event.time:
            return  # a late, older event never rolls a job back
        self.latest[event.job_id] = event
        if len(self.latest) > self._max_jobs:
            self._evict()

    def _evict(self) -> None:
        finished = sorted(
            (e for e in self.latest.values() if e.state in TERMINAL), key=lambda e: e.time
        )
        for event in finished[: len(self.latest) - self._max_jobs]:
            del self.latest[event.job_id]

    def query(
        self, *, state: str | None = None, action: str | None = None, limit: int = 50
    ) -> list[JobEvent]:
        """Newest first, optionally one state and/or one action (``backup.*`` as a prefix)."""
        prefix = action[:-1] if action and action.endswith("*") else None
        jobs = [
            e
            for e in self.latest.values()
            if (state is None or e.state == state)
            and (action is None or (e.action.startswith(prefix) if prefix else e.action == action))
        ]
        jobs.sort(key=lambda e: e.time, reverse=True)
        return jobs[:limit]

    async def watch(self, client: Callable[[], Any]) -> None:
        """Follow ``ops.jobs.*`` forever, re-subscribing after any error."""
        while True:
            sub = None
            try:
                js = client().jetstream()
                sub = await js.subscribe(
                    subjects.JOBS_ALL,
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                )
                self.ready = True
                async for msg in sub.messages:
                    self._take(msg.data, msg.subject)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.watch_restarts += 1
                log.info("jobs.watch_restart", reason=type(exc).__name__)
                await asyncio.sleep(0.5)
            finally:
                if sub is not None:
                    with contextlib.suppress(Exception):  # being replaced anyway
                        await sub.unsubscribe()

    def _take(self, data: bytes, subject: str) -> None:
        try:
            event = JobEvent.model_validate_json(data)
        except ValidationError as exc:
            # The worker validates what it publishes; anything else is not ours to show.
            log.warning("jobs.invalid_event", subject=subject, error=str(exc)[:300])
            return
        self.apply(event)


async def history(
    client: Any, job_id: str, *, limit: int = 500, timeout_s: float = 2.0
) -> list[JobEvent]:
    """Every event of one job still in the stream, oldest first (empty: no such job)."""
    js = client.jetstream()
    subject = subjects.job(job_id)
    try:  # where to stop: the job's newest event now
        last = await js.get_last_msg(EVENTS_STREAM, subject)
    except NotFoundError:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    events: list[JobEvent] = []
    try:
        while len(events) < limit:
            msg = await sub.next_msg(timeout=timeout_s)
            with contextlib.suppress(ValidationError):
                events.append(JobEvent.model_validate_json(msg.data))
            if msg.metadata.sequence.stream >= last.seq:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return events
