"""A streaming S3 multipart upload with bounded memory and a guaranteed abort.

Bytes are buffered until a part is full, then uploaded as a task; at most ``max_in_flight``
parts are uploading at once (``add`` waits for a slot, which pauses the producer: pg_dump blocks
on its pipe). Memory is about ``(max_in_flight + 1) x part size``. Nothing is visible in the
bucket until ``complete``; ``abort`` cancels the parts in flight and aborts the upload, so S3
drops every part (it runs to the end even while the caller is being cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from shared import StorageError, get_logger

from .errors import S3_ERRORS, s3_boundary
from .layout import MAX_PARTS, part_size_for
from .models import S3Like

log = get_logger(__name__)


class MultipartUpload:
    def __init__(
        self,
        s3: S3Like,
        bucket: str,
        key: str,
        *,
        base_part_size: int,
        max_in_flight: int = 2,
        content_type: str = "application/octet-stream",
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._s3 = s3
        self.bucket = bucket
        self.key = key
        self._base = base_part_size
        self._max_in_flight = max_in_flight
        self._content_type = content_type
        self._buffer = bytearray()
        self._tasks: set[asyncio.Task[None]] = set()
        self._etags: dict[int, str] = {}
        self._next_part = 1
        self.upload_id: str | None = None
        self.completed = False
        self.size = 0

    @property
    def parts(self) -> int:
        return self._next_part - 1

    async def start(self) -> None:
        with s3_boundary(self.bucket, self.key):
            response = await self._s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self._content_type
            )
        self.upload_id = response["UploadId"]

    async def add(self, data: bytes) -> int:
        """Buffer ``data``; upload every part it fills. Returns how many parts it started."""
        self._buffer += data
        self.size += len(data)
        started = 0
        while len(self._buffer) >= part_size_for(self._next_part, self._base):
            size = part_size_for(self._next_part, self._base)
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            await self._submit(chunk)
            started += 1
        return started

    async def complete(self) -> None:
        """Upload what is buffered as the last part, wait for all parts, complete the upload."""
        if self._buffer or self._next_part == 1:
            await self._submit(bytes(self._buffer))
            self._buffer.clear()
        await self._wait_all()
        parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
        with s3_boundary(self.bucket, self.key):
            await self._s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": parts},
            )
        self.completed = True

    async def abort(self) -> bool:
        """Cancel parts in flight and abort the upload; True when S3 confirmed (or nothing to do).

        Never raises: it runs on failure paths; a failed abort is logged and its parts are
        cleaned up later by retention (``list_multipart_uploads`` under the key)."""
        if self.completed or self.upload_id is None:
            return True
        return await asyncio.shield(self._abort())

    async def _abort(self) -> bool:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._buffer.clear()
        try:
            await self._s3.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
            )
        except S3_ERRORS as exc:
            log.warning("backup.abort_failed", key=self.key, error=str(exc)[:300])
            return False
        self.upload_id = None
        return True

    async def _submit(self, chunk: bytes) -> None:
        if self._next_part > MAX_PARTS:
            raise StorageError(f"upload of {self.key} needs more than {MAX_PARTS} parts")
        while len(self._tasks) >= self._max_in_flight:
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            self._reap(done)
        number = self._next_part
        self._next_part += 1
        task = asyncio.ensure_future(self._upload_part(number, chunk))
        self._tasks.add(task)
        self._reap({t for t in self._tasks if t.done()})

    def _reap(self, done: set[asyncio.Task[None]]) -> None:
        for task in done:
            self._tasks.discard(task)
            task.result()  # re-raises a failed part's StorageError

    async def _wait_all(self) -> None:
        while self._tasks:
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            self._reap(done)

    async def _upload_part(self, number: int, chunk: bytes) -> None:
        with s3_boundary(self.bucket, self.key):
            response: dict[str, Any] = await self._s3.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=chunk,
            )
        self._etags[number] = response["ETag"]


async def abort_uploads_under(s3: S3Like, bucket: str, key: str) -> int:
    """Abort every unfinished multipart upload of ``key`` (leftovers of a crashed backup)."""
    aborted = 0
    with s3_boundary(bucket, key):
        response = await s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
        for upload in response.get("Uploads", []):
            if upload.get("Key") != key:
                continue
            with contextlib.suppress(*S3_ERRORS):
                await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
                aborted += 1
    return aborted
