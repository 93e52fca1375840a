"""prune_backups against the real catalog and moto S3: dry run, real run, leftovers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.health.probes.backups import BackupsProbe
from services.maintenance.backups import (
    BackupCatalog,
    Manifest,
    RetentionPolicy,
    backup_key,
    manifest_key,
)
from services.maintenance.backups.models import Durations
from shared import Status
from tests.harness import BUCKET
from tests.maintenance import conftest_backups as fx
from tests.maintenance.conftest_backups import (
    keys_under,
    make_backup,
    new_job_id,
    run_prune,
    uploads_under,
)

# The fixtures this module uses (assigned, not imported: pytest finds them by name).
app_db, catalog, catalog_dsn, catalog_pool = fx.app_db, fx.catalog, fx.catalog_dsn, fx.catalog_pool
prefix, s3 = fx.prefix, fx.s3

NOW = datetime.now(UTC).replace(microsecond=0)


async def record_backup(
    s3: Any, catalog: BackupCatalog, prefix: str, finished: datetime, database: str = "app"
) -> str:
    """A succeeded backup as the engine leaves it: both objects and a catalog row."""
    job_id = new_job_id()
    started = finished - timedelta(minutes=3)
    key = backup_key(prefix, database, job_id, started)
    body = f"dump of {job_id}".encode()
    await catalog.start(job_id=job_id, key=key, database=database, label=None, started_at=started)
    await s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    manifest = Manifest(
        job_id=job_id,
        database=database,
        key=key,
        sha256=hashlib.sha256(body).hexdigest(),
        size_bytes=len(body),
        parts=1,
        pg_dump_version="16.2",
        server_version="16.2",
        tables={},
        started_at=started,
        finished_at=finished,
        durations=Durations(dump_s=1, count_rows_s=0, total_s=1),
    )
    await s3.put_object(Bucket=BUCKET, Key=manifest_key(key), Body=manifest.model_dump_json())
    await catalog.succeed(manifest)
    return key


async def open_upload(
    s3: Any, catalog: BackupCatalog, prefix: str, started: datetime, job_id: str | None = None
) -> str:
    """A backup that started and never finished: a running row and an open multipart upload."""
    job_id = job_id or new_job_id()
    key = backup_key(prefix, "app", job_id, started)
    await catalog.start(job_id=job_id, key=key, database="app", label=None, started_at=started)
    await s3.create_multipart_upload(Bucket=BUCKET, Key=key)
    return key


async def test_dry_run_lists_what_would_go_and_the_real_run_deletes_it(
    s3: Any, catalog: BackupCatalog, catalog_dsn: str, prefix: str
) -> None:
    keys = [await record_backup(s3, catalog, prefix, NOW - timedelta(days=d)) for d in range(10)]
    policy = RetentionPolicy(daily=7)

    dry = await run_prune(s3, catalog, policy, dry_run=True, now=NOW)
    assert dry.dry_run and sorted(dry.pruned) == sorted(keys[7:])
    assert sorted(dry.kept) == sorted(keys[:7]) and dry.cleaned == []
    assert len(await keys_under(s3, prefix)) == 20  # nothing deleted
    rows = [await catalog.get(k) for k in keys]
    assert [r.status if r else None for r in rows] == ["succeeded"] * 10

    real = await run_prune(s3, catalog, policy, dry_run=False, now=NOW)
    assert sorted(real.pruned) == sorted(keys[7:])
    remaining = await keys_under(s3, prefix)
    assert remaining == sorted([*keys[:7], *(manifest_key(k) for k in keys[:7])])
    for key in keys[7:]:
        row = await catalog.get(key)
        assert row is not None and row.status == "pruned" and row.pruned_at == NOW
    again = await run_prune(s3, catalog, policy, dry_run=False, now=NOW)
    assert again.pruned == [] and sorted(again.kept) == sorted(keys[:7])
    probe = await BackupsProbe(dsn=catalog_dsn).run()
    assert probe.status == Status.PASS and keys[0] in probe.output


async def test_the_newest_backup_survives_a_keep_nothing_policy(
    s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    old = await record_backup(s3, catalog, prefix, NOW - timedelta(days=40))
    newest = await record_backup(s3, catalog, prefix, NOW - timedelta(days=30))
    result = await run_prune(s3, catalog, RetentionPolicy(daily=0), dry_run=False, now=NOW)
    assert result.pruned == [old] and result.kept == [newest]
    assert await keys_under(s3, prefix) == sorted([newest, manifest_key(newest)])


async def test_failed_and_stale_backups_leftovers_are_cleaned(
    s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    good = await record_backup(s3, catalog, prefix, NOW - timedelta(hours=1))
    # A backup whose worker died mid-upload two days ago: a running row, an open upload.
    stale = await open_upload(s3, catalog, prefix, NOW - timedelta(days=2))
    # A failed backup whose abort could not reach S3: the upload was left behind.
    failed_job = new_job_id()
    failed = await open_upload(s3, catalog, prefix, NOW - timedelta(hours=5), job_id=failed_job)
    await catalog.fail(failed_job, finished_at=NOW - timedelta(hours=5), error="S3 unreachable")
    # A backup running right now is left alone.
    running = await open_upload(s3, catalog, prefix, NOW)

    result = await run_prune(s3, catalog, RetentionPolicy(), dry_run=False, now=NOW)
    assert sorted(result.cleaned) == sorted([stale, failed]) and result.kept == [good]
    assert await uploads_under(s3, prefix) == [running]
    stale_row, failed_row = await catalog.get(stale), await catalog.get(failed)
    assert stale_row is not None and stale_row.status == "failed" and stale_row.pruned_at == NOW
    assert "interrupted" in (stale_row.error or "")
    assert failed_row is not None and failed_row.status == "failed"
    assert failed_row.error == "S3 unreachable" and failed_row.pruned_at == NOW
    running_row = await catalog.get(running)
    assert running_row is not None and running_row.status == "running"
    again = await run_prune(s3, catalog, RetentionPolicy(), dry_run=True, now=NOW)
    assert again.cleaned == []  # cleaned once, not again
    await s3.abort_multipart_upload(
        Bucket=BUCKET,
        Key=running,
        UploadId=(await s3.list_multipart_uploads(Bucket=BUCKET, Prefix=running))["Uploads"][0][
            "UploadId"
        ],
    )


async def test_a_real_backup_is_pruned_objects_and_all(
    app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    older = await make_backup(app_db, s3, catalog, prefix, clock=lambda: NOW - timedelta(days=3))
    newer = await make_backup(app_db, s3, catalog, prefix)
    result = await run_prune(s3, catalog, RetentionPolicy(daily=1), dry_run=False, now=NOW)
    assert result.pruned == [older.key] and result.kept == [newer.key]
    assert await keys_under(s3, prefix) == sorted([newer.key, newer.manifest_key])


@pytest.mark.parametrize("dry_run", [True, False])
async def test_an_empty_catalog_prunes_nothing(
    s3: Any, catalog: BackupCatalog, dry_run: bool
) -> None:
    result = await run_prune(s3, catalog, RetentionPolicy(), dry_run=dry_run, now=NOW)
    assert result.pruned == result.kept == result.cleaned == []
    assert result.model_dump()["policy"] == {"daily": 7, "weekly": 0, "monthly": 0}
