"""The scheduler against a real PostgreSQL, with a fake clock: one job per fire across replicas,
misfires, overlaps, actions this worker cannot run; and inside the worker with real NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from services.maintenance.actions import CONTROL_ACTIONS, ActionContext, ActionHandler, db_report
from services.maintenance.jobs import JobStore
from services.maintenance.runner import Runner, RunnerConfig
from services.maintenance.schedule_config import Schedule, parse_schedule, scheduled_job_id
from services.maintenance.scheduler import CronScheduler, Decision
from shared import ACTIONS, DESTRUCTIVE_ACTIONS, connect
from tests.harness import eventually

from .conftest import FakePublisher, audit_rows, job_row, wait_job


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class FakeClock:
    """A clock the test moves; ``sleep`` returns when the clock has reached its end."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._moved = asyncio.Condition()
        self.sleeping = 0
        self.naps = 0  # sleeps begun: a new one means the work before it is done

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        until = self.now + timedelta(seconds=seconds)
        self.naps += 1
        await asyncio.sleep(0)
        async with self._moved:
            self.sleeping += 1
            try:
                await self._moved.wait_for(lambda: self.now >= until)
            finally:
                self.sleeping -= 1

    async def set(self, now: datetime) -> None:
        self.now = now
        async with self._moved:
            self._moved.notify_all()


def schedule(cron: str = "0 2 * * *", action: str = "db.report", name: str = "report",
             **extra: Any) -> Schedule:
    lines = [f'name = "{name}"', f'cron = "{cron}"', f'action = "{action}"']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return parse_schedule("[[jobs]]\n" + "\n".join(lines))


@dataclass
class Replica:
    scheduler: CronScheduler
    runner: Runner
    publisher: FakePublisher
    clock: FakeClock

    async def tick_at(self, now: datetime) -> list[Decision]:
        await self.clock.set(now)
        decisions = []
        for job in self.scheduler.schedule.enabled:
            decisions += await self.scheduler.advance(job, now)
        await self.scheduler.refresh()
        return decisions


@asynccontextmanager
async def replica(dsn: str, sched: Schedule, now: datetime, *, worker: str = "w-1",
                  handlers: dict[str, ActionHandler] | None = None,
                  guards: dict[str, bool] | None = None) -> AsyncIterator[Replica]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=6)
    publisher = FakePublisher()
    store = JobStore(pool, publisher, worker=worker)

    @asynccontextmanager
    async def dedicated() -> AsyncIterator[asyncpg.Connection]:
        async with connect(dsn) as conn:
            yield conn

    runner = Runner(store, handlers if handlers is not None else {"db.report": db_report},
                    ACTIONS, pool=pool, connect=dedicated, destructive=DESTRUCTIVE_ACTIONS,
                    control=CONTROL_ACTIONS, config=RunnerConfig(progress_interval_s=0.0))
    clock = FakeClock(now)
    scheduler = CronScheduler(sched, pool=pool, store=store, runner=runner, worker=worker,
                              guards=guards, clock=clock, sleep=clock.sleep)
    try:
        await scheduler.start()
        yield Replica(scheduler, runner, publisher, clock)
    finally:
        await runner.close()
        await pool.close()


