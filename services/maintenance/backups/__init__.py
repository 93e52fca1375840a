"""The maintenance worker's backup engine: create, verify, restore and prune backups.

A library the worker's actions call (no NATS here): every function is async, takes its
adapters (an open aiobotocore S3 client, a ``BackupCatalog`` over the worker's pool, a progress
callback, a cancel event) and keeps no global state. See docs/backups.md.
"""

from .catalog import BackupCatalog, CatalogEntry
from .create import create_backup
from .errors import (
    BackupCancelled,
    BackupError,
    BackupNotFound,
    RestoreRefused,
    VerifyFailed,
)
from .layout import backup_key, base_part_size, manifest_key, part_size_for
from .models import (
    BackupResult,
    Manifest,
    ProgressCallback,
    PruneResult,
    RestoreResult,
    RetentionPolicy,
    S3Like,
    TableMismatch,
    VerifyResult,
)
from .pgtools import PgTools, candidate_bin_dirs
from .prune import prune_backups
from .restore import restore_backup
from .retention import Candidate, PrunePlan, plan_prune
from .verify import verify_backup

__all__ = [
    "BackupCancelled",
    "BackupCatalog",
    "BackupError",
    "BackupNotFound",
    "BackupResult",
    "Candidate",
    "CatalogEntry",
    "Manifest",
    "PgTools",
    "ProgressCallback",
    "PrunePlan",
    "PruneResult",
    "RestoreRefused",
    "RestoreResult",
    "RetentionPolicy",
    "S3Like",
    "TableMismatch",
    "VerifyFailed",
    "VerifyResult",
    "backup_key",
    "base_part_size",
    "candidate_bin_dirs",
    "create_backup",
    "manifest_key",
    "part_size_for",
    "plan_prune",
    "prune_backups",
    "restore_backup",
    "verify_backup",
]
