"""restore_backup: a backup into a named database, never half-done under that name.

1. The backup must be ``succeeded`` in the catalog; its manifest must agree with the catalog.
2. The object is streamed once to recompute its SHA-256 before anything is touched.
3. The target: created if missing; if it exists and is not empty the restore is refused
   (``RestoreRefused``) unless ``replace=True``. The worker's guards (``BACKUP_RESTORE_ALLOWED``,
   the signed ``target`` claim, ``confirm``) decide whether to call this at all.
4. ``pg_restore --single-transaction --exit-on-error`` into ``<target>_restoring_<job>``, row
   counts compared with the manifest; only then is the old target dropped (``replace``) and the
   new one renamed to it. On any failure or cancel the half-made database is dropped and the
   target is as it was.

Ownership and grants are restored as dumped (``no_owner=True`` restores everything as the
connecting role); database-level settings (``ALTER DATABASE ... SET``) are not in a ``-Fc``
dump of one database and are not restored.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from shared import connect, get_logger

from .catalog import BackupCatalog, CatalogEntry
from .databases import (
    compare_counts,
    count_rows_in,
    create_database,
    database_exists,
    drop_database,
    is_empty,
    rename_database,
    restoring_database_name,
    server_version,
)
from .errors import BackupError, BackupNotFound, RestoreRefused
from .layout import manifest_key
from .models import Manifest, ProgressCallback, RestoreResult, S3Like
from .pgtools import (
    APPLICATION_NAME,
    PgTools,
    exit_description,
    resolve_tools,
    split_dsn,
    with_database,
)
from .runtime import Reporter, run_cancellable
from .stream import load_manifest, pg_restore_from_s3, read_object
from .verify import pick_backup

log = get_logger(__name__)


async def restore_backup(
    *,
    dsn: str,
    s3: S3Like,
    bucket: str,
    key: str,
    database: str,
    job_id: str,
    progress: ProgressCallback,
    cancel: asyncio.Event,
    catalog: BackupCatalog,
    replace: bool = False,
    no_owner: bool = False,
    pg_bin_dir: Path | None = None,
) -> RestoreResult:
    """Restore backup ``key`` into database ``database`` on the server ``dsn`` points at.

    ``dsn`` needs CREATE DATABASE (and ownership of ``database`` to replace it). Raises
    ``RestoreRefused`` (target not empty, no ``replace``), ``BackupNotFound``, ``BackupError``
    (checksum mismatch, pg_restore failed, row counts differ), ``StorageError``,
    ``DatabaseError`` or ``BackupCancelled``."""
    if not key:
        raise BackupNotFound("restore needs the key of a backup")
    entry = await pick_backup(catalog, key, None)
    job = _Restore(
        dsn, s3, bucket, entry, database, job_id, Reporter(progress), replace, no_owner, pg_bin_dir
    )
    return await run_cancellable(cancel, job.run())


@dataclass
class _Restore:
    dsn: str
    s3: S3Like
    bucket: str
    entry: CatalogEntry
    database: str
    job_id: str
    report: Reporter
    replace: bool
    no_owner: bool
    pg_bin_dir: Path | None

    async def run(self) -> RestoreResult:
        began = time.monotonic()
        key = self.entry.key
        manifest = await load_manifest(self.s3, self.bucket, manifest_key(key))
        if manifest.sha256 != self.entry.sha256:
            raise BackupError(f"manifest of {key} disagrees with the catalog's sha256")
        exists = await database_exists(self.dsn, self.database)
        if (
            exists
            and not self.replace
            and not await is_empty(with_database(self.dsn, self.database))
        ):
            raise RestoreRefused(
                f"database {self.database} exists and is not empty; "
                "restore into a new or empty database, or ask to replace it"
            )
        tools = await self._tools(manifest)
        await self.report(0, manifest.size_bytes, f"checking {key} before restoring")
        sha256, size = await read_object(self.s3, self.bucket, key, on_bytes=self._on_bytes)
        if sha256 != self.entry.sha256:
            raise BackupError(
                f"checksum mismatch: {key} has sha256 {sha256}, the catalog {self.entry.sha256}; "
                "not restoring a corrupt backup"
            )
        staging = restoring_database_name(self.database, self.job_id)
        await drop_database(self.dsn, staging)  # a leftover of a crashed attempt of this job
        await create_database(self.dsn, staging)
        try:
            tables = await self._restore_into(tools, staging, manifest)
            if exists:
                await drop_database(self.dsn, self.database)
            await rename_database(self.dsn, staging, self.database)
        except BaseException:
            await asyncio.shield(drop_database(self.dsn, staging))
            raise
        log.info("backup.restored", key=key, database=self.database, replaced=exists)
        await self.report(size, size, f"restored {key} into {self.database}")
        return RestoreResult(
            job_id=self.job_id,
            key=key,
            database=self.database,
            created=not exists,
            replaced=exists,
            sha256=sha256,
            size_bytes=size,
            tables=len(tables),
            rows=sum(tables.values()),
            duration_s=round(time.monotonic() - began, 3),
        )

    async def _tools(self, manifest: Manifest) -> PgTools:
        async with connect(self.dsn, timeout_s=10, application_name=APPLICATION_NAME) as conn:
            major, version = await server_version(conn)
        dumped = int(manifest.pg_dump_version.split(".")[0])
        against = (
            f"the server (PostgreSQL {version}) "
            f"and the archive (pg_dump {manifest.pg_dump_version})"
        )
        return await resolve_tools(max(major, dumped), against, self.pg_bin_dir)

    async def _on_bytes(self, done: int) -> None:
        await self.report.throttled(done, self.entry.size_bytes, f"reading {self.entry.key}")

    async def _restore_into(
        self, tools: PgTools, staging: str, manifest: Manifest
    ) -> dict[str, int]:
        target = with_database(self.dsn, staging)
        args = ["--exit-on-error", "--single-transaction", f"--dbname={split_dsn(target).url}"]
        if self.no_owner:
            args[2:2] = ["--no-owner", "--no-privileges"]
        run = await pg_restore_from_s3(
            tools,
            args,
            s3=self.s3,
            bucket=self.bucket,
            key=self.entry.key,
            conn=split_dsn(target),
            on_bytes=self._on_bytes,
        )
        if run.returncode != 0:
            raise BackupError(
                "restore failed: " + exit_description("pg_restore", run.returncode, run.stderr)
            )
        if run.sha256 != self.entry.sha256:
            raise BackupError(f"{self.entry.key} changed while it was being restored")
        tables = await count_rows_in(target)
        mismatches = compare_counts(manifest.tables, tables)
        if mismatches:
            raise BackupError(
                "restored row counts differ from the manifest: "
                + ", ".join(f"{m.table} ({m.expected} vs {m.actual})" for m in mismatches[:10])
            )
        return tables
