"""The scheduler: runs the schedule's entries (``schedule_config``) as jobs, once per fire time
across every replica (docs/schedule.md).

- **Exactly once**: a fire is decided in one transaction by whichever replica comes first: a row
  in ``ops.schedule_fires`` (primary key: entry, fire time) and, for a run, a job in ``ops.jobs``
  under ``uuid5(entry name, fire time)`` inserted with ``ON CONFLICT DO NOTHING``, audited in
  ``ops.command_audit`` (outcome ``accepted``, issuer ``scheduler:<name>``, a note saying which
  entry and fire time). Only that replica publishes the ``queued`` event and runs the job.
- **Misfires**: a fire whose run time passed less than ``misfire_grace_s`` ago still runs, once;
  older ones (the worker was down, the database away) are skipped and logged, never caught up
  in a burst: one ``skipped_misfire`` row for the newest, with the count.
- **No overlap**: while the entry's previous run is still queued or running, a fire is skipped.
- A run this worker cannot do (no handler yet, a seed guard off) is recorded ``rejected`` with
  the reason, like a signed command would be: visible in the jobs list, never silently dropped.
- The clock and the sleep are injected: tests drive minutes of schedule without waiting.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import asyncpg
from prometheus_client import Counter, Gauge

from shared import DatabaseError, Queries, database_errors, get_logger, utcnow

from . import metrics
from .intake import GUARDS
from .jobs import JobRecord, JobStore
from .schedule_config import Schedule, ScheduledJob, fire_key, scheduled_job_id

log = get_logger(__name__)

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

MAX_SCAN = 1000  # fires looked at one by one after an outage; past that, jump ahead
KEEP_FIRES = timedelta(days=400)  # ops.schedule_fires rows older than this are deleted
TERMINAL_STATES = ("succeeded", "failed", "cancelled", "rejected")

NEXT_RUN = Gauge(
    "opsplane_schedule_next_run_timestamp_seconds",
    "When the schedule entry runs next (Unix time, jitter included).",
    ["name"],
)
LAST_RUN = Gauge(
    "opsplane_schedule_last_run_timestamp_seconds",
    "When the entry's latest scheduled run that ended in this state ended (Unix time; read "
    "from the database, so every replica reports the same).",
    ["name", "state"],
)
FIRED = Counter(
    "opsplane_schedule_fired",
    "Scheduled runs this worker created, by outcome (queued, or rejected when it cannot run "
    "the action).",
    ["name", "outcome"],
)
SKIPPED = Counter(
    "opsplane_schedule_skipped",
    "Fire times skipped by this worker: misfire (missed by more than the grace) or overlap "
    "(the previous run was still queued or running).",
    ["name", "reason"],
)
CONFIG_VALID = Gauge(
    "opsplane_schedule_config_valid",
    "1 when the schedule (OPS_SCHEDULE or the defaults) loaded, 0 when it is invalid and no "
    "scheduled job runs.",
)
ENTRIES = Gauge("opsplane_schedule_entries", "Enabled schedule entries.")


class Submitter(Protocol):
    """What the scheduler needs from the runner."""

    def supports(self, action: str) -> bool: ...

    def submit(self, job_id: str) -> None: ...


@dataclass(frozen=True)
class Decision:
    name: str
    fire_time: datetime
    outcome: str  # queued | rejected | skipped_overlap | skipped_misfire | taken
    job_id: str | None = None
    detail: str = ""


_OVERLAP = """
SELECT f.job_id, j.state FROM ops.schedule_fires f JOIN ops.jobs j ON j.job_id = f.job_id
WHERE f.name = $1 AND j.state IN ('queued', 'running') AND f.job_id <> $2
ORDER BY f.fire_time DESC LIMIT 1
"""
_FIRE = """
INSERT INTO ops.schedule_fires (name, fire_time, action, outcome, job_id, detail, worker)
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name, fire_time) DO NOTHING RETURNING true
"""
_JOB = """
INSERT INTO ops.jobs (job_id, action, state, issuer, params, message, error, result,
                      finished_at)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8::jsonb,
        CASE WHEN $3 = 'rejected' THEN now() END)
