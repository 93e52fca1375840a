"""The backup engine's data: manifest, retention policy, results, and the adapters it takes.

Results are pydantic models whose ``model_dump()`` is JSON-able as is (times are ISO strings):
they go into ``JobEvent.result``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from shared import Progress

ProgressCallback = Callable[[Progress, str], Awaitable[None]]
"""Called with (progress, message) as a job advances; awaited, so it may publish."""

MANIFEST_FORMAT = "opsplane-backup/1"


class S3Like(Protocol):
    """What the engine calls on an open aiobotocore S3 client (``session.client("s3")``)."""

    async def create_multipart_upload(self, **kwargs: Any) -> Any: ...
    async def upload_part(self, **kwargs: Any) -> Any: ...
    async def complete_multipart_upload(self, **kwargs: Any) -> Any: ...
    async def abort_multipart_upload(self, **kwargs: Any) -> Any: ...
    async def list_multipart_uploads(self, **kwargs: Any) -> Any: ...
    async def put_object(self, **kwargs: Any) -> Any: ...
    async def get_object(self, **kwargs: Any) -> Any: ...
    async def delete_object(self, **kwargs: Any) -> Any: ...


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Durations(_Model):
    dump_s: float
    count_rows_s: float
    total_s: float


class Manifest(_Model):
    """``<stem>.manifest.json`` beside every ``.dump``: what the dump holds, how to trust it."""

    format: Literal["opsplane-backup/1"] = "opsplane-backup/1"
    job_id: str
    label: str | None = None
    database: str
    key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: NonNegativeInt
    parts: NonNegativeInt
    pg_dump_version: str
    server_version: str
    tables: dict[str, NonNegativeInt]
    started_at: datetime
    finished_at: datetime
    durations: Durations


class RetentionPolicy(_Model):
    """Grandfather-father-son: keep the newest backup of each of the last ``daily`` days,
    ``weekly`` ISO weeks and ``monthly`` months that have backups (UTC). The newest succeeded
    backup is always kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    daily: NonNegativeInt = 7
    weekly: NonNegativeInt = 0
    monthly: NonNegativeInt = 0


class BackupResult(_Model):
    job_id: str
    key: str
    manifest_key: str
    database: str
    label: str | None
    size_bytes: int
    sha256: str
    parts: int
    tables: int
    rows: int
    pg_dump_version: str
    server_version: str
    started_at: str
    finished_at: str
    duration_s: float


class TableMismatch(_Model):
    table: str
    expected: int | None  # None: not in the manifest
    actual: int | None  # None: missing after the restore


class VerifyResult(_Model):
    job_id: str
    key: str
    mode: Literal["quick", "restore"]
    ok: bool
    sha256_expected: str
    sha256_actual: str | None = None
    size_bytes: int | None = None
    toc_entries: int | None = None
    scratch_database: str | None = None
    tables_checked: int = 0
    mismatches: list[TableMismatch] = Field(default_factory=list)
    error: str | None = None
    verified_at: str
    duration_s: float


class RestoreResult(_Model):
    job_id: str
    key: str
    database: str
    created: bool
    replaced: bool
    sha256: str
    size_bytes: int
    tables: int
    rows: int
    duration_s: float


class PruneResult(_Model):
    dry_run: bool
    policy: RetentionPolicy
    pruned: list[str] = Field(default_factory=list)  # keys of succeeded backups deleted
    kept: list[str] = Field(default_factory=list)
    cleaned: list[str] = Field(default_factory=list)  # failed / stale backups' leftovers
    planned_at: str
