"""Reading a backup back: the manifest, and the dump streamed (hashed) into a child's stdin."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import ValidationError

from .errors import BackupError, s3_boundary
from .models import Manifest, S3Like
from .pgtools import ConnInfo, PgTools, StderrTail, child_env, kill_quietly

READ_SIZE = 1024 * 1024
Sink = Callable[[bytes], Awaitable[None]]
OnBytes = Callable[[int], Awaitable[None]]


class ChildStdin:
    """Feeds a child's stdin; a child that stops reading early (``pg_restore --list`` after
    the table of contents) is no error: the rest is still read (and hashed), not sent."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None
        self._stdin = proc.stdin
        self.closed_early = False

    async def write(self, chunk: bytes) -> None:
        if self.closed_early:
            return
        try:
            self._stdin.write(chunk)
            await self._stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            self.closed_early = True

    async def close(self) -> None:
        try:
            self._stdin.close()
            await self._stdin.wait_closed()
        except (BrokenPipeError, ConnectionResetError):
            self.closed_early = True


async def read_object(
    s3: S3Like,
    bucket: str,
    key: str,
    *,
    sink: Sink | None = None,
    on_bytes: OnBytes | None = None,
) -> tuple[str, int]:
    """Stream ``key`` (bounded memory) into ``sink``; returns (sha256 hex, size)."""
    digest = hashlib.sha256()
    size = 0
    with s3_boundary(bucket, key):
        response = await s3.get_object(Bucket=bucket, Key=key)
        body = response["Body"]  # aiobotocore's StreamingBody: read(n) streams
        async with body:  # releases the connection, also on error
            while chunk := await body.read(READ_SIZE):
                digest.update(chunk)
                size += len(chunk)
                if sink is not None:
                    await sink(chunk)
                if on_bytes is not None:
                    await on_bytes(size)
    return digest.hexdigest(), size


async def load_manifest(s3: S3Like, bucket: str, key: str) -> Manifest:
    """The manifest at ``key``; ``BackupError`` when it is not valid JSON of our format."""
    with s3_boundary(bucket, key):
        response = await s3.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            raw = await body.read()
    try:
        return Manifest.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise BackupError(f"manifest {key} is not a valid backup manifest: {exc}"[:800]) from exc


@dataclass(frozen=True)
class PgRestoreRun:
    sha256: str
    size: int
    returncode: int
    stderr: str
    toc_entries: int  # lines of ``pg_restore --list`` that are not comments


async def pg_restore_from_s3(
    tools: PgTools,
    args: list[str],
    *,
    s3: S3Like,
    bucket: str,
    key: str,
    conn: ConnInfo | None,
    on_bytes: OnBytes | None = None,
) -> PgRestoreRun:
    """Run ``pg_restore <args>`` reading the archive from stdin, fed straight from S3 while it
    is hashed. The child is killed (and reaped) if anything fails or the job is cancelled."""
    try:
        proc = await asyncio.create_subprocess_exec(
            tools.pg_restore,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(conn) if conn is not None else None,
            limit=1024 * 1024,
        )
    except OSError as exc:
        raise BackupError(f"cannot start pg_restore ({tools.pg_restore}): {exc}") from exc
    stderr = StderrTail(proc.stderr)
    assert proc.stdout is not None
    counting = asyncio.ensure_future(_count_toc_lines(proc.stdout))
    feeder = ChildStdin(proc)
    try:
        sha256, size = await read_object(s3, bucket, key, sink=feeder.write, on_bytes=on_bytes)
        await feeder.close()
        returncode = await proc.wait()
        toc_entries = await counting
    except BaseException:
        await kill_quietly(proc)
        counting.cancel()
        raise
    return PgRestoreRun(sha256, size, returncode, await stderr.text(), toc_entries)


async def _count_toc_lines(stdout: asyncio.StreamReader) -> int:
    entries = 0
    while line := await stdout.readline():
        if line.strip() and not line.startswith(b";"):
            entries += 1
    return entries
