"""verify_backup (quick and the restore drill) and restore_backup on real PostgreSQL and S3."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import asyncpg
import pytest

from services.maintenance.backups import (
    BackupCancelled,
    BackupCatalog,
    BackupError,
    BackupNotFound,
    RestoreRefused,
    VerifyFailed,
    manifest_key,
)
from shared import Progress
from tests.harness import BUCKET, Servers
from tests.maintenance import conftest_backups as fx
from tests.maintenance.conftest_backups import (
    APP_COUNTS,
    ProgressLog,
    database_names,
    drop_database,
    get_bytes,
    make_backup,
    new_job_id,
    run_restore,
    run_verify,
)

# The fixtures this module uses (assigned, not imported: pytest finds them by name).
app_db, catalog, catalog_dsn, catalog_pool = fx.app_db, fx.catalog, fx.catalog_dsn, fx.catalog_pool
prefix, s3 = fx.prefix, fx.s3


async def drills(servers: Servers) -> list[str]:
    return await database_names(servers, "opsplane_drill_%")


async def test_quick_verify_passes_then_catches_a_corrupted_object(
    servers: Servers, app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    made = await make_backup(app_db, s3, catalog, prefix)
    result = await run_verify(servers, s3, catalog, made.key, "quick")
    assert result.ok and result.sha256_actual == made.sha256 == result.sha256_expected
    assert result.toc_entries and result.toc_entries > len(APP_COUNTS)
    row = await catalog.get(made.key)
    assert row is not None and row.verify_status == "passed" and row.verified_at is not None

    original = await get_bytes(s3, made.key)
    corrupt = bytearray(original)
    corrupt[len(corrupt) // 2] ^= 0xFF  # one flipped byte in the middle
    await s3.put_object(Bucket=BUCKET, Key=made.key, Body=bytes(corrupt))
    with pytest.raises(VerifyFailed, match="checksum mismatch") as failure:
        await run_verify(servers, s3, catalog, made.key, "quick")
    assert failure.value.result.ok is False
    assert failure.value.result.sha256_actual not in (None, made.sha256)
    row = await catalog.get(made.key)
    assert row is not None and row.verify_status == "failed"
    assert "checksum mismatch" in (row.verify_error or "")


async def test_quick_verify_reports_an_unreadable_archive(
    servers: Servers, app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    made = await make_backup(app_db, s3, catalog, prefix)
    await s3.put_object(Bucket=BUCKET, Key=made.key, Body=os.urandom(4096))
    with pytest.raises(VerifyFailed) as failure:
        await run_verify(servers, s3, catalog, made.key, "quick")
    message = str(failure.value)
    assert "checksum mismatch" in message and "the archive is unreadable" in message


async def test_verify_without_a_key_takes_the_newest_succeeded_backup(
    servers: Servers, app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    with pytest.raises(BackupNotFound):
        await run_verify(servers, s3, catalog, None, "quick")
    await make_backup(app_db, s3, catalog, prefix)
    newest = await make_backup(app_db, s3, catalog, prefix)
    assert (await run_verify(servers, s3, catalog, None, "quick")).key == newest.key


async def test_a_missing_object_or_manifest_fails_verification(
    servers: Servers, app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    made = await make_backup(app_db, s3, catalog, prefix)
    await s3.delete_object(Bucket=BUCKET, Key=manifest_key(made.key))
    await s3.delete_object(Bucket=BUCKET, Key=made.key)
    with pytest.raises(VerifyFailed) as failure:
        await run_verify(servers, s3, catalog, made.key, "quick")
    assert "manifest" in str(failure.value) and "missing from the bucket" in str(failure.value)


async def test_the_restore_drill_passes_and_drops_its_scratch_database(
    servers: Servers, app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    made = await make_backup(app_db, s3, catalog, prefix)
    job_id = new_job_id()
    result = await run_verify(servers, s3, catalog, made.key, "restore", job_id=job_id)
    assert result.ok and result.mismatches == []
    assert result.tables_checked == len(APP_COUNTS)
    assert result.scratch_database == "opsplane_drill_" + job_id.replace("-", "")[:16]
    assert await drills(servers) == []
    row = await catalog.get(made.key)
    assert row is not None and row.verify_status == "passed"


async def test_a_drill_whose_row_counts_differ_fails_and_still_drops_the_scratch_database(
    servers: Servers, app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    made = await make_backup(app_db, s3, catalog, prefix)
    manifest = json.loads(await get_bytes(s3, made.manifest_key))
    manifest["tables"]["public.orders"] = 121  # the manifest promises a row the dump lacks
    await s3.put_object(Bucket=BUCKET, Key=made.manifest_key, Body=json.dumps(manifest).encode())
    with pytest.raises(VerifyFailed, match=r"public.orders \(manifest 121, restored 120\)") as f:
        await run_verify(servers, s3, catalog, made.key, "restore")
    assert [m.table for m in f.value.result.mismatches] == ["public.orders"]
    assert await drills(servers) == []


async def test_a_drill_of_a_corrupt_archive_fails_and_drops_the_scratch_database(
    servers: Servers, app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    made = await make_backup(app_db, s3, catalog, prefix)
    data = await get_bytes(s3, made.key)
    await s3.put_object(Bucket=BUCKET, Key=made.key, Body=data[: len(data) // 2])  # truncated
    with pytest.raises(VerifyFailed, match="the restore failed: pg_restore exited 1"):
        await run_verify(servers, s3, catalog, made.key, "restore")
    assert await drills(servers) == []


async def test_a_cancelled_drill_drops_its_scratch_database(
    servers: Servers, app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    made = await make_backup(app_db, s3, catalog, prefix)
    cancel = asyncio.Event()
    seen: list[str] = []

    async def cancel_while_restoring(progress: Progress, message: str) -> None:
        if message.startswith("reading"):
            seen.extend(await drills(servers))  # the scratch database exists now
            cancel.set()

    with pytest.raises(BackupCancelled):
        await run_verify(
            servers,
            s3,
            catalog,
            made.key,
            "restore",
            progress=ProgressLog(hook=cancel_while_restoring),
            cancel=cancel,
        )
    assert len(seen) == 1
    assert await drills(servers) == []
    row = await catalog.get(made.key)
    assert row is not None and row.verify_status is None  # a cancel is no verdict


async def test_restore_into_a_new_database_then_refuse_then_replace(
    servers: Servers, app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    made = await make_backup(app_db, s3, catalog, prefix)
    target = f"restored_{new_job_id()[:8]}"

    try:
        first = await run_restore(servers, s3, catalog, made.key, target)
        assert first.created and not first.replaced
        assert first.rows == sum(APP_COUNTS.values()) and first.tables == len(APP_COUNTS)
        conn = await asyncpg.connect(fx.dsn_of(servers, target))
        try:
            assert await conn.fetchval("SELECT count(*) FROM orders") == 120
            assert await conn.fetchval("SELECT count(*) FROM big_orders") > 0  # views too
            await conn.execute("CREATE TABLE only_in_target (id int)")
        finally:
            await conn.close()
        with pytest.raises(RestoreRefused, match="exists and is not empty"):
            await run_restore(servers, s3, catalog, made.key, target)
        second = await run_restore(servers, s3, catalog, made.key, target, replace=True)
        assert second.replaced and not second.created
        conn = await asyncpg.connect(fx.dsn_of(servers, target))
        try:
            assert await conn.fetchval("SELECT to_regclass('only_in_target')") is None
        finally:
            await conn.close()
        assert await database_names(servers, "%_restoring_%") == []
    finally:
        await drop_database(servers, target)


async def test_restore_of_a_corrupt_backup_touches_nothing(
    servers: Servers, app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    made = await make_backup(app_db, s3, catalog, prefix)
    await s3.put_object(Bucket=BUCKET, Key=made.key, Body=b"not a dump")
    target = f"restored_{new_job_id()[:8]}"
    with pytest.raises(BackupError, match="checksum mismatch"):
        await run_restore(servers, s3, catalog, made.key, target)
    assert await database_names(servers, f"{target}%") == []
