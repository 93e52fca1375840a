"""The retention plan: a pure function from the catalog to what to keep, prune and clean.

Grandfather-father-son per database, in UTC: walking that database's succeeded backups newest
first, ``daily`` keeps the newest backup of each of the last ``daily`` days that have a backup,
``weekly`` the same per ISO week, ``monthly`` per month; a backup any rule keeps is kept. So
a database keeps at most ``daily + weekly + monthly`` backups, never fewer than one: its newest
succeeded backup is always kept. Counting days *with backups* (not calendar days) means a
stopped schedule never ages every backup out.

Failed backups not yet cleaned, and ``running`` ones that started more than ``stale_after``
ago (a worker died mid-backup), go to ``clean``: their leftovers (an unfinished multipart
upload, a dump without manifest) are removed; their rows stay ``failed`` for the record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from .models import RetentionPolicy

STALE_AFTER = timedelta(hours=24)


@dataclass(frozen=True)
class Candidate:
    key: str
    database: str
    status: Literal["running", "succeeded", "failed"]
    at: datetime  # finished_at for finished backups, started_at for running ones


@dataclass(frozen=True)
class PrunePlan:
    keep: tuple[str, ...]
    prune: tuple[str, ...]
    clean: tuple[str, ...]


_RULES: tuple[tuple[str, Callable[[datetime], Hashable]], ...] = (
    ("daily", lambda t: t.date()),
    ("weekly", lambda t: t.isocalendar()[:2]),
    ("monthly", lambda t: (t.year, t.month)),
)


def keep_set(backups: Iterable[Candidate], policy: RetentionPolicy) -> set[str]:
    """The keys GFS keeps among one database's succeeded backups."""
    ordered = sorted(backups, key=lambda b: (b.at, b.key), reverse=True)
    if not ordered:
        return set()
    kept = {ordered[0].key}  # the newest succeeded backup, whatever the policy
    for rule, bucket_of in _RULES:
        limit: int = getattr(policy, rule)
        seen: set[Hashable] = set()
        for backup in ordered:
            if len(seen) >= limit:
                break
            bucket = bucket_of(backup.at.astimezone(UTC))
            if bucket not in seen:
                seen.add(bucket)
                kept.add(backup.key)
    return kept


def plan_prune(
    backups: Iterable[Candidate],
    policy: RetentionPolicy,
    now: datetime,
    *,
    stale_after: timedelta = STALE_AFTER,
) -> PrunePlan:
    succeeded: dict[str, list[Candidate]] = defaultdict(list)
    clean: list[str] = []
    for backup in backups:
        if backup.status == "succeeded":
            succeeded[backup.database].append(backup)
        elif backup.status == "failed" or (
            backup.status == "running" and now - backup.at > stale_after
        ):
            clean.append(backup.key)
    keep: set[str] = set()
    prune: set[str] = set()
    for group in succeeded.values():
        kept = keep_set(group, policy)
        keep |= kept
        prune |= {b.key for b in group} - kept
    return PrunePlan(
        keep=tuple(sorted(keep)), prune=tuple(sorted(prune)), clean=tuple(sorted(clean))
    )
