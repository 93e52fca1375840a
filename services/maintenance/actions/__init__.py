"""Action handlers: ``action name -> async handler(ctx, params) -> result dict``.

A handler reports progress with ``await ctx.progress(Progress(...), message)`` (throttled by
the runner), checks ``ctx.cancelled()`` / ``ctx.raise_if_cancelled()`` between steps and wraps a
long statement in ``await ctx.cancellable(awaitable)`` so a cancel interrupts it. Its result is
a JSON-able dict that lands in the job's ``result``; an ``ActionFailed`` ends the job ``failed``
with its message.
"""

from __future__ import annotations

from .backfill import backfill_tenant_ids
from .backup import backup_create, backup_prune, backup_restore, backup_verify, take_backup
from .context import ActionContext, ActionFailed, ActionHandler, JobCancelled
from .db_report import db_report
from .db_vacuum import db_vacuum
from .job_cancel import job_cancel
from .purge import purge_app_data, purge_with_backup

# Control actions run at once, outside the concurrency limit (a cancel must never wait behind
# the jobs it is meant to stop).
CONTROL_ACTIONS = frozenset({"job.cancel"})


def default_handlers() -> dict[str, ActionHandler]:
    """The handlers this worker ships (backup.*, backfill.*, purge.* are wired as they land)."""
    return {
        "backup.create": backup_create,
        "backup.verify": backup_verify,
        "backup.prune": backup_prune,
        "backup.restore": backup_restore,
        "backfill.tenant_ids": backfill_tenant_ids,
        # A purge takes a backup (backup.create's engine) first; refuses if it fails.
        "purge.app_data": purge_with_backup(take_backup),
        "db.report": db_report,
        "db.vacuum": db_vacuum,
        "job.cancel": job_cancel,
    }


__all__ = [
    "CONTROL_ACTIONS",
    "ActionContext",
    "ActionFailed",
    "ActionHandler",
    "JobCancelled",
    "backfill_tenant_ids",
    "backup_create",
    "backup_prune",
    "backup_restore",
    "backup_verify",
    "db_report",
    "db_vacuum",
    "default_handlers",
    "job_cancel",
    "purge_app_data",
    "purge_with_backup",
    "take_backup",
]