ON CONFLICT (job_id) DO NOTHING RETURNING job_id
"""
_AUDIT = """
INSERT INTO ops.command_audit (subject, jti, issuer, action, outcome, reason, job_id,
                               token_sha256, worker, note)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
_LAST = """
SELECT DISTINCT ON (f.name, j.state) f.name, j.state,
       coalesce(j.finished_at, j.updated_at) AS ended_at
FROM ops.schedule_fires f JOIN ops.jobs j ON j.job_id = f.job_id
WHERE f.name = ANY($1::text[]) AND j.state = ANY($2::text[])
ORDER BY f.name, j.state, f.fire_time DESC
"""


class CronScheduler:
    def __init__(
        self,
        schedule: Schedule,
        *,
        pool: asyncpg.Pool,
        store: JobStore,
        runner: Submitter,
        worker: str,
        guards: Mapping[str, bool] | None = None,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
        max_sleep_s: float = 30.0,
        retry_s: float = 5.0,
    ) -> None:
        self.schedule = schedule
        self.pool = pool
        self.db = Queries(pool)
        self.store = store
        self.runner = runner
        self.worker = worker
        self.guards = dict(guards or {})
        self.clock = clock
        self.sleep = sleep
        self.max_sleep_s = max_sleep_s
        self.retry_s = retry_s
        self.pending: dict[str, datetime] = {}  # entry name -> next fire time (nominal)
        self.last: dict[str, tuple[str, datetime]] = {}  # entry -> latest (state, ended_at)
        self._cleaned: datetime | None = None

    # ---- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Start (retried while the database is away), then fire entries as they come due."""
        jobs = self.schedule.enabled
        ENTRIES.set(len(jobs))
        if not jobs:
            log.info("schedule.empty", source=self.schedule.source)
            return
        delay = 1.0
        while True:
            try:
                await self.start()
                break
            except DatabaseError as exc:
                log.warning("schedule.database_unavailable", error=str(exc), retry_s=delay)
                await self.sleep(delay)
                delay = min(delay * 2, 30.0)
        while True:
            healthy = await self.tick()
            wait = self.seconds_to_next() if healthy else self.retry_s
            await self.sleep(max(0.0, min(wait, self.max_sleep_s)))

    async def start(self) -> None:
        """Where each entry stands: just after its last decided fire (so fires missed while
        every worker was down are seen, and skipped), or just before the grace window when it
        never fired."""
        now = self.clock()
        names = [j.name for j in self.schedule.enabled]
        rows = await self.db.fetch(
            "SELECT name, max(fire_time) AS last FROM ops.schedule_fires "
            "WHERE name = ANY($1::text[]) GROUP BY name", names,
        )
        decided = {r["name"]: r["last"] for r in rows}
        for job in self.schedule.enabled:
            last = decided.get(job.name)
            if last is not None:
                pending = job.next_fire(last)
            else:  # never decided: only fires still within the grace are candidates
                pending = job.next_fire(now - self._lookback(job))
                while (now - job.run_at(pending)).total_seconds() > job.misfire_grace_s:
                    pending = job.next_fire(pending)
            self.pending[job.name] = pending
            self._show_next(job)
            log.info("schedule.entry", name=job.name, action=job.action, cron=job.cron,
                     timezone=job.timezone, next_run=fire_key(job.run_at(self.pending[job.name])))
        await self.refresh()

    async def tick(self) -> bool:
        """Decide every due fire; ``False`` when the database failed (retried soon)."""
        healthy = True
        for job in self.schedule.enabled:
            try:
                await self.advance(job, self.clock())
            except DatabaseError as exc:
                healthy = False
                log.warning("schedule.database_unavailable", name=job.name, error=str(exc))
        try:
            await self.refresh()
        except DatabaseError as exc:
            log.warning("schedule.refresh_failed", error=str(exc))
        return healthy

    def seconds_to_next(self) -> float:
        now = self.clock()
        waits = [(self.schedule.by_name(name).run_at(fire) - now).total_seconds()
                 for name, fire in self.pending.items()]
        return min(waits, default=self.max_sleep_s)

    # ---- decisions ---------------------------------------------------------------------------

    async def advance(self, job: ScheduledJob, now: datetime) -> list[Decision]:
        """Decide ``job``'s fires that are due at ``now``: the newest runs if it is within the
        grace, every other one is a misfire. The entry moves on only once all are recorded."""
        cursor = self.pending[job.name]
        first: datetime | None = None
        before_newest: datetime | None = None
        newest: datetime | None = None
        count, jumped = 0, False
        while job.run_at(cursor) <= now:
            first = first or cursor
            before_newest, newest = newest, cursor
            count += 1
            cursor = job.next_fire(cursor)
            if count == MAX_SCAN:  # a frequent entry after a long outage: jump ahead
                floor = now - self._lookback(job)
                if cursor < floor:
                    jumped, cursor = True, job.next_fire(floor)
        if newest is None or first is None:
            return []
        late = (now - job.run_at(newest)).total_seconds()
        run = newest if late <= job.misfire_grace_s else None
        last_missed = newest if run is None else before_newest
        decisions = []
        if last_missed is not None:
            missed = count - (1 if run is not None else 0)
            decisions.append(await self._misfire(job, first, last_missed, missed, more=jumped,
                                                 now=now))
        if run is not None:
            decisions.append(await self._fire(job, run, now))
        self.pending[job.name] = cursor
        self._show_next(job)
        return decisions

    async def _misfire(self, job: ScheduledJob, first: datetime, last: datetime, count: int,
                       *, more: bool, now: datetime) -> Decision:
        late = (now - job.run_at(last)).total_seconds()
        counted = f"{count}+" if more else str(count)
        detail = (f"{counted} fire(s) missed ({fire_key(first)} .. {fire_key(last)}); the newest "
                  f"by {late:.0f} s, past the grace of {job.misfire_grace_s:g} s: not run")
        inserted = await self.db.fetchval(_FIRE, job.name, last, job.action, "skipped_misfire",
                                        None, detail, self.worker)
        if not inserted:
            return Decision(job.name, last, "taken")
        SKIPPED.labels(name=job.name, reason="misfire").inc(count)
        log.warning("schedule.misfire", name=job.name, action=job.action, missed=counted,
                    first=fire_key(first), last=fire_key(last), late_s=round(late),
                    grace_s=job.misfire_grace_s)
        return Decision(job.name, last, "skipped_misfire", detail=detail)

    def _refusal(self, job: ScheduledJob) -> tuple[str, str] | None:
        """Why this worker cannot run ``job``'s action now (the reasons intake would give)."""
        for prefix, (attribute, variable) in GUARDS.items():
            if job.action.startswith(prefix) and not self.guards.get(attribute, False):
                return "guard_disabled", f"{job.action} needs {variable}=true on the worker"
        if not self.runner.supports(job.action):
            return "not_supported", f"{job.action} is valid but this worker cannot run it yet"
        return None

    async def _fire(self, job: ScheduledJob, fire: datetime, now: datetime) -> Decision:
        job_id = scheduled_job_id(job.name, fire)
        params = job.params.model_dump(mode="json")
        refusal = self._refusal(job)
        note = (f"scheduled: entry {job.name!r} ({job.describe()}) for {fire_key(fire)}, "
                f"run at {fire_key(now)}")
        fingerprint = hashlib.sha256(json.dumps(
            {"schedule": job.name, "fire_time": fire_key(fire), "action": job.action,
             "params": params}, sort_keys=True).encode()).hexdigest()
        record: JobRecord | None = None
        with database_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                busy = await conn.fetchrow(_OVERLAP, job.name, job_id)
                if busy is not None:
                    detail = f"the previous run {busy['job_id']} is still {busy['state']}"
                    if not await conn.fetchval(_FIRE, job.name, fire, job.action,
                                               "skipped_overlap", None, detail, self.worker):
                        return Decision(job.name, fire, "taken")
                    SKIPPED.labels(name=job.name, reason="overlap").inc()
                    log.warning("schedule.overlap", name=job.name, fire_time=fire_key(fire),
                                previous=busy["job_id"], state=busy["state"])
                    return Decision(job.name, fire, "skipped_overlap", detail=detail)
                state = "rejected" if refusal else "queued"
                detail = f"{refusal[0]}: {refusal[1]}" if refusal else ""
                if not await conn.fetchval(_FIRE, job.name, fire, job.action, state, job_id,
                                           detail, self.worker):
                    return Decision(job.name, fire, "taken", job_id)
                message = refusal[1] if refusal else note
                error = detail if refusal else None
                result = {"reason": refusal[0]} if refusal else None
                if not await conn.fetchval(_JOB, job_id, job.action, state, job.issuer,
                                           json.dumps(params), message, error,
                                           json.dumps(result) if result else None):
                    return Decision(job.name, fire, "taken", job_id)  # a job had that id
                await conn.execute(_AUDIT, f"schedule:{job.name}", job_id, job.issuer,
                                   job.action, "rejected" if refusal else "accepted",
                                   refusal[0] if refusal else None, job_id, fingerprint,
                                   self.worker, note)
                record = JobRecord(job_id=job_id, action=job.action, state=state,
                                   params=params, message=message, error=error,
                                   result=result, issuer=job.issuer)
        assert record is not None
        state = record.state
        metrics.JOBS.labels(action=job.action, state=state).inc()
        FIRED.labels(name=job.name, outcome=state).inc()
        await self.store.announce(record)
        if refusal:
            log.warning("schedule.rejected", name=job.name, job_id=job_id, action=job.action,
                        fire_time=fire_key(fire), reason=refusal[0], detail=refusal[1])
            return Decision(job.name, fire, "rejected", job_id, detail)
        log.info("schedule.fired", name=job.name, job_id=job_id, action=job.action,
                 fire_time=fire_key(fire), late_s=round((now - fire).total_seconds(), 1))
        self.runner.submit(job_id)
        return Decision(job.name, fire, "queued", job_id)

    # ---- what the metrics and readiness show -------------------------------------------------

    async def refresh(self) -> None:
        """Latest outcome of every entry (from the database) into the gauges; old fires out."""
        now = self.clock()
        if self._cleaned is None or now - self._cleaned > timedelta(hours=6):
            await self.db.execute("DELETE FROM ops.schedule_fires WHERE fire_time < $1",
                                now - KEEP_FIRES)
            self._cleaned = now
        rows = await self.db.fetch(_LAST, [j.name for j in self.schedule.enabled],
                                 list(TERMINAL_STATES))
        for row in rows:
            ended: datetime = row["ended_at"]
            LAST_RUN.labels(name=row["name"], state=row["state"]).set(ended.timestamp())
            current = self.last.get(row["name"])
            if current is None or ended >= current[1]:
                self.last[row["name"]] = (row["state"], ended)

    def _show_next(self, job: ScheduledJob) -> None:
        NEXT_RUN.labels(name=job.name).set(job.run_at(self.pending[job.name]).timestamp())

    def status(self) -> str:
        """One line for ``/readyz``."""
        jobs = self.schedule.enabled
        if not self.pending:
            return f"{len(jobs)} entr{'y' if len(jobs) == 1 else 'ies'} ({self.schedule.source})"
        name, fire = min(self.pending.items(),
                         key=lambda kv: self.schedule.by_name(kv[0]).run_at(kv[1]))
        at = fire_key(self.schedule.by_name(name).run_at(fire))
        return (f"{len(jobs)} entr{'y' if len(jobs) == 1 else 'ies'} ({self.schedule.source}); "
                f"next {name} at {at}")

    @staticmethod
    def _lookback(job: ScheduledJob) -> timedelta:
        return timedelta(seconds=job.misfire_grace_s + job.jitter_s)

