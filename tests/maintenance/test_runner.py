"""The runner against a real PostgreSQL: running, progress, cancellation, the concurrency
limit, the destructive lock, recovery after a crash and lost workers' leases."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel

from services.maintenance.actions import (
    CONTROL_ACTIONS,
    ActionContext,
    ActionHandler,
    default_handlers,
)
from services.maintenance.jobs import JobStore
from services.maintenance.runner import ProgressThrottle, Runner, RunnerConfig
from shared import ACTIONS, DbReport, Progress, connect
from tests.harness import eventually

from .conftest import FakePublisher, wait_job


class NoParams(BaseModel):
    pass


MODELS: dict[str, type[BaseModel]] = {**ACTIONS, "test.slow": NoParams,
                                      "test.stubborn": NoParams, "test.exclusive": NoParams}


@dataclass
class Probe:
    """What the test handlers saw: how many ran at once, and in which order."""

    active: int = 0
    peak: int = 0
    log: list[str] = None  # type: ignore[assignment]
    release: asyncio.Event = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.log, self.release = [], asyncio.Event()


def slow_handler(probe: Probe) -> ActionHandler:
    async def handler(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
        probe.active += 1
        probe.peak = max(probe.peak, probe.active)
        probe.log.append(f"start {ctx.job_id}")
        try:
            for step in range(1000):
                await ctx.progress(Progress(done=step, total=1000, unit="steps"), f"step {step}")
                ctx.raise_if_cancelled()
                if probe.release.is_set():
                    return {"steps": step}
                await asyncio.sleep(0.01)
            return {"steps": 1000}
        finally:
            probe.active -= 1
            probe.log.append(f"end {ctx.job_id}")

    return handler


async def stubborn(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
    await asyncio.sleep(3600)  # ignores its cancel event
    return {}


@asynccontextmanager
async def runner_for(dsn: str, publisher: FakePublisher, *, worker: str = "w-1",
                     handlers: dict[str, ActionHandler] | None = None,
                     **config: Any) -> AsyncIterator[Runner]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=6)
    store = JobStore(pool, publisher, worker=worker)

    @asynccontextmanager
    async def dedicated() -> AsyncIterator[asyncpg.Connection]:
        async with connect(dsn) as conn:
            yield conn

    runner = Runner(store, {**default_handlers(), **(handlers or {})}, MODELS, pool=pool,
                    connect=dedicated, destructive=frozenset({"test.exclusive"}),
                    control=CONTROL_ACTIONS,
                    config=RunnerConfig(**{"progress_interval_s": 0.0, **config}))
    try:
        yield runner
    finally:
        await runner.close()
        await pool.close()


async def insert_job(dsn: str, action: str, params: dict[str, Any] | None = None, *,
                     state: str = "queued", worker: str | None = None,
                     age_s: float = 0.0) -> str:
    job_id = str(uuid.uuid4())
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO ops.jobs (job_id, action, state, params, worker, updated_at) "
            "VALUES ($1, $2, $3, $4::jsonb, $5, now() - make_interval(secs => $6))",
            job_id, action, state, json.dumps(params or {}), worker, age_s,
        )
    finally:
        await conn.close()
    return job_id


async def run(dsn: str, runner: Runner, action: str, params: dict[str, Any] | None = None,
              timeout_s: float = 30.0) -> dict[str, Any]:
    job_id = await insert_job(dsn, action, params)
    runner.submit(job_id)
    return await wait_job(dsn, job_id, timeout_s=timeout_s)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def test_db_report_succeeds_with_a_report_of_this_database(
    worker_db: str, fake_publisher: FakePublisher
) -> None:
    conn = await asyncpg.connect(worker_db)
    await conn.execute("CREATE TABLE bloated (id int PRIMARY KEY, v text); "
                       "CREATE INDEX bloated_v ON bloated (v); "
                       "INSERT INTO bloated SELECT g, 'x' FROM generate_series(1, 5000) g; "
                       "DELETE FROM bloated WHERE id <= 4000; ANALYZE bloated")
    await conn.close()
    async with runner_for(worker_db, fake_publisher) as runner:
        row = await run(worker_db, runner, "db.report")
    assert row["state"] == "succeeded", row["error"]
    report = _json(row["result"])
    assert report["database"]["name"] == worker_db.rsplit("/", 1)[-1]
    assert report["database"]["size_bytes"] > 0 and report["database"]["system_identifier"]
    bloated = next(t for t in report["tables"]["largest"] if t["table"] == "bloated")
    assert bloated["dead_tuples"] >= 4000 and bloated["dead_ratio"] > 0.5
    assert "public.bloated" in report["tables"]["vacuum_candidates"]
    assert any(i["index"] == "bloated_v" for i in report["indexes"]["unused"])
    assert report["connections"]["max_connections"] > 0
    assert "queries" in report["long_running_queries"]
    states = fake_publisher.states(row["job_id"])
    assert states[0] == "running" and states[-1] == "succeeded"
    final = fake_publisher.of(row["job_id"])[-1]
    assert final.result == report and final.progress.done == final.progress.total == 7


async def test_db_vacuum_of_named_tables_reports_each(
    worker_db: str, fake_publisher: FakePublisher
) -> None:
    conn = await asyncpg.connect(worker_db)
    await conn.execute('CREATE SCHEMA app; CREATE TABLE app.users (id int); '
                       'CREATE TABLE "Mixed Case" (id int); CREATE TABLE orders (id int); '
                       'INSERT INTO orders SELECT generate_series(1, 100); '
                       'DELETE FROM orders WHERE id < 50')
    await conn.close()
    async with runner_for(worker_db, fake_publisher) as runner:
        row = await run(worker_db, runner, "db.vacuum", {"tables": ["app.users", "orders"]})
        assert row["state"] == "succeeded", row["error"]
        result = _json(row["result"])
        assert [t["table"] for t in result["tables"]] == ["app.users", "public.orders"]
        events = fake_publisher.of(row["job_id"])
        assert "vacuuming app.users" in [e.message for e in events]
        assert events[-1].progress == Progress(done=2, total=2, unit="tables")
        conn = await asyncpg.connect(worker_db)
        vacuumed = await conn.fetchval(
            "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'orders'")
        await conn.close()
        assert vacuumed
        # No tables named: every user table, the awkwardly named one quoted safely.
        everything = await run(worker_db, runner, "db.vacuum", {})
        assert everything["state"] == "succeeded", everything["error"]
        names = [t["table"] for t in _json(everything["result"])["tables"]]
        assert {"app.users", "public.orders", "public.Mixed Case", "ops.jobs"} <= set(names)


async def test_db_vacuum_of_a_missing_table_fails_before_vacuuming_anything(
    worker_db: str, fake_publisher: FakePublisher
) -> None:
    async with runner_for(worker_db, fake_publisher) as runner:
        row = await run(worker_db, runner, "db.vacuum",
                        {"tables": ["ops.jobs", "nope", "public.gone"]})
    assert row["state"] == "failed"
    assert row["error"] == "no such table: nope, public.gone"
    assert not any(e.message.startswith("vacuuming") for e in fake_publisher.of(row["job_id"]))


async def test_cancel_stops_a_running_job_and_a_queued_one_never_starts(
    worker_db: str, fake_publisher: FakePublisher
) -> None:
    probe = Probe()
    async with runner_for(worker_db, fake_publisher, concurrency=1,
                          handlers={"test.slow": slow_handler(probe)}) as runner:
        a = await insert_job(worker_db, "test.slow")
        b = await insert_job(worker_db, "test.slow")
        runner.submit(a)
        runner.submit(b)
        await eventually(lambda: probe.active == 1, timeout_s=10, message="one running")
        # Which of the two takes the single slot first is up to the scheduler, not the order of
        # submit(): name them by what they are doing.
        first = probe.log[0].removeprefix("start ")
        second = ({a, b} - {first}).pop()
        # job.cancel runs beside the full slot.
        cancel_second = await run(worker_db, runner, "job.cancel", {"job_id": second})
        assert cancel_second["state"] == "succeeded"
        assert _json(cancel_second["result"])["previous_state"] == "queued"
        cancel_first = await run(worker_db, runner, "job.cancel", {"job_id": first})
        assert cancel_first["state"] == "succeeded", cancel_first["error"]
        assert _json(cancel_first["result"]) == {
            "job_id": first, "cancelled": True, "state": "cancelled",
            "previous_state": "running"}
        row = await wait_job(worker_db, first)
        assert row["state"] == "cancelled" and row["message"] == "cancelled on request"
        assert (await wait_job(worker_db, second))["state"] == "cancelled"
        assert f"start {second}" not in probe.log
        assert fake_publisher.states(second) == ["cancelled"]
        # Cancelling what already ended changes nothing; an unknown job fails.
        again = await run(worker_db, runner, "job.cancel", {"job_id": first})
        assert _json(again["result"])["cancelled"] is False
        unknown = await run(worker_db, runner, "job.cancel", {"job_id": str(uuid.uuid4())})
        assert unknown["state"] == "failed" and "no such job" in unknown["error"]


async def test_a_handler_that_ignores_its_cancel_is_stopped_after_the_grace_period(
    worker_db: str, fake_publisher: FakePublisher
) -> None:
    async with runner_for(worker_db, fake_publisher, cancel_grace_s=0.2,
                          handlers={"test.stubborn": stubborn}) as runner:
        job_id = await insert_job(worker_db, "test.stubborn")
        runner.submit(job_id)
        await wait_job(worker_db, job_id, {"running"})
        assert await runner.cancel(job_id, by="test") == "running"
        row = await wait_job(worker_db, job_id, timeout_s=10)
    assert row["state"] == "cancelled" and "grace period" in row["message"]


async def test_a_cancel_reaches_a_job_running_on_another_worker(
    worker_db: str, fake_publisher: FakePublisher
) -> None:
    probe = Probe()
    async with runner_for(worker_db, fake_publisher, worker="w-a", renew_every_s=0.1,
                          handlers={"test.slow": slow_handler(probe)}) as a, \
            runner_for(worker_db, FakePublisher(), worker="w-b") as b:
        job_id = await insert_job(worker_db, "test.slow")
        a.submit(job_id)
        await eventually(lambda: probe.active == 1, timeout_s=10, message="running on a")
        lease = asyncio.create_task(a.lease_loop())
        try:
            assert await b.cancel(job_id, by="test") == "running"
            row = await wait_job(worker_db, job_id, timeout_s=10)
        finally:
            lease.cancel()
    assert row["state"] == "cancelled" and row["worker"] == "w-a"


async def test_the_concurrency_limit_holds(worker_db: str, fake_publisher: FakePublisher) -> None:
    probe = Probe()
    async with runner_for(worker_db, fake_publisher, concurrency=2,
                          handlers={"test.slow": slow_handler(probe)}) as runner:
        jobs = [await insert_job(worker_db, "test.slow") for _ in range(4)]
        for job_id in jobs:
            runner.submit(job_id)
        await eventually(lambda: probe.active == 2, timeout_s=10, message="two running")
        await asyncio.sleep(0.2)
        assert probe.peak == 2
        probe.release.set()
        for job_id in jobs:
            assert (await wait_job(worker_db, job_id))["state"] == "succeeded"
    assert probe.peak == 2


async def test_destructive_jobs_never_overlap_even_across_workers(
    worker_db: str, fake_publisher: FakePublisher
) -> None:
    probe = Probe()
    handlers = {"test.exclusive": slow_handler(probe)}
    async with runner_for(worker_db, fake_publisher, worker="w-a", handlers=handlers,
                          lock_poll_s=0.05) as a, \
            runner_for(worker_db, fake_publisher, worker="w-b", handlers=handlers,
                       lock_poll_s=0.05) as b:
        first = await insert_job(worker_db, "test.exclusive")
        second = await insert_job(worker_db, "test.exclusive")
        a.submit(first)
        await eventually(lambda: probe.active == 1, timeout_s=10, message="first has the lock")
        b.submit(second)
        await wait_job(worker_db, second, {"running"})
        await eventually(
            lambda: "waiting for another destructive job to finish"
            in [e.message for e in fake_publisher.of(second)],
            timeout_s=10, message="second waiting",
        )
        assert probe.peak == 1
        probe.release.set()
        assert (await wait_job(worker_db, first))["state"] == "succeeded"
        assert (await wait_job(worker_db, second))["state"] == "succeeded"
    assert probe.peak == 1
    assert probe.log == [f"start {first}", f"end {first}", f"start {second}", f"end {second}"]


async def test_recovery_fails_what_this_instance_left_running_and_runs_what_was_queued(
    worker_db: str, fake_publisher: FakePublisher
) -> None:
    crashed = await insert_job(worker_db, "db.report", state="running", worker="w-1")
    elsewhere = await insert_job(worker_db, "db.report", state="running", worker="w-2")
    lost = await insert_job(worker_db, "db.report", state="running", worker="w-3", age_s=600)
    queued = await insert_job(worker_db, "db.report")
    async with runner_for(worker_db, fake_publisher, lease_s=60) as runner:
        await runner.recover()
        row = await wait_job(worker_db, crashed)
        assert (row["state"], row["error"]) == ("failed", "worker restarted while running")
        row = await wait_job(worker_db, lost)
        assert row["state"] == "failed" and "lease expired" in row["error"]
        assert (await wait_job(worker_db, queued))["state"] == "succeeded"
        # Another live worker's job is left alone.
        row = await wait_job(worker_db, elsewhere, {"running"})
    assert fake_publisher.states(crashed) == ["failed"]


async def test_bad_params_in_a_stored_job_fail_it_clearly(
    worker_db: str, fake_publisher: FakePublisher
) -> None:
    async with runner_for(worker_db, fake_publisher) as runner:
        row = await run(worker_db, runner, "db.vacuum", {"tables": "not a list"})
    assert row["state"] == "failed" and row["error"].startswith("bad params: tables")


async def test_progress_is_throttled_and_the_latest_is_never_lost() -> None:
    sent: list[tuple[int, str]] = []
    now = [0.0]

    async def send(progress: Progress, message: str) -> None:
        sent.append((progress.done, message))

    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    throttle = ProgressThrottle(send, 0.25, clock=clock)
    for step in range(100):  # 100 updates within 0.1 s
        now[0] = step * 0.001
        await throttle.report(Progress(done=step), f"s{step}")
    assert sent == [(0, "s0")]
    now[0] = 1.0
    # The held-back update follows when the interval ends.
    await eventually(lambda: len(sent) == 2, timeout_s=2, message="the held-back update")
    assert sent == [(0, "s0"), (99, "s99")]
    await throttle.close()


def test_db_report_params_are_empty() -> None:
    with pytest.raises(ValueError):
        DbReport.model_validate({"extra": 1})
