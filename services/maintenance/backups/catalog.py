"""The backup catalog ``ops.backups`` (migration 0003): one row per backup job.

``running`` when a backup starts, ``succeeded`` or ``failed`` (with the error) when it ends,
``pruned`` when retention deleted its objects. A failed backup whose leftovers were cleaned
keeps ``failed`` and gets ``pruned_at``. The health probe ``backups`` reads the same table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from .errors import BackupError, db_boundary
from .models import Manifest

Status = Literal["running", "succeeded", "failed", "pruned"]
VerifyStatus = Literal["passed", "failed", "error"]
_COLUMNS = (
    "job_id, key, database, status, started_at, finished_at, size_bytes, sha256, label, "
    "manifest, error, verified_at, verify_status, verify_error, pruned_at"
)


@dataclass(frozen=True)
class CatalogEntry:
    job_id: str
    key: str
    database: str
    status: Status
    started_at: datetime
    finished_at: datetime | None
    size_bytes: int | None
    sha256: str | None
    label: str | None
    manifest: dict[str, Any] | None
    error: str | None
    verified_at: datetime | None
    verify_status: VerifyStatus | None
    verify_error: str | None
    pruned_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> CatalogEntry:
        values = dict(row)
        if isinstance(values["manifest"], str):
            values["manifest"] = json.loads(values["manifest"])
        return cls(**values)


class BackupCatalog:
    """Reads and writes ``ops.backups`` through the worker's pool (errors: ``DatabaseError``)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def start(
        self, *, job_id: str, key: str, database: str, label: str | None, started_at: datetime
    ) -> None:
        with db_boundary("recording the backup in ops.backups"):
            try:
                await self._pool.execute(
                    "INSERT INTO ops.backups (job_id, key, database, status, started_at, label) "
                    "VALUES ($1, $2, $3, 'running', $4, $5)",
                    job_id,
                    key,
                    database,
                    started_at,
                    label,
                )
            except asyncpg.UniqueViolationError as exc:
                raise BackupError(f"job {job_id} already has a backup in the catalog") from exc

    async def succeed(self, manifest: Manifest) -> None:
        with db_boundary("recording the finished backup in ops.backups"):
            await self._pool.execute(
                "UPDATE ops.backups SET status = 'succeeded', finished_at = $2, size_bytes = $3, "
                "sha256 = $4, manifest = $5::jsonb, pg_dump_version = $6, server_version = $7, "
                "error = NULL WHERE job_id = $1",
                manifest.job_id,
                manifest.finished_at,
                manifest.size_bytes,
                manifest.sha256,
                manifest.model_dump_json(),
                manifest.pg_dump_version,
                manifest.server_version,
            )

    async def fail(self, job_id: str, *, finished_at: datetime, error: str) -> None:
        with db_boundary("recording the failed backup in ops.backups"):
            await self._pool.execute(
                "UPDATE ops.backups SET status = 'failed', finished_at = $2, error = $3 "
                "WHERE job_id = $1 AND status = 'running'",
                job_id,
                finished_at,
                error[:4000],
            )

    async def get(self, key: str) -> CatalogEntry | None:
        with db_boundary("reading ops.backups"):
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM ops.backups WHERE key = $1", key
            )
        return CatalogEntry.from_row(row) if row else None

    async def get_job(self, job_id: str) -> CatalogEntry | None:
        with db_boundary("reading ops.backups"):
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM ops.backups WHERE job_id = $1", job_id
            )
        return CatalogEntry.from_row(row) if row else None

    async def newest_succeeded(self, database: str | None = None) -> CatalogEntry | None:
        with db_boundary("reading ops.backups"):
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM ops.backups WHERE status = 'succeeded' "
                "AND ($1::text IS NULL OR database = $1) "
                "ORDER BY finished_at DESC, key DESC LIMIT 1",
                database,
            )
        return CatalogEntry.from_row(row) if row else None

    async def entries(self) -> list[CatalogEntry]:
        """Every row retention may act on: succeeded, running, and failed ones not cleaned."""
        with db_boundary("reading ops.backups"):
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM ops.backups WHERE status IN ('succeeded', 'running') "
                "OR (status = 'failed' AND pruned_at IS NULL) ORDER BY started_at"
            )
        return [CatalogEntry.from_row(r) for r in rows]

    async def record_verify(
        self, key: str, *, verified_at: datetime, status: VerifyStatus, error: str | None
    ) -> None:
        with db_boundary("recording the verification in ops.backups"):
            await self._pool.execute(
                "UPDATE ops.backups SET verified_at = $2, verify_status = $3, verify_error = $4 "
                "WHERE key = $1",
                key,
                verified_at,
                status,
                error[:4000] if error else None,
            )

    async def mark_pruned(self, key: str, *, at: datetime) -> None:
        with db_boundary("marking the backup pruned in ops.backups"):
            await self._pool.execute(
                "UPDATE ops.backups SET status = 'pruned', pruned_at = $2 "
                "WHERE key = $1 AND status = 'succeeded'",
                key,
                at,
            )

    async def mark_cleaned(self, key: str, *, at: datetime, error: str) -> None:
        """A failed (or stale running) backup's leftovers are gone: it stays ``failed``."""
        with db_boundary("marking the failed backup cleaned in ops.backups"):
            await self._pool.execute(
                "UPDATE ops.backups SET status = 'failed', pruned_at = $2, "
                "finished_at = coalesce(finished_at, $2), error = coalesce(error, $3) "
                "WHERE key = $1 AND status IN ('failed', 'running')",
                key,
                at,
                error,
            )