async def fires(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT * FROM ops.schedule_fires ORDER BY fire_time")
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def scheduled_jobs(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT * FROM ops.jobs WHERE issuer LIKE 'scheduler:%' ORDER BY created_at")
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def test_two_replicas_firing_the_same_ticks_create_one_job_each_time(
    worker_db: str,
) -> None:
    sched = schedule("0 2 * * *")
    start = utc(2026, 3, 1, 1, 59)
    async with replica(worker_db, sched, start, worker="w-1") as one, \
            replica(worker_db, sched, start, worker="w-2") as two:
        for day in range(1, 6):
            now = utc(2026, 3, day, 2, 0, 1)
            got = await asyncio.gather(one.tick_at(now), two.tick_at(now))
            outcomes = sorted(d.outcome for decisions in got for d in decisions)
            assert outcomes == ["queued", "taken"], f"day {day}: {outcomes}"
            job_id = scheduled_job_id("report", utc(2026, 3, day, 2))
            row = await wait_job(worker_db, job_id)
            assert (row["state"], row["issuer"], row["kid"]) == ("succeeded", "scheduler:report",
                                                                 None)
            winner = one if one.publisher.states(job_id) else two
            loser = two if winner is one else one
            story = list(dict.fromkeys(winner.publisher.states(job_id)))
            assert story == ["queued", "running", "succeeded"]
            assert loser.publisher.states(job_id) == [], "only the deciding replica publishes"
            assert row["worker"] == ("w-1" if winner is one else "w-2"), "and runs it"
        jobs = await scheduled_jobs(worker_db)
        assert [j["job_id"] for j in jobs] == [
            scheduled_job_id("report", utc(2026, 3, d, 2)) for d in range(1, 6)]
        assert [f["outcome"] for f in await fires(worker_db)] == ["queued"] * 5
        audits = await audit_rows(worker_db, job_id=jobs[0]["job_id"])
        assert [(a["outcome"], a["issuer"], a["subject"], a["reason"]) for a in audits] == [
            ("accepted", "scheduler:report", "schedule:report", None)]
        assert audits[0]["note"].startswith(
            "scheduled: entry 'report' (cron '0 2 * * *' in UTC) for 2026-03-01T02:00:00Z")
        assert len(audits[0]["token_sha256"]) == 64 and audits[0]["kid"] is None


async def test_a_fire_missed_within_the_grace_runs_once_even_across_a_restart(
    worker_db: str,
) -> None:
    sched = schedule("0 2 * * *", misfire_grace_s=600)
    # Every worker was down at 02:00; one comes back at 02:05.
    async with replica(worker_db, sched, utc(2026, 3, 2, 2, 5)) as back:
        [decision] = await back.tick_at(utc(2026, 3, 2, 2, 5))
        assert decision.outcome == "queued"
        assert decision.job_id == scheduled_job_id("report", utc(2026, 3, 2, 2))
        assert await back.tick_at(utc(2026, 3, 2, 2, 6)) == []
        assert (await wait_job(worker_db, decision.job_id))["state"] == "succeeded"
    # It restarts at 02:08: the 02:00 fire was decided, nothing runs again.
    async with replica(worker_db, sched, utc(2026, 3, 2, 2, 8)) as again:
        assert await again.tick_at(utc(2026, 3, 2, 2, 8)) == []
        assert again.scheduler.pending["report"] == utc(2026, 3, 3, 2)
    # An entry that never fired, first started past the grace: runs nothing, skips nothing.
    async with replica(worker_db, schedule("0 2 * * *", name="other", misfire_grace_s=600),
                       utc(2026, 3, 2, 2, 11)) as fresh:
        assert await fresh.tick_at(utc(2026, 3, 2, 2, 11)) == []
        assert fresh.scheduler.pending["other"] == utc(2026, 3, 3, 2)
    assert len(await scheduled_jobs(worker_db)) == 1
    assert len(await fires(worker_db)) == 1


async def test_fires_missed_past_the_grace_are_skipped_and_logged_never_caught_up(
    worker_db: str,
) -> None:
    sched = schedule("0 2 * * *", misfire_grace_s=600)
    async with replica(worker_db, sched, utc(2026, 3, 1, 1, 59)) as first:
        [ran] = await first.tick_at(utc(2026, 3, 1, 2, 0, 2))
        assert ran.outcome == "queued"
        await wait_job(worker_db, ran.job_id or "")
    before = sample("opsplane_schedule_skipped_total", name="report", reason="misfire")
    # Down from March 1st until March 4th 03:00: the 2nd, 3rd and 4th (an hour late) are missed.
    async with replica(worker_db, sched, utc(2026, 3, 4, 3)) as back:
        [skipped] = await back.tick_at(utc(2026, 3, 4, 3))
        assert skipped.outcome == "skipped_misfire"
        assert skipped.fire_time == utc(2026, 3, 4, 2)
        assert skipped.detail.startswith(
            "3 fire(s) missed (2026-03-02T02:00:00Z .. 2026-03-04T02:00:00Z); the newest by "
            "3600 s, past the grace of 600 s")
        assert back.scheduler.pending["report"] == utc(2026, 3, 5, 2)
        assert sample("opsplane_schedule_skipped_total", name="report",
                      reason="misfire") == before + 3
        assert sample("opsplane_schedule_next_run_timestamp_seconds",
                      name="report") == utc(2026, 3, 5, 2).timestamp()
    jobs = await scheduled_jobs(worker_db)
    assert len(jobs) == 1, "no catch-up run"
    assert [(f["fire_time"], f["outcome"]) for f in await fires(worker_db)] == [
        (utc(2026, 3, 1, 2), "queued"), (utc(2026, 3, 4, 2), "skipped_misfire")]
    # Down again until the 7th 02:03: the 5th and 6th are missed, the 7th is within the grace.
    async with replica(worker_db, sched, utc(2026, 3, 7, 2, 3)) as late:
        decisions = await late.tick_at(utc(2026, 3, 7, 2, 3))
        assert [(d.outcome, d.fire_time) for d in decisions] == [
            ("skipped_misfire", utc(2026, 3, 6, 2)), ("queued", utc(2026, 3, 7, 2))]
        assert decisions[0].detail.startswith("2 fire(s) missed")


async def test_a_frequent_entry_after_a_long_outage_skips_in_one_step(worker_db: str) -> None:
    sched = schedule("* * * * *", misfire_grace_s=90)
    async with replica(worker_db, sched, utc(2026, 3, 1, 0, 0, 30)) as first:
        [ran] = await first.tick_at(utc(2026, 3, 1, 0, 0, 30))
        await wait_job(worker_db, ran.job_id or "")
    async with replica(worker_db, sched, utc(2026, 3, 3, 0, 0, 30)) as back:
        decisions = await back.tick_at(utc(2026, 3, 3, 0, 0, 30))
        assert [d.outcome for d in decisions] == ["skipped_misfire", "queued"]
        assert decisions[0].detail.startswith("1000+ fire(s) missed")
        assert decisions[1].fire_time == utc(2026, 3, 3, 0, 0)
    assert len(await scheduled_jobs(worker_db)) == 2


@dataclass
class Gate:
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    started: list[str] = field(default_factory=list)

    def handler(self) -> Callable[[ActionContext, BaseModel], Awaitable[dict[str, Any]]]:
        async def blocked(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
            self.started.append(ctx.job_id)
            await ctx.cancellable(self.opened.wait())
            return {"ok": True}

        return blocked


async def test_a_fire_while_the_previous_run_is_still_running_is_skipped(
    worker_db: str,
) -> None:
    gate = Gate()
    sched = schedule("*/10 * * * *", misfire_grace_s=60)
    start = utc(2026, 3, 1, 0, 0)
    async with replica(worker_db, sched, start - timedelta(seconds=1),
                       handlers={"db.report": gate.handler()}) as r:
        [first] = await r.tick_at(start)
        await wait_job(worker_db, first.job_id or "", {"running"})
        before = sample("opsplane_schedule_skipped_total", name="report", reason="overlap")
        [skip] = await r.tick_at(start + timedelta(minutes=10))
        assert skip.outcome == "skipped_overlap"
        assert skip.detail == f"the previous run {first.job_id} is still running"
        assert sample("opsplane_schedule_skipped_total", name="report",
                      reason="overlap") == before + 1
        assert len(await scheduled_jobs(worker_db)) == 1
        gate.opened.set()
        assert (await wait_job(worker_db, first.job_id or ""))["state"] == "succeeded"
        [third] = await r.tick_at(start + timedelta(minutes=20))
        assert third.outcome == "queued"
        assert (await wait_job(worker_db, third.job_id or ""))["state"] == "succeeded"
    assert [f["outcome"] for f in await fires(worker_db)] == [
        "queued", "skipped_overlap", "queued"]


@dataclass
class Holder:
    """A runner stand-in that accepts jobs and never runs them (they stay queued)."""

    submitted: list[str] = field(default_factory=list)

    def supports(self, action: str) -> bool:
        return True

    def submit(self, job_id: str) -> None:
        self.submitted.append(job_id)


async def test_a_fire_while_the_previous_run_is_still_queued_is_skipped(worker_db: str) -> None:
    pool = await asyncpg.create_pool(worker_db, min_size=1, max_size=2)
    publisher, holder = FakePublisher(), Holder()
    clock = FakeClock(utc(2026, 3, 1))
    scheduler = CronScheduler(schedule("0 * * * *"), pool=pool,
                              store=JobStore(pool, publisher, worker="w-1"), runner=holder,
                              worker="w-1", clock=clock, sleep=clock.sleep)
    try:
        await scheduler.start()
        job = scheduler.schedule.by_name("report")
        [first] = await scheduler.advance(job, utc(2026, 3, 1, 0, 0, 1))
        assert holder.submitted == [first.job_id]
        [second] = await scheduler.advance(job, utc(2026, 3, 1, 1, 0, 1))
        assert (second.outcome, second.detail) == (
            "skipped_overlap", f"the previous run {first.job_id} is still queued")
        assert holder.submitted == [first.job_id]
    finally:
        await pool.close()


async def test_an_action_this_worker_cannot_run_is_recorded_rejected_not_dropped(
    worker_db: str,
) -> None:
    sched = parse_schedule(
        '[[jobs]]\nname = "nightly-backup"\ncron = "0 2 * * *"\naction = "backup.create"\n'
        'params = { label = "nightly" }\n'
        '[[jobs]]\nname = "backfill"\ncron = "0 3 * * *"\naction = "backfill.tenant_ids"\n')
    async with replica(worker_db, sched, utc(2026, 3, 1, 1)) as r:
        decisions = await r.tick_at(utc(2026, 3, 1, 2, 0, 1))
        decisions += await r.tick_at(utc(2026, 3, 1, 3, 0, 1))
        assert [(d.name, d.outcome) for d in decisions] == [
            ("nightly-backup", "rejected"), ("backfill", "rejected")]
        backup_id = scheduled_job_id("nightly-backup", utc(2026, 3, 1, 2))
        row = await job_row(worker_db, backup_id)
        assert row is not None
        assert (row["state"], row["error"]) == (
            "rejected", "not_supported: backup.create is valid but this worker cannot run it yet")
        assert row["finished_at"] is not None and row["started_at"] is None
        [event] = r.publisher.of(backup_id)
        assert (event.state, event.result) == ("rejected", {"reason": "not_supported"})
        [audit] = await audit_rows(worker_db, job_id=backup_id)
        assert (audit["outcome"], audit["reason"]) == ("rejected", "not_supported")
        backfill = await job_row(worker_db, scheduled_job_id("backfill", utc(2026, 3, 1, 3)))
        assert backfill is not None
        assert backfill["error"] == ("guard_disabled: backfill.tenant_ids needs "
                                     "BACKFILL_TENANT_IDS_ALLOWED=true on the worker")
        assert sample("opsplane_schedule_last_run_timestamp_seconds", name="nightly-backup",
                      state="rejected") == pytest.approx(row["finished_at"].timestamp())
        # A rejected run does not block the next one.
        [again] = await r.tick_at(utc(2026, 3, 2, 2, 0, 1))
        assert again.outcome == "rejected"
        assert r.scheduler.last["nightly-backup"][0] == "rejected"


class FlakyPool:
    """A real pool that can be made to fail like an unreachable database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.broken = False

    def _check(self) -> None:
        if self.broken:
            raise ConnectionRefusedError("database away")

    def acquire(self) -> Any:
        self._check()
        return self.pool.acquire()

    async def fetch(self, *args: Any) -> Any:
        self._check()
        return await self.pool.fetch(*args)

    async def fetchval(self, *args: Any) -> Any:
        self._check()
        return await self.pool.fetchval(*args)

    async def execute(self, *args: Any) -> Any:
        self._check()
        return await self.pool.execute(*args)


async def test_the_loop_retries_a_fire_through_a_database_outage_within_the_grace(
    worker_db: str,
) -> None:
    real = await asyncpg.create_pool(worker_db, min_size=1, max_size=2)
    pool, holder = FlakyPool(real), Holder()
    clock = FakeClock(utc(2026, 3, 1, 1, 59))
    scheduler = CronScheduler(schedule("0 2 * * *", misfire_grace_s=300), pool=pool,  # type: ignore[arg-type]
                              store=JobStore(real, FakePublisher(), worker="w-1"),
                              runner=holder, worker="w-1", clock=clock, sleep=clock.sleep)
    loop = asyncio.create_task(scheduler.run())

    async def wake_at(when: datetime) -> None:
        naps = clock.naps
        await clock.set(when)
        await eventually(lambda: clock.naps > naps and clock.sleeping, timeout_s=10,
                         message="the loop done and asleep again")

    try:
        await eventually(lambda: clock.sleeping, timeout_s=10, message="the loop started")
        pool.broken = True
        await wake_at(utc(2026, 3, 1, 2))
        await wake_at(utc(2026, 3, 1, 2, 0, 5))  # retried after retry_s: still away
        assert holder.submitted == [] and scheduler.pending["report"] == utc(2026, 3, 1, 2)
        pool.broken = False
        await wake_at(utc(2026, 3, 1, 2, 0, 10))
        assert holder.submitted == [scheduled_job_id("report", utc(2026, 3, 1, 2))]
        # Away again over the next fire, back after the grace: skipped, never run late.
        await wake_at(utc(2026, 3, 2, 1, 59, 50))
        pool.broken = True
        await wake_at(utc(2026, 3, 2, 2))
        pool.broken = False
        await wake_at(utc(2026, 3, 2, 2, 6))
        assert len(holder.submitted) == 1
        assert [(f["fire_time"], f["outcome"]) for f in await fires(worker_db)] == [
            (utc(2026, 3, 1, 2), "queued"), (utc(2026, 3, 2, 2), "skipped_misfire")]
        assert scheduler.pending["report"] == utc(2026, 3, 3, 2)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await real.close()
