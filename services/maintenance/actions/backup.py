"""``backup.create``, ``backup.verify``, ``backup.prune``, ``backup.restore``: the backup engine
(``services/maintenance/backups``) as job handlers.

Each job opens its own S3 client (jobs are rare; no client outlives an outage of S3) and its
own catalog over the worker's pool. The engine's errors map to job states: a cancel ends the
job ``cancelled``; anything else from the engine (``OpsplaneError``) ends it ``failed`` with the
engine's message, which names what went wrong and never carries a password.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from pydantic import BaseModel, Field

from shared import BackupCreate, BackupPrune, BackupRestore, BackupVerify, Settings, utcnow

from ..backups import (
    BackupCancelled,
    BackupCatalog,
    RetentionPolicy,
    create_backup,
    prune_backups,
    restore_backup,
    verify_backup,
)
from .context import ActionContext, ActionFailed, JobCancelled


class BackupSettings(Settings):
    backup_prefix: str = Field(default="backups", min_length=1, alias="OPS_BACKUP_PREFIX")
    keep_daily: int = Field(default=7, ge=0, alias="OPS_BACKUP_KEEP_DAILY")
    keep_weekly: int = Field(default=0, ge=0, alias="OPS_BACKUP_KEEP_WEEKLY")
    keep_monthly: int = Field(default=0, ge=0, alias="OPS_BACKUP_KEEP_MONTHLY")
    pg_bin_dir: Path | None = Field(default=None, alias="OPS_PG_BIN_DIR")

    def dsn(self) -> str:
        if self.database_url is None:
            raise ActionFailed("DATABASE_URL is not set: nothing to back up")
        return self.database_url.get_secret_value()

    def policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            daily=self.keep_daily, weekly=self.keep_weekly, monthly=self.keep_monthly
        )


@asynccontextmanager
async def s3_client(settings: Settings) -> AsyncIterator[Any]:
    session = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.aws_region,
        # Retries with back-off for a flaky S3; a dead one still fails the job in about a minute.
        config=AioConfig(connect_timeout=10, read_timeout=60,
                         retries={"max_attempts": 5, "mode": "standard"}),
    ) as s3:
        yield s3


def _common(ctx: ActionContext, settings: BackupSettings) -> dict[str, Any]:
    return {
        "bucket": settings.s3_bucket,
        "job_id": ctx.job_id,
        "progress": ctx.progress,
        "cancel": ctx.cancel_event,
        "catalog": BackupCatalog(ctx.pool),
    }


def _dump(result: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = result.model_dump(mode="json")
    return out


@asynccontextmanager
async def engine(settings: Settings) -> AsyncIterator[Any]:
    """An S3 client for one engine call; the engine's cancel becomes the job's."""
    try:
        async with s3_client(settings) as s3:
            yield s3
    except BackupCancelled as exc:
        raise JobCancelled(str(exc)) from exc


async def take_backup(ctx: ActionContext, label: str) -> dict[str, Any]:
    """A backup for another job (purge backs up what it is about to delete)."""
    settings = BackupSettings()
    async with engine(settings) as s3:
        result = await create_backup(
            dsn=settings.dsn(), s3=s3, prefix=settings.backup_prefix, label=label,
            pg_bin_dir=settings.pg_bin_dir, **_common(ctx, settings),
        )
    return _dump(result)


async def backup_create(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, BackupCreate)
    return await take_backup(ctx, params.label or "manual")


async def backup_verify(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, BackupVerify)
    settings = BackupSettings()
    async with engine(settings) as s3:
        result = await verify_backup(
            dsn=settings.dsn(), s3=s3, key=params.key, mode=params.mode,
            pg_bin_dir=settings.pg_bin_dir, **_common(ctx, settings),
        )
    return _dump(result)


async def backup_prune(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, BackupPrune)
    settings = BackupSettings()
    async with engine(settings) as s3:
        result = await prune_backups(
            s3=s3, bucket=settings.s3_bucket, catalog=BackupCatalog(ctx.pool),
            policy=settings.policy(), dry_run=params.dry_run, now=utcnow(),
        )
    return _dump(result)


async def backup_restore(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, BackupRestore)
    settings = BackupSettings()
    async with ctx.pool.acquire() as conn:
        own = await conn.fetchval("SELECT current_database()")
    if params.database == own:
        # The worker's own database holds schema ops (this job's row among it): restoring over it
        # would roll back the record of the restore itself. Restore beside it, then cut over.
        raise ActionFailed(
            f"refusing to restore over {own!r}, the database this worker runs on: restore into "
            "a new database name, check it, then point the app's DATABASE_URL at it"
        )
    async with engine(settings) as s3:
        result = await restore_backup(
            dsn=settings.dsn(), s3=s3, key=params.key, database=params.database,
            # confirm == database was checked at intake: the operator named the database to
            # overwrite; the engine restores beside it and swaps only after it checked.
            replace=True, pg_bin_dir=settings.pg_bin_dir, **_common(ctx, settings),
        )
    return _dump(result)
