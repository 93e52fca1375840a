"""create_backup against real PostgreSQL and moto S3: what lands, and what never does."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import stat
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest

from services.health.probes.backups import BackupsProbe
from services.maintenance.backups import (
    BackupCancelled,
    BackupCatalog,
    BackupError,
    BackupResult,
    Manifest,
    manifest_key,
)
from shared import DatabaseError, Progress, Status, StorageError
from tests.harness import BUCKET, Servers
from tests.maintenance import conftest_backups as fx
from tests.maintenance.conftest_backups import (
    APP_COUNTS,
    ProgressLog,
    create_database,
    drop_database,
    failed_job,
    get_bytes,
    keys_under,
    make_backup,
    new_job_id,
    s3_client,
    uploads_under,
)

# The fixtures this module uses (assigned, not imported: pytest finds them by name).
app_db, catalog, catalog_dsn, catalog_pool = fx.app_db, fx.catalog, fx.catalog_dsn, fx.catalog_pool
prefix, s3 = fx.prefix, fx.s3

MIB = 1024 * 1024
KEY = re.compile(
    r"^(?P<prefix>[^/]+)/(?P<db>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P<ts>\d{8}T\d{6}Z)-(?P<job>[0-9a-f-]{36})\.dump$"
)


async def live_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            name: await conn.fetchval(f"SELECT count(*) FROM {quoted}")
            for name, quoted in (
                (n, ".".join(f'"{p}"' for p in n.split(".", 1))) for n in APP_COUNTS
            )
        }
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def big_db(servers: Servers) -> Any:
    """~12 MiB of incompressible rows: the dump needs three 5 MiB parts."""
    name = f"bk_big_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(servers, name, "CREATE TABLE blobs (id int PRIMARY KEY, b bytea)")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ALTER TABLE blobs ALTER COLUMN b SET STORAGE EXTERNAL")
        await conn.executemany(
            "INSERT INTO blobs VALUES ($1, $2)", [(i, _random(MIB)) for i in range(12)]
        )
    finally:
        await conn.close()
    yield dsn
    await drop_database(servers, name)


def _random(size: int) -> bytes:
    import os

    return os.urandom(size)


def pg_dump_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name().startswith("pg_dump")]


async def backup_in_parts(
    big_db: str,
    s3: Any,
    catalog: BackupCatalog,
    prefix: str,
    job_id: str,
    hook: Callable[[Progress, str], Awaitable[None]],
    **options: Any,
) -> BackupResult:
    """A backup of ``big_db`` in 5 MiB parts, ``hook`` seeing every progress report."""
    return await make_backup(
        big_db,
        s3,
        catalog,
        prefix,
        job_id=job_id,
        progress=ProgressLog(hook=hook),
        part_size=5 * MIB,
        **options,
    )


def set_after_a_part(event: asyncio.Event) -> Callable[[Progress, str], Awaitable[None]]:
    """A progress hook that sets ``event`` once a part has gone up."""

    async def hook(progress: Progress, message: str) -> None:
        if message.startswith("uploaded"):
            event.set()

    return hook


async def test_a_backup_lands_with_its_manifest_and_catalog_row(
    app_db: str, s3: Any, catalog: BackupCatalog, catalog_dsn: str, prefix: str
) -> None:
    job_id = new_job_id()
    progress = ProgressLog()
    result = await make_backup(
        app_db, s3, catalog, prefix, job_id=job_id, label="nightly", progress=progress
    )
    match = KEY.match(result.key)
    assert match, result.key
    assert match["prefix"] == prefix and match["job"] == job_id
    assert match["db"] == app_db.rsplit("/", 1)[1]
    assert match["ts"].startswith(match["y"] + match["m"] + match["d"])
    assert await keys_under(s3, prefix) == sorted([result.key, manifest_key(result.key)])
    assert result.manifest_key == manifest_key(result.key)
    assert await uploads_under(s3, prefix) == []

    dump = await get_bytes(s3, result.key)
    assert dump.startswith(b"PGDMP")  # pg_dump's custom format
    assert hashlib.sha256(dump).hexdigest() == result.sha256 and len(dump) == result.size_bytes
    manifest = Manifest.model_validate(json.loads(await get_bytes(s3, result.manifest_key)))
    assert manifest.sha256 == result.sha256 and manifest.size_bytes == len(dump)
    assert manifest.job_id == job_id and manifest.label == "nightly"
    assert manifest.tables == APP_COUNTS == await live_counts(app_db)
    assert manifest.server_version.split(".")[0] == manifest.pg_dump_version.split(".")[0]
    assert result.rows == sum(APP_COUNTS.values()) and result.tables == len(APP_COUNTS)

    row = await catalog.get(result.key)
    assert row is not None and row.status == "succeeded" and row.job_id == job_id
    assert row.sha256 == result.sha256 and row.size_bytes == len(dump)
    assert row.manifest is not None and row.manifest["tables"] == APP_COUNTS
    assert row.finished_at is not None and row.error is None

    probe = await BackupsProbe(dsn=catalog_dsn).run()
    assert probe.status == Status.PASS and result.key in probe.output
    assert progress.calls and all(p.unit == "bytes" for p, _ in progress.calls)
    assert progress.calls[-1][0].done == len(dump)


async def test_row_counts_come_from_the_dumped_snapshot_not_from_later_writes(
    servers: Servers, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    name = f"bk_snap_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(
        servers, name, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 40)"
    )
    writer = await asyncpg.connect(dsn)

    async def write_after_the_snapshot(progress: Progress, message: str) -> None:
        if message.startswith("dumping"):  # the snapshot is exported, pg_dump not yet started
            await writer.execute("INSERT INTO t SELECT generate_series(41, 100)")
            await writer.execute("DELETE FROM t WHERE id <= 5")

    try:
        result = await make_backup(
            dsn, s3, catalog, prefix, progress=ProgressLog(hook=write_after_the_snapshot)
        )
        assert await writer.fetchval("SELECT count(*) FROM t") == 95
    finally:
        await writer.close()
        await drop_database(servers, name)
    manifest = Manifest.model_validate(json.loads(await get_bytes(s3, result.manifest_key)))
    assert manifest.tables == {"public.t": 40}
    dump = await get_bytes(s3, result.key)
    # The dump holds the same 40 rows: ids 1..40 are in its COPY data, 41 is not.
    assert b"\n40\n" in _copy_data(dump) and b"\n41\n" not in _copy_data(dump)


def _copy_data(dump: bytes) -> bytes:
    import zlib

    out = b""
    # The custom format's data blocks are zlib streams; decompress every one we can find.
    for start in (m.start() for m in re.finditer(rb"\x78[\x01\x5e\x9c\xda]", dump)):
        try:
            out += zlib.decompressobj().decompress(dump[start:])
        except zlib.error:
            continue
    return b"\n" + out


async def test_a_large_dump_goes_up_in_several_parts(
    big_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    result = await make_backup(big_db, s3, catalog, prefix, part_size=5 * MIB)
    assert result.size_bytes > 10 * MIB and result.parts == -(-result.size_bytes // (5 * MIB))
    head = await s3.head_object(Bucket=BUCKET, Key=result.key)
    assert head["ETag"].strip('"').endswith(f"-{result.parts}")
    assert hashlib.sha256(await get_bytes(s3, result.key)).hexdigest() == result.sha256


async def test_pg_dump_killed_mid_way_aborts_the_upload(
    big_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    killed: list[int] = []

    async def kill_pg_dump(progress: Progress, message: str) -> None:
        if message.startswith("uploaded") and not killed:
            for proc in pg_dump_children():
                proc.kill()
                killed.append(proc.pid)

    job_id = new_job_id()
    with pytest.raises(BackupError, match="pg_dump was killed by signal 9"):
        await backup_in_parts(big_db, s3, catalog, prefix, job_id, kill_pg_dump)
    assert killed, "the hook found pg_dump running mid-way"
    assert await uploads_under(s3, prefix) == []
    assert await keys_under(s3, prefix) == []
    row = await failed_job(catalog, job_id)
    assert row.finished_at is not None
    assert row.error is not None and "killed by signal 9" in row.error


async def test_pg_dump_failing_reports_its_stderr_and_leaves_nothing(
    servers: Servers, app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    role = f"bk_reader_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(app_db)
    await admin.execute(f"CREATE ROLE {role} LOGIN")  # may connect, may not read the tables
    try:
        dsn = app_db.replace("postgres@", f"{role}@", 1)
        job_id = new_job_id()
        with pytest.raises(BackupError, match=r"pg_dump exited 1.*permission denied"):
            await make_backup(dsn, s3, catalog, prefix, job_id=job_id)
    finally:
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
    assert await uploads_under(s3, prefix) == [] and await keys_under(s3, prefix) == []
    row = await failed_job(catalog, job_id)
    assert row.error is not None and "permission denied" in row.error
    assert not pg_dump_children()


async def test_a_missing_database_fails_the_catalog_row(
    servers: Servers, app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    dsn = app_db.rsplit("/", 1)[0] + "/no_such_database_here"
    job_id = new_job_id()
    with pytest.raises(DatabaseError, match="no_such_database_here"):
        await make_backup(dsn, s3, catalog, prefix, job_id=job_id)
    row = await failed_job(catalog, job_id)
    assert row.database == "no_such_database_here"
    assert row.error is not None and "no_such_database_here" in row.error
    assert await keys_under(s3, prefix) == []


async def test_s3_unreachable_fails_cleanly(
    app_db: str, catalog: BackupCatalog, prefix: str
) -> None:
    from opsctl._procs import free_port

    job_id = new_job_id()
    async with s3_client(
        f"http://127.0.0.1:{free_port()}", connect_timeout=1, retries={"max_attempts": 1}
    ) as dead:
        with pytest.raises(StorageError, match="S3 unreachable"):
            await make_backup(app_db, dead, catalog, prefix, job_id=job_id)
    assert "S3 unreachable" in ((await failed_job(catalog, job_id)).error or "")
    assert not pg_dump_children()


async def test_a_missing_bucket_fails_cleanly(
    app_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    job_id = new_job_id()
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-.*' not found"):
        await make_backup(
            app_db,
            s3,
            catalog,
            prefix,
            bucket=f"no-such-bucket-{uuid.uuid4().hex[:6]}",
            job_id=job_id,
        )
    assert "not found" in ((await failed_job(catalog, job_id)).error or "")


async def test_cancel_mid_stream_aborts_the_upload(
    big_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    cancel = asyncio.Event()
    job_id = new_job_id()
    with pytest.raises(BackupCancelled):
        await backup_in_parts(
            big_db, s3, catalog, prefix, job_id, set_after_a_part(cancel), cancel=cancel
        )
    assert await uploads_under(s3, prefix) == [] and await keys_under(s3, prefix) == []
    assert "cancelled" in ((await failed_job(catalog, job_id)).error or "")
    assert not pg_dump_children()


async def test_a_cancelled_task_aborts_too(
    big_db: str, s3: Any, catalog: BackupCatalog, prefix: str
) -> None:
    """The worker may cancel the task itself (shutdown): the same cleanup happens."""
    first_part = asyncio.Event()
    job_id = new_job_id()
    hook = set_after_a_part(first_part)
    task = asyncio.ensure_future(backup_in_parts(big_db, s3, catalog, prefix, job_id, hook))
    await asyncio.wait_for(first_part.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await uploads_under(s3, prefix) == [] and await keys_under(s3, prefix) == []
    await failed_job(catalog, job_id)
    assert not pg_dump_children()


def _fake_tools(directory: Path, version: str, script: str = "exit 1") -> Path:
    directory.mkdir()
    for tool in ("pg_dump", "pg_restore"):
        path = directory / tool
        path.write_text(
            "#!/bin/sh\n"
            f'if [ "$1" = "--version" ]; then echo "{tool} (PostgreSQL) {version}"; exit 0; fi\n'
            f"{script}\n"
        )
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return directory


async def test_an_older_pg_dump_is_refused_before_anything_starts(
    app_db: str, s3: Any, catalog: BackupCatalog, prefix: str, tmp_path: Path
) -> None:
    old = _fake_tools(tmp_path / "bin", "9.6.24")
    job_id = new_job_id()
    with pytest.raises(BackupError, match=r"older than the server .*>= \d+"):
        await make_backup(app_db, s3, catalog, prefix, job_id=job_id, pg_bin_dir=old)
    assert await uploads_under(s3, prefix) == []
    assert "9.6.24" in ((await failed_job(catalog, job_id)).error or "")


async def test_the_password_reaches_pg_dump_only_through_its_environment(
    app_db: str, s3: Any, catalog: BackupCatalog, prefix: str, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    fake = _fake_tools(
        tmp_path / "bin",
        "99.0",
        f'echo "argv: $*" > {seen}; echo "env: $PGPASSWORD" >> {seen}; '
        'echo "pg_dump: error: connection to $*" >&2; exit 1',
    )
    # The embedded server trusts local connections, so any password connects.
    dsn = app_db.replace("postgres@", "postgres:hunter2%21@", 1)
    job_id = new_job_id()
    with pytest.raises(BackupError) as failure:
        await make_backup(dsn, s3, catalog, prefix, job_id=job_id, pg_bin_dir=fake)
    argv_line, env_line = seen.read_text().splitlines()
    assert "hunter2" not in argv_line and "--snapshot=" in argv_line
    assert env_line == "env: hunter2!"
    row = await catalog.get_job(job_id)
    assert (
        row is not None
        and "hunter2" not in (row.error or "")
        and "hunter2" not in str(failure.value)
    )
