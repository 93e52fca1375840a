"""The scheduler inside the maintenance worker (in process, real nats-server and PostgreSQL,
a fake clock): a scheduled db.report runs end to end and publishes on ops.jobs.<id>; a bad
schedule file leaves the worker serving signed commands; shutdown is clean."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from services.maintenance.main import MaintenanceSettings, Worker, build
from services.maintenance.schedule_config import scheduled_job_id
from tests.harness import Servers, eventually

from .conftest import Signer, job_events, jti_of, publish_command, wait_job
from .test_scheduler import FakeClock, fires, sample, utc


def settings_for(servers: Servers, dsn: str, schedule: Path, keyring: Path) -> MaintenanceSettings:
    return MaintenanceSettings(  # type: ignore[call-arg]
        NATS_URL=servers.nats.url, DATABASE_URL=dsn, OPS_SCHEDULE=schedule,
        OPS_KEYRING=keyring, OPS_INSTANCE="maintenance-sched", OPS_JOB_PROGRESS_INTERVAL=0.05,
    )


@pytest.fixture()
async def started() -> AsyncIterator[list[Worker]]:
    """Workers a test starts in process; stopped (and checked to stop promptly) at the end."""
    workers: list[Worker] = []
    yield workers
    for worker in workers:
        async with asyncio.timeout(20):
            await worker.runtime.stop()


async def test_a_scheduled_db_report_runs_in_the_worker_and_publishes_its_events(
    servers: Servers, worker_db: str, keyring_file: Path, tmp_path: Path,
    started: list[Worker],
) -> None:
    path = tmp_path / "schedule.toml"
    path.write_text('misfire_grace_s = 60\n[[jobs]]\nname = "report"\ncron = "0 2 * * *"\n'
                    'action = "db.report"\n')
    clock = FakeClock(utc(2026, 3, 1, 1, 59))
    worker = build(settings_for(servers, worker_db, path, keyring_file), clock=clock,
                   sleep=clock.sleep)
    await worker.runtime.start()
    started.append(worker)

    await eventually(lambda: worker.scheduler is not None and clock.sleeping,
                     timeout_s=30, message="the scheduler waiting for 02:00")
    ready, checks = await worker.runtime.readiness()
    assert ready, checks
    assert checks["schedule"] == (f"1 entry (OPS_SCHEDULE {path}); next report at "
                                  "2026-03-01T02:00:00Z")
    assert sample("opsplane_schedule_config_valid") == 1
    assert sample("opsplane_schedule_next_run_timestamp_seconds",
                  name="report") == utc(2026, 3, 1, 2).timestamp()

    naps = clock.naps
    await clock.set(utc(2026, 3, 1, 2, 0, 0))
    job_id = scheduled_job_id("report", utc(2026, 3, 1, 2))
    events = await job_events(servers.nats.url, job_id, wait_for={"succeeded", "failed"})
    assert list(dict.fromkeys(e.state for e in events)) == ["queued", "running", "succeeded"]
    assert events[0].message.startswith("scheduled: entry 'report'")
    assert events[-1].result is not None
    assert events[-1].result["database"]["name"] == worker_db.rsplit("/", 1)[-1]
    row = await wait_job(worker_db, job_id)
    assert (row["issuer"], row["worker"]) == ("scheduler:report", "maintenance-sched")
    assert sample("opsplane_schedule_next_run_timestamp_seconds",
                  name="report") == utc(2026, 3, 2, 2).timestamp()

    # The next wake-up (at most 30 s of schedule later) reads the outcome into the gauges.
    await eventually(lambda: clock.naps > naps and clock.sleeping, timeout_s=10,
                     message="the scheduler asleep after the fire")
    await clock.set(clock.now + timedelta(seconds=30))
    await eventually(
        lambda: sample("opsplane_schedule_last_run_timestamp_seconds", name="report",
                       state="succeeded") == row["finished_at"].timestamp(),
        timeout_s=10, message="the last-run gauge")
    assert [f["outcome"] for f in await fires(worker_db)] == ["queued"]


async def test_a_bad_schedule_file_runs_nothing_on_a_clock_but_commands_still_run(
    servers: Servers, worker_db: str, keyring_file: Path, tmp_path: Path, signer: Signer,
    started: list[Worker],
) -> None:
    path = tmp_path / "schedule.toml"
    path.write_text('[[jobs]\nname = "nightly-backup"\n')
    clock = FakeClock(utc(2026, 3, 1, 1, 59))
    worker = build(settings_for(servers, worker_db, path, keyring_file), clock=clock,
                   sleep=clock.sleep)
    assert worker.schedule is None and "not valid TOML" in worker.schedule_problem
    assert sample("opsplane_schedule_config_valid") == 0
    await worker.runtime.start()
    started.append(worker)
    await asyncio.wait_for(worker.ready.wait(), 30)

    ready, checks = await worker.runtime.readiness()
    assert ready, checks
    assert checks["schedule"].startswith(f"invalid (OPS_SCHEDULE {path}: not valid TOML")
    assert checks["schedule"].endswith("no scheduled job runs, signed commands are served")

    token = signer.sign("db.report")
    await publish_command(servers.nats.url, "db.report", token, jti_of(token))
    assert (await wait_job(worker_db, jti_of(token)))["state"] == "succeeded"
    await clock.set(utc(2026, 3, 2, 6))  # past every default fire time: still nothing
    await asyncio.sleep(0.2)
    assert worker.scheduler is None and await fires(worker_db) == []
