"""The backup engine's errors, and the one place library errors become ours.

botocore / aiobotocore errors become ``StorageError``, asyncpg's ``DatabaseError``, a failing
``pg_dump`` / ``pg_restore`` a ``BackupError``; every message is readable and has no password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from shared import DRIVER_ERRORS, DatabaseError, OpsplaneError, StorageError, describe, scrub

# What a broken or unreachable S3 raises (plus the OS's and timeouts, which aiohttp lets through).
S3_ERRORS: tuple[type[BaseException], ...] = (
    BotoCoreError,
    ClientError,
    OSError,
    asyncio.TimeoutError,
)

_MISSING_BUCKET = {"NoSuchBucket"}
_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}


class BackupError(OpsplaneError):
    """A backup, verify, restore or prune could not be done (pg_dump failed, bad archive...)."""


class BackupCancelled(BackupError):
    """The job was cancelled; everything it started was cleaned up."""


class BackupNotFound(BackupError):
    """No such backup in the catalog (or no succeeded backup at all)."""


class VerifyFailed(BackupError):
    """The backup itself is bad: checksum mismatch, unreadable archive, row counts differ.

    ``result`` is the full ``VerifyResult`` (what was checked, what differed)."""

    def __init__(self, message: str, *, result: Any) -> None:
        super().__init__(message)
        self.result = result


class RestoreRefused(BackupError):
    """The target database exists and is not empty, and ``replace`` was not asked for."""


def explain_s3(exc: BaseException, bucket: str, key: str | None = None) -> str:
    """What went wrong with S3, for an operator, without credentials or request ids."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        operation = exc.operation_name
        if code in _MISSING_BUCKET:
            return f"S3 {operation}: bucket {bucket!r} not found"
        if code in _MISSING_KEY and key is not None:
            return f"S3 {operation}: object {key!r} not found in bucket {bucket!r}"
        if code in _DENIED:
            return f"S3 {operation}: access to bucket {bucket!r} denied (HTTP {status or code})"
        message = str(error.get("Message", ""))[:200]
        return f"S3 {operation}: {code or 'error'} (HTTP {status}) {message}".rstrip()
    if isinstance(exc, NoCredentialsError):
        return "S3: no AWS credentials configured"
    if isinstance(exc, EndpointConnectionError):
        return f"S3 unreachable: {exc}"
    if isinstance(exc, asyncio.TimeoutError):
        return "S3 request timed out"
    return scrub(f"S3 {type(exc).__name__}: {exc}")[:500]


def storage_error(exc: BaseException, bucket: str, key: str | None = None) -> StorageError:
    return StorageError(explain_s3(exc, bucket, key))


def database_error(exc: BaseException, doing: str) -> DatabaseError:
    return DatabaseError(f"{doing}: {describe(exc)}")


def is_missing_object(exc: BaseException) -> bool:
    """A StorageError (or botocore error) that says the object does not exist."""
    cause = exc.__cause__ if isinstance(exc, StorageError) else exc
    if isinstance(cause, ClientError):
        return str(cause.response.get("Error", {}).get("Code", "")) in _MISSING_KEY
    return False


@contextmanager
def s3_boundary(bucket: str, key: str | None = None) -> Iterator[None]:
    """Around S3 calls: botocore's (and the socket's) errors become ``StorageError``."""
    try:
        yield
    except S3_ERRORS as exc:
        raise storage_error(exc, bucket, key) from exc


@contextmanager
def db_boundary(doing: str) -> Iterator[None]:
    """Around asyncpg calls: driver errors become ``DatabaseError`` saying what we were doing."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise database_error(exc, doing) from exc
