"""backup.* through a real worker process: signed command -> job -> S3 object, catalog, drills."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import boto3
import pytest

from services.maintenance.actions.backup import BackupSettings, engine
from services.maintenance.actions.context import JobCancelled
from services.maintenance.backups import BackupCancelled
from shared import JobEvent
from tests.harness import BUCKET, Servers, ServiceProcess

from .conftest import Signer, db_target, drop_database, job_events, jti_of, publish_command

pytestmark = pytest.mark.e2e
PREFIX = f"e2e-{uuid.uuid4().hex[:6]}"


@pytest.fixture()
def worker(servers: Servers, worker_db: str, keyring_file: Path,
           logdir: Path) -> Iterator[ServiceProcess]:
    env = servers.env(DATABASE_URL=worker_db, OPS_KEYRING=str(keyring_file),
                      OPS_INSTANCE="maintenance-b", OPS_BACKUP_PREFIX=PREFIX,
                      BACKUP_RESTORE_ALLOWED="true")
    proc = ServiceProcess("maintenance", env, logdir).start(wait="/readyz")
    yield proc
    proc.stop()


@pytest.fixture()
async def app_rows(worker_db: str) -> AsyncIterator[int]:
    conn = await asyncpg.connect(worker_db)
    await conn.execute("CREATE TABLE entries (id serial PRIMARY KEY, note text)")
    await conn.execute("INSERT INTO entries (note) SELECT 'n' || g FROM generate_series(1, 250) g")
    await conn.close()
    yield 250


async def run(servers: Servers, signer: Signer, action: str, params: dict[str, object],
              **sign: object) -> JobEvent:
    token = signer.sign(action, params, **sign)
    await publish_command(servers.nats.url, action, token, jti_of(token))
    events = await job_events(servers.nats.url, jti_of(token),
                              wait_for={"succeeded", "failed", "rejected", "cancelled"})
    return events[-1]


def s3_keys(servers: Servers) -> set[str]:
    s3 = boto3.client("s3", endpoint_url=servers.s3.url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)
    return {o["Key"] for o in listed.get("Contents", [])}


async def test_backup_create_verify_prune_and_restore_as_jobs(
    worker: ServiceProcess, servers: Servers, worker_db: str, signer: Signer, app_rows: int
) -> None:
    created = await run(servers, signer, "backup.create", {"label": "e2e"})
    assert created.state == "succeeded", created.error
    assert created.result is not None
    key = created.result["key"]
    database = urlsplit(worker_db).path.lstrip("/")
    assert key.startswith(f"{PREFIX}/{database}/") and key.endswith(".dump")
    assert {key, created.result["manifest_key"]} <= s3_keys(servers)
    conn = await asyncpg.connect(worker_db)
    row = await conn.fetchrow("SELECT status, label FROM ops.backups WHERE key = $1", key)
    await conn.close()
    assert row is not None and dict(row) == {"status": "succeeded", "label": "e2e"}

    quick = await run(servers, signer, "backup.verify", {"mode": "quick"})
    assert quick.state == "succeeded" and quick.result is not None, quick.error
    assert quick.result["ok"] is True and quick.result["key"] == key
    drill = await run(servers, signer, "backup.verify", {"mode": "restore", "key": key})
    assert drill.state == "succeeded" and drill.result is not None, drill.error
    assert drill.result["ok"] is True and drill.result["mismatches"] == []

    prune = await run(servers, signer, "backup.prune", {"dry_run": True})
    assert prune.state == "succeeded" and prune.result is not None
    assert key in prune.result["kept"] and prune.result["pruned"] == []

    target = await db_target(worker_db)
    restored_name = f"restored_{uuid.uuid4().hex[:8]}"
    restore = await run(servers, signer, "backup.restore",
                        {"key": key, "database": restored_name, "confirm": restored_name},
                        target=target)
    assert restore.state == "succeeded", restore.error
    restored = urlunsplit(urlsplit(worker_db)._replace(path=f"/{restored_name}"))
    try:
        conn = await asyncpg.connect(restored)
        assert await conn.fetchval("SELECT count(*) FROM entries") == app_rows
        await conn.close()
    finally:
        await drop_database(servers.database_url, restored)


async def test_restoring_over_the_workers_own_database_is_refused(
    worker: ServiceProcess, servers: Servers, worker_db: str, signer: Signer, app_rows: int
) -> None:
    created = await run(servers, signer, "backup.create", {})
    assert created.state == "succeeded" and created.result is not None, created.error
    own = urlsplit(worker_db).path.lstrip("/")
    refused = await run(servers, signer, "backup.restore",
                        {"key": created.result["key"], "database": own, "confirm": own},
                        target=await db_target(worker_db))
    assert refused.state == "failed"
    assert refused.error is not None and "refusing to restore over" in refused.error
    conn = await asyncpg.connect(worker_db)
    assert await conn.fetchval("SELECT count(*) FROM entries") == app_rows
    await conn.close()


async def test_a_verify_of_a_missing_backup_fails_clearly(
    worker: ServiceProcess, servers: Servers, signer: Signer
) -> None:
    missing = await run(servers, signer, "backup.verify",
                        {"mode": "quick", "key": f"{PREFIX}/nope/none.dump"})
    assert missing.state == "failed" and missing.error, missing


async def test_the_engines_cancel_ends_the_job_cancelled_not_failed(servers: Servers) -> None:
    settings = BackupSettings.model_validate(servers.env())
    with pytest.raises(JobCancelled, match="stopped mid-upload"):
        async with engine(settings):
            raise BackupCancelled("stopped mid-upload")
