"""Where a backup lives in the bucket, and how big its multipart parts are.

Key: ``<prefix>/<dbname>/<YYYY>/<MM>/<DD>/<YYYYMMDDTHHMMSSZ>-<job id>.dump``, the manifest
beside it as ``<same stem>.manifest.json`` (all UTC).

Part sizes: S3 allows at most 10,000 parts, each at least 5 MiB except the last, at most
5 GiB. The base part size comes from the size estimate (``pg_database_size``, times a safety
factor) so the estimate fits in half the parts; should the dump outgrow the estimate anyway,
the part size doubles every 1,000 parts past part 5,000, so 10,000 parts hold 67x the base
capacity of 5,000 parts: the upload never runs out of part numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MIB  # S3's maximum
MAX_PARTS = 10_000
BASE_PARTS = 5_000  # parts at the base size; the rest grow
GROWTH_EVERY = 1_000
SAFETY_FACTOR = 2  # a dump is usually smaller than the database; be generous anyway

DUMP_SUFFIX = ".dump"
MANIFEST_SUFFIX = ".manifest.json"


def backup_key(prefix: str, database: str, job_id: str, started_at: datetime) -> str:
    when = started_at.astimezone(UTC)
    parts = [p for p in prefix.strip("/").split("/") if p]
    parts += [
        quote(database, safe="-_.+@"),
        f"{when:%Y}",
        f"{when:%m}",
        f"{when:%d}",
        f"{when:%Y%m%dT%H%M%SZ}-{quote(job_id, safe='-_.')}{DUMP_SUFFIX}",
    ]
    return "/".join(parts)


def manifest_key(dump_key: str) -> str:
    stem = dump_key[: -len(DUMP_SUFFIX)] if dump_key.endswith(DUMP_SUFFIX) else dump_key
    return stem + MANIFEST_SUFFIX


def base_part_size(estimate_bytes: int | None) -> int:
    """The part size for parts 1..5,000: a whole MiB, >= 5 MiB, so the estimate (x2) fits."""
    wanted = max(0, estimate_bytes or 0) * SAFETY_FACTOR
    per_part = -(-wanted // BASE_PARTS)  # ceiling division
    mib = -(-per_part // MIB)
    return min(MAX_PART_SIZE, max(MIN_PART_SIZE, mib * MIB))


def part_size_for(part_number: int, base: int) -> int:
    """The size of part ``part_number`` (1-based): ``base`` up to part 5,000, then doubling
    every 1,000 parts, capped at S3's 5 GiB."""
    if not 1 <= part_number <= MAX_PARTS:
        raise ValueError(f"part number {part_number} outside 1..{MAX_PARTS}")
    if part_number <= BASE_PARTS:
        return base
    doublings = (part_number - BASE_PARTS - 1) // GROWTH_EVERY + 1
    return min(MAX_PART_SIZE, base << doublings)


def capacity(base: int) -> int:
    """How many bytes 10,000 parts starting at ``base`` hold."""
    return sum(part_size_for(n, base) for n in range(1, MAX_PARTS + 1))
