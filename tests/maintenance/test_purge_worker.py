"""backfill.tenant_ids and purge.app_data from a signed command to the end: through the intake
and runner in process (the guards, then the job), and through a real worker process (the seed
guards from its environment, a real backup to S3 before the purge)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.maintenance.actions import (
    CONTROL_ACTIONS,
    ActionContext,
    default_handlers,
    purge_with_backup,
)
from services.maintenance.intake import Inbound, Intake
from services.maintenance.jobs import JobStore
from services.maintenance.keys import KeyringSource
from services.maintenance.runner import Runner, RunnerConfig
from shared import ACTIONS, DESTRUCTIVE_ACTIONS, connect, subjects
from tests.harness import Servers, ServiceProcess

from .conftest import (
    FakePublisher,
    Signer,
    db_target,
    job_events,
    jti_of,
    publish_command,
    wait_job,
)
from .test_tenant_graph_support import APP_TABLES, counts, demo_db, nulls  # noqa: F401


@asynccontextmanager
async def worker_in_process(dsn: str, keyring: Path, publisher: FakePublisher,
                            guards: dict[str, bool]) -> AsyncIterator[Intake]:
    """The worker's real intake and runner; the purge's backup is a recording stand-in."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=6)
    store = JobStore(pool, publisher, worker="w-e")

    @asynccontextmanager
    async def dedicated() -> AsyncIterator[asyncpg.Connection]:
        async with connect(dsn) as conn:
            yield conn

    async def backup(ctx: ActionContext, label: str) -> dict[str, Any]:
        return {"key": f"backups/{label}.dump"}

    handlers = {**default_handlers(), "purge.app_data": purge_with_backup(backup)}
    runner = Runner(store, handlers, ACTIONS, pool=pool, connect=dedicated,
                    destructive=DESTRUCTIVE_ACTIONS, control=CONTROL_ACTIONS,
                    config=RunnerConfig(progress_interval_s=0.0))
    intake = Intake(pool, store, runner, KeyringSource(keyring), audience="opsplane",
                    guards=guards, worker="w-e")
    try:
        yield intake
    finally:
        await runner.close()
        await pool.close()


async def test_signed_commands_through_intake_and_runner_obey_the_guards(
    demo_db: str, keyring_file: Path, signer: Signer,  # noqa: F811
    fake_publisher: FakePublisher,
) -> None:
    here = await db_target(demo_db)
    before = await counts(demo_db)
    purge = {"scope": "tenant", "tenant_id": "hooli", "confirm": "hooli"}
    guards: dict[str, bool] = {}
    async with worker_in_process(demo_db, keyring_file, fake_publisher, guards) as intake:
        seq = 0

        async def send(action: str, params: dict[str, Any], **sign: Any) -> tuple[str, str]:
            nonlocal seq
            seq += 1
            token = signer.sign(action, params, **sign)
            out = await intake.handle(Inbound(subjects.command(action), token.encode(), seq))
            return out.outcome, out.reason or out.job_id or ""

        assert await send("purge.app_data", purge, target=here) == ("rejected", "guard_disabled")
        assert await send("backfill.tenant_ids", {}) == ("rejected", "guard_disabled")
        assert await counts(demo_db) == before and sum((await nulls(demo_db)).values()) > 0

        intake.guards.update(purge_app_data_allowed=True, backfill_tenant_ids_allowed=True)
        outcome, job_id = await send("backfill.tenant_ids", {"batch_size": 10})
        assert outcome == "accepted"
        row = await wait_job(demo_db, job_id)
        assert row["state"] == "succeeded", row["error"]
        assert sum((await nulls(demo_db)).values()) == 0

        outcome, job_id = await send("purge.app_data", purge, target=here)
        assert outcome == "accepted"
        row = await wait_job(demo_db, job_id)
        assert row["state"] == "succeeded", row["error"]
        result = json.loads(row["result"])
        assert result["backup_key"] == "backups/before-purge-hooli.dump"
        assert result["deleted"]["public.tenants"] == 1
        after = await counts(demo_db)
        assert after["tenants"] == before["tenants"] - 1
        assert fake_publisher.states(job_id)[-1] == "succeeded"


@pytest.mark.e2e
async def test_a_real_worker_runs_backfill_rejects_purge_without_its_guard_then_purges(
    servers: Servers, demo_db: str, keyring_file: Path, signer: Signer,  # noqa: F811
    logdir: Path,
) -> None:
    url = servers.nats.url
    here = await db_target(demo_db)
    env = servers.env(DATABASE_URL=demo_db, OPS_KEYRING=str(keyring_file),
                      OPS_INSTANCE="maintenance-e", OPS_BACKUP_PREFIX="e2e-purge",
                      BACKFILL_TENANT_IDS_ALLOWED="true")

    async def run(action: str, params: dict[str, Any], **sign: Any) -> Any:
        token = signer.sign(action, params, **sign)
        await publish_command(url, action, token, jti_of(token))
        events = await job_events(url, jti_of(token), timeout_s=60,
                                  wait_for={"succeeded", "failed", "rejected", "cancelled"})
        return events[-1]

    purge = {"scope": "tenant", "tenant_id": "acme", "confirm": "acme"}
    before = await counts(demo_db)
    proc = ServiceProcess("maintenance", env, logdir).start(wait="/readyz")
    try:
        dry = await run("backfill.tenant_ids", {"dry_run": True})
        assert dry.state == "succeeded", dry.error
        assert dry.result["would_set"] == sum((await nulls(demo_db)).values()) > 0
        done = await run("backfill.tenant_ids", {"batch_size": 25})
        assert done.state == "succeeded", done.error
        assert done.result["updated"] == dry.result["would_set"]
        assert sum((await nulls(demo_db)).values()) == 0

        rejected = await run("purge.app_data", purge, target=here)
        assert rejected.state == "rejected" and rejected.result == {"reason": "guard_disabled"}
        assert "PURGE_APP_DATA_ALLOWED=true" in (rejected.error or "")
        assert await counts(demo_db) == before
    finally:
        proc.stop()

    env["PURGE_APP_DATA_ALLOWED"] = "true"
    proc = ServiceProcess("maintenance", env, logdir).start(wait="/readyz")
    try:
        dry = await run("purge.app_data", {**purge, "dry_run": True}, target=here)
        assert dry.state == "succeeded", dry.error
        assert "backup_key" not in dry.result and await counts(demo_db) == before
        purged = await run("purge.app_data", purge, target=here)
        assert purged.state == "succeeded", purged.error
        key = purged.result["backup_key"]
        assert key.startswith("e2e-purge/") and key.endswith(".dump")
        assert purged.result["backup"]["label"] == "before-purge-acme"
        assert purged.result["deleted"] == dry.result["tables"]
        after = await counts(demo_db)
        assert after == {t: before[t] - dry.result["tables"][f"public.{t}"] for t in APP_TABLES}
        conn = await asyncpg.connect(demo_db)
        try:
            assert await conn.fetchval("SELECT count(*) FROM tenants WHERE id = 'acme'") == 0
            assert await conn.fetchval(
                "SELECT status FROM ops.backups WHERE key = $1", key) == "succeeded"
        finally:
            await conn.close()
    finally:
        proc.stop()
