"""create_backup: ``pg_dump -Fc`` streamed into an S3 multipart upload, consistent row counts.

1. Catalog row ``running``.
2. One connection opens a REPEATABLE READ, read-only transaction and exports its snapshot;
   ``pg_dump --snapshot=<id>`` dumps exactly that snapshot while the same connection counts
   every table's rows in it, so the manifest's counts are what the dump holds.
3. pg_dump's stdout is hashed (SHA-256) and uploaded part by part (bounded memory).
4. Only when pg_dump exited 0 is the upload completed, then the manifest written beside it and
   the catalog row ``succeeded``. On any failure, cancel or exception the upload is aborted
   (no truncated object ever lands), pg_dump is killed and the catalog row is ``failed`` with
   the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from shared import OpsplaneError, connect, get_logger

from .catalog import BackupCatalog
from .databases import count_rows, server_version
from .errors import S3_ERRORS, BackupError, db_boundary, s3_boundary
from .layout import backup_key, base_part_size, manifest_key
from .models import BackupResult, Durations, Manifest, ProgressCallback, S3Like
from .pgtools import (
    APPLICATION_NAME,
    StderrTail,
    child_env,
    exit_description,
    kill_quietly,
    resolve_tools,
    split_dsn,
)
from .runtime import Clock, Reporter, run_cancellable, utc_now
from .upload import MultipartUpload

log = get_logger(__name__)
READ_SIZE = 1024 * 1024


async def create_backup(
    *,
    dsn: str,
    s3: S3Like,
    bucket: str,
    prefix: str,
    job_id: str,
    label: str | None,
    progress: ProgressCallback,
    cancel: asyncio.Event,
    catalog: BackupCatalog,
    pg_bin_dir: Path | None = None,
    part_size: int | None = None,
    max_in_flight: int = 2,
    clock: Clock = utc_now,
) -> BackupResult:
    """Back up the database ``dsn`` points at into ``s3://bucket/<prefix>/...``.

    Raises ``BackupCancelled`` when ``cancel`` is set, ``BackupError`` (pg_dump failed or too
    old), ``StorageError`` (S3) or ``DatabaseError``; in every case the catalog row (if one
    could be written) is ``failed`` with the error and no object is left in the bucket.
    ``part_size`` overrides the estimate-based part size (>= 5 MiB; tests use it)."""
    info = split_dsn(dsn)
    started_at = clock()
    key = backup_key(prefix, info.database, job_id, started_at)
    await catalog.start(
        job_id=job_id, key=key, database=info.database, label=label, started_at=started_at
    )
    job = _BackupJob(
        dsn=dsn,
        s3=s3,
        bucket=bucket,
        key=key,
        job_id=job_id,
        label=label,
        report=Reporter(progress),
        catalog=catalog,
        pg_bin_dir=pg_bin_dir,
        part_size=part_size,
        max_in_flight=max_in_flight,
        clock=clock,
        started_at=started_at,
    )
    try:
        return await run_cancellable(cancel, job.run())
    except BaseException as exc:
        error = _describe(exc)
        log.warning("backup.failed", job_id=job_id, key=key, error=error)
        with contextlib.suppress(OpsplaneError):
            await asyncio.shield(catalog.fail(job_id, finished_at=clock(), error=error))
        raise


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled (the worker stopped the job)"
    if isinstance(exc, OpsplaneError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _BackupJob:
    dsn: str
    s3: S3Like
    bucket: str
    key: str
    job_id: str
    label: str | None
    report: Reporter
    catalog: BackupCatalog
    pg_bin_dir: Path | None
    part_size: int | None
    max_in_flight: int
    clock: Clock
    started_at: datetime

    async def run(self) -> BackupResult:
        began = time.monotonic()
        info = split_dsn(self.dsn)
        async with connect(self.dsn, timeout_s=10, application_name=APPLICATION_NAME) as conn:
            with db_boundary(f"reading database {info.database}"):
                major, version = await server_version(conn)
                database = str(await conn.fetchval("SELECT current_database()"))
                estimate = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
            tools = await resolve_tools(
                major, f"the server (PostgreSQL {version})", self.pg_bin_dir
            )
            if self.part_size is not None and self.part_size < 5 * 1024 * 1024:
                raise BackupError("part size must be at least 5 MiB (S3's minimum)")
            upload = MultipartUpload(
                self.s3,
                self.bucket,
                self.key,
                base_part_size=self.part_size or base_part_size(estimate),
                max_in_flight=self.max_in_flight,
            )
            transaction = conn.transaction(isolation="repeatable_read", readonly=True)
            proc: asyncio.subprocess.Process | None = None
            counting: asyncio.Task[tuple[dict[str, int], float]] | None = None
            try:
                with db_boundary("exporting a snapshot"):
                    await transaction.start()
                    snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
                await upload.start()
                await self.report(0, estimate, f"dumping {database} (about {estimate} bytes)")
                dump_began = time.monotonic()
                proc = await _spawn_pg_dump(tools.pg_dump, snapshot, self.dsn)
                stderr = StderrTail(proc.stderr)
                counting = asyncio.ensure_future(_timed_count(conn))
                digest = await self._stream(proc, upload, estimate)
                returncode = await proc.wait()
                dump_s = time.monotonic() - dump_began
                if returncode != 0:
                    raise BackupError(exit_description("pg_dump", returncode, await stderr.text()))
                tables, count_s = await counting
                await upload.complete()
            except BaseException:
                await kill_quietly(proc)
                if counting is not None:
                    counting.cancel()
                    with contextlib.suppress(BaseException):
                        await counting
                await upload.abort()
                raise
            finally:
                with contextlib.suppress(Exception):
                    await transaction.rollback()
        finished_at = self.clock()
        manifest = Manifest(
            job_id=self.job_id,
            label=self.label,
            database=database,
            key=self.key,
            sha256=digest,
            size_bytes=upload.size,
            parts=upload.parts,
            pg_dump_version=tools.version,
            server_version=version,
            tables=tables,
            started_at=self.started_at,
            finished_at=finished_at,
            durations=Durations(
                dump_s=round(dump_s, 3),
                count_rows_s=round(count_s, 3),
                total_s=round(time.monotonic() - began, 3),
            ),
        )
        await self._write_manifest(manifest)
        await self.catalog.succeed(manifest)
        await self.report(upload.size, upload.size, f"backup {self.key} done")
        log.info("backup.succeeded", job_id=self.job_id, key=self.key, size=upload.size)
        return BackupResult(
            job_id=self.job_id,
            key=self.key,
            manifest_key=manifest_key(self.key),
            database=database,
            label=self.label,
            size_bytes=upload.size,
            sha256=digest,
            parts=upload.parts,
            tables=len(tables),
            rows=sum(tables.values()),
            pg_dump_version=tools.version,
            server_version=version,
            started_at=manifest.started_at.isoformat(),
            finished_at=finished_at.isoformat(),
            duration_s=manifest.durations.total_s,
        )

    async def _stream(
        self, proc: asyncio.subprocess.Process, upload: MultipartUpload, estimate: int
    ) -> str:
        assert proc.stdout is not None
        digest = hashlib.sha256()
        while chunk := await proc.stdout.read(READ_SIZE):
            digest.update(chunk)
            if await upload.add(chunk):
                await self.report(upload.size, estimate, f"uploaded {upload.parts} parts")
        return digest.hexdigest()

    async def _write_manifest(self, manifest: Manifest) -> None:
        """Put the manifest; if that fails, delete the dump (no dump without its manifest)."""
        target = manifest_key(self.key)
        try:
            with s3_boundary(self.bucket, target):
                await self.s3.put_object(
                    Bucket=self.bucket,
                    Key=target,
                    Body=manifest.model_dump_json(indent=2).encode(),
                    ContentType="application/json",
                )
        except BaseException:
            with contextlib.suppress(*S3_ERRORS):
                await asyncio.shield(self.s3.delete_object(Bucket=self.bucket, Key=self.key))
            raise


async def _timed_count(conn: asyncpg.Connection) -> tuple[dict[str, int], float]:
    began = time.monotonic()
    with db_boundary("counting rows in the backup's snapshot"):
        # In a savepoint: a failing count must not end the transaction whose snapshot
        # pg_dump is importing (it would fail with "could not import the snapshot").
        async with conn.transaction():
            tables = await count_rows(conn)
    return tables, time.monotonic() - began


async def _spawn_pg_dump(binary: str, snapshot: str, dsn: str) -> asyncio.subprocess.Process:
    info = split_dsn(dsn)
    try:
        return await asyncio.create_subprocess_exec(
            binary,
            "--format=custom",
            f"--snapshot={snapshot}",
            "--no-password",
            f"--dbname={info.url}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(info),
        )
    except OSError as exc:
        raise BackupError(f"cannot start pg_dump ({binary}): {exc}") from exc
