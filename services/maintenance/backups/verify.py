"""verify_backup: is a backup really restorable?

``quick``: stream the object, recompute SHA-256 and compare it with the manifest and the
catalog, while ``pg_restore --list`` reads the archive's table of contents.
``restore`` (the restore drill): restore into a scratch database ``opsplane_drill_<job>``, compare
every table's row count with the manifest, and always drop the scratch database.

The verdict goes to the catalog (``verified_at``, ``verify_status`` passed | failed | error,
``verify_error``). A bad backup raises ``VerifyFailed`` (its ``.result`` says what differed); a
broken dependency (S3 or PostgreSQL down) raises its ``StorageError`` / ``DatabaseError`` and is
recorded as ``error``; a cancel records nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared import OpsplaneError, StorageError, connect, get_logger

from .catalog import BackupCatalog, CatalogEntry
from .databases import (
    compare_counts,
    count_rows_in,
    create_database,
    drill_database_name,
    drop_database,
    server_version,
)
from .errors import BackupCancelled, BackupError, BackupNotFound, VerifyFailed, is_missing_object
from .layout import manifest_key
from .models import Manifest, ProgressCallback, S3Like, TableMismatch, VerifyResult
from .pgtools import APPLICATION_NAME, PgTools, exit_description, resolve_tools, split_dsn
from .pgtools import with_database as dsn_for
from .runtime import Clock, Reporter, run_cancellable, utc_now
from .stream import load_manifest, pg_restore_from_s3

log = get_logger(__name__)
Mode = Literal["quick", "restore"]


async def pick_backup(
    catalog: BackupCatalog, key: str | None, database: str | None
) -> CatalogEntry:
    """The catalog entry of ``key``, or the newest succeeded backup (of ``database``)."""
    entry = await (catalog.get(key) if key else catalog.newest_succeeded(database))
    if entry is None:
        raise BackupNotFound(f"no backup {key} in the catalog" if key else "no succeeded backup")
    if entry.status != "succeeded" or entry.sha256 is None:
        raise BackupNotFound(f"backup {entry.key} is {entry.status}, not a usable backup")
    return entry


async def verify_backup(
    *,
    dsn: str,
    s3: S3Like,
    bucket: str,
    key: str | None,
    mode: Mode,
    job_id: str,
    progress: ProgressCallback,
    cancel: asyncio.Event,
    catalog: BackupCatalog,
    database: str | None = None,
    pg_bin_dir: Path | None = None,
    clock: Clock = utc_now,
) -> VerifyResult:
    """Verify backup ``key`` (None: the newest succeeded one, of ``database`` if given).

    ``dsn`` must be able to CREATE DATABASE for mode ``restore`` (the drill's scratch database
    is created on the server it points at)."""
    entry = await pick_backup(catalog, key, database)
    check = _Check(dsn, s3, bucket, entry, mode, job_id, Reporter(progress), pg_bin_dir)
    try:
        result = await run_cancellable(cancel, check.run(clock))
    except (BackupCancelled, asyncio.CancelledError):
        raise
    except OpsplaneError as exc:
        with contextlib.suppress(OpsplaneError):
            await catalog.record_verify(
                entry.key, verified_at=clock(), status="error", error=str(exc)
            )
        raise
    await catalog.record_verify(
        entry.key,
        verified_at=clock(),
        status="passed" if result.ok else "failed",
        error=result.error,
    )
    if not result.ok:
        log.warning("backup.verify_failed", key=entry.key, mode=mode, error=result.error)
        raise VerifyFailed(
            f"backup {entry.key} failed {mode} verification: {result.error}", result=result
        )
    log.info("backup.verified", key=entry.key, mode=mode)
    return result


@dataclass
class _Check:
    dsn: str
    s3: S3Like
    bucket: str
    entry: CatalogEntry
    mode: Mode
    job_id: str
    report: Reporter
    pg_bin_dir: Path | None
    problems: list[str] = field(default_factory=list)

    async def run(self, clock: Clock) -> VerifyResult:
        began = time.monotonic()
        manifest = await self._manifest()
        assert self.entry.sha256 is not None
        if manifest is not None and manifest.sha256 != self.entry.sha256:
            self.problems.append(
                f"manifest sha256 {manifest.sha256} differs from the catalog's {self.entry.sha256}"
            )
        tools = await self._tools(manifest)
        result = VerifyResult(
            job_id=self.job_id,
            key=self.entry.key,
            mode=self.mode,
            ok=False,
            sha256_expected=self.entry.sha256,
            verified_at=clock().isoformat(),
            duration_s=0.0,
        )
        try:
            if self.mode == "quick":
                await self._quick(tools, result)
            else:
                await self._drill(tools, manifest, result)
        except StorageError as exc:
            if not is_missing_object(exc):
                raise
            self.problems.append(f"the backup object {self.entry.key} is missing from the bucket")
        result.ok = not self.problems
        result.error = "; ".join(self.problems)[:3500] or None
        result.duration_s = round(time.monotonic() - began, 3)
        return result

    async def _manifest(self) -> Manifest | None:
        target = manifest_key(self.entry.key)
        try:
            return await load_manifest(self.s3, self.bucket, target)
        except StorageError as exc:
            if not is_missing_object(exc):
                raise
            self.problems.append(f"the manifest {target} is missing from the bucket")
        except BackupError as exc:
            self.problems.append(str(exc))
        return None

    async def _tools(self, manifest: Manifest | None) -> PgTools:
        async with connect(self.dsn, timeout_s=10, application_name=APPLICATION_NAME) as conn:
            major, version = await server_version(conn)
        against = f"the server (PostgreSQL {version})"
        if manifest is not None:
            dumped = int(manifest.pg_dump_version.split(".")[0])
            if dumped > major:
                major, against = dumped, f"the archive's pg_dump {manifest.pg_dump_version}"
        return await resolve_tools(major, against, self.pg_bin_dir)

    def _check_sha(self, sha256: str, size: int, result: VerifyResult) -> None:
        result.sha256_actual, result.size_bytes = sha256, size
        if sha256 != self.entry.sha256:
            self.problems.append(
                f"checksum mismatch: the object's sha256 is {sha256} ({size} bytes), "
                f"the catalog recorded {self.entry.sha256} ({self.entry.size_bytes} bytes)"
            )

    async def _on_bytes(self, done: int) -> None:
        await self.report.throttled(done, self.entry.size_bytes, f"reading {self.entry.key}")

    async def _quick(self, tools: PgTools, result: VerifyResult) -> None:
        run = await pg_restore_from_s3(
            tools,
            ["--list"],
            s3=self.s3,
            bucket=self.bucket,
            key=self.entry.key,
            conn=None,
            on_bytes=self._on_bytes,
        )
        self._check_sha(run.sha256, run.size, result)
        result.toc_entries = run.toc_entries
        if run.returncode != 0:
            self.problems.append(
                "the archive is unreadable: "
                + exit_description("pg_restore --list", run.returncode, run.stderr)
            )

    async def _drill(self, tools: PgTools, manifest: Manifest | None, result: VerifyResult) -> None:
        scratch = drill_database_name(self.job_id)
        result.scratch_database = scratch
        await self.report(0, self.entry.size_bytes, f"restore drill into {scratch}")
        await create_database(self.dsn, scratch)
        try:
            target = dsn_for(self.dsn, scratch)
            run = await pg_restore_from_s3(
                tools,
                [
                    "--exit-on-error",
                    "--single-transaction",
                    "--no-owner",
                    "--no-privileges",
                    f"--dbname={split_dsn(target).url}",
                ],
                s3=self.s3,
                bucket=self.bucket,
                key=self.entry.key,
                conn=split_dsn(target),
                on_bytes=self._on_bytes,
            )
            self._check_sha(run.sha256, run.size, result)
            if run.returncode != 0:
                self.problems.append(
                    "the restore failed: "
                    + exit_description("pg_restore", run.returncode, run.stderr)
                )
                return
            actual = await count_rows_in(target)
            result.tables_checked = len(actual)
            if manifest is not None:
                result.mismatches = compare_counts(manifest.tables, actual)
                if result.mismatches:
                    self.problems.append(_mismatch_text(result.mismatches))
        finally:
            await asyncio.shield(drop_database(self.dsn, scratch))


def _mismatch_text(mismatches: list[TableMismatch]) -> str:
    shown = ", ".join(
        f"{m.table} (manifest {m.expected}, restored {m.actual})" for m in mismatches[:10]
    )
    more = f" and {len(mismatches) - 10} more" if len(mismatches) > 10 else ""
    return f"row counts differ from the manifest: {shown}{more}"
