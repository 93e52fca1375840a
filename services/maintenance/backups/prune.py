"""prune_backups: apply the retention plan to the bucket and the catalog.

Pruning a backup deletes its ``.dump`` and ``.manifest.json`` and marks its row ``pruned``;
cleaning a failed (or stale running) backup aborts its unfinished multipart uploads, deletes
whatever objects it left and sets ``pruned_at`` (the row stays ``failed``). S3 deletes are
idempotent, so a prune that failed half-way is simply run again. ``dry_run`` only plans.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared import get_logger

from .catalog import BackupCatalog
from .errors import s3_boundary
from .layout import manifest_key
from .models import PruneResult, RetentionPolicy, S3Like
from .retention import STALE_AFTER, Candidate, plan_prune
from .upload import abort_uploads_under

log = get_logger(__name__)


async def prune_backups(
    *,
    s3: S3Like,
    bucket: str,
    catalog: BackupCatalog,
    policy: RetentionPolicy,
    dry_run: bool,
    now: datetime,
    stale_after: timedelta = STALE_AFTER,
) -> PruneResult:
    """Delete what ``policy`` does not keep (every database in the catalog, planned apart).

    Raises ``StorageError`` / ``DatabaseError``; what was deleted before stays recorded."""
    entries = await catalog.entries()
    candidates = [
        Candidate(
            key=e.key,
            database=e.database,
            status=e.status,  # type: ignore[arg-type]  # entries() never returns "pruned"
            at=e.finished_at or e.started_at,
        )
        for e in entries
    ]
    plan = plan_prune(candidates, policy, now, stale_after=stale_after)
    result = PruneResult(
        dry_run=dry_run,
        policy=policy,
        pruned=list(plan.prune),
        kept=list(plan.keep),
        cleaned=list(plan.clean),
        planned_at=now.isoformat(),
    )
    if dry_run:
        return result
    for key in plan.prune:
        await _delete_objects(s3, bucket, key)
        await catalog.mark_pruned(key, at=now)
        log.info("backup.pruned", key=key)
    running = {e.key for e in entries if e.status == "running"}
    for key in plan.clean:
        await abort_uploads_under(s3, bucket, key)
        await _delete_objects(s3, bucket, key)
        reason = f"interrupted: still running after {stale_after}; leftovers cleaned"
        await catalog.mark_cleaned(key, at=now, error=reason if key in running else "")
        log.info("backup.cleaned", key=key)
    return result


async def _delete_objects(s3: S3Like, bucket: str, key: str) -> None:
    for target in (key, manifest_key(key)):
        with s3_boundary(bucket, target):
            await s3.delete_object(Bucket=bucket, Key=target)
