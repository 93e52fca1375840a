"""S3: ``head_bucket`` latency, and optionally a put/get/delete canary object.

``head_bucket`` proves the endpoint answers, the credentials work and the bucket exists; the
canary (``canary = true``) proves we can actually write and read back, which a bucket policy or a
full disk can break while ``head_bucket`` still passes. Retries are off: the probe's own interval
is the retry, and a retried request would hide latency.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from shared import Status

from ..probe import ProbeConfig, ProbeResult, by_latency

_MISSING = {"404", "NoSuchBucket", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}


def explain(exc: Exception, bucket: str) -> str:
    """What went wrong, for an operator, without credentials or request ids."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _MISSING:
            return f"bucket {bucket!r} not found"
        if code in _DENIED:
            return f"access to bucket {bucket!r} denied (HTTP {status or code})"
        return f"S3 error {code or 'unknown'} (HTTP {status})"
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials configured"
    if isinstance(exc, BotoCoreError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class S3Probe:
    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    config: ProbeConfig = field(default_factory=ProbeConfig)
    canary_key: str = "opsplane-canary/health"
    check: str = "s3"
    component: str = "s3"
    measurement: str = "responseTime"
    component_type: str = "datastore"
    _session: Any = field(default=None, init=False, repr=False)

    def _client(self) -> Any:
        if self._session is None:
            self._session = aioboto3.Session()
        timeout = self.config.timeout_s
        return self._session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=AioConfig(
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": 1, "mode": "standard"},
            ),
        )

    async def run(self) -> ProbeResult:
        try:
            async with self._client() as s3:
                started = time.perf_counter()
                await s3.head_bucket(Bucket=self.bucket)
                head_ms = (time.perf_counter() - started) * 1000
                result = by_latency(head_ms, self.config, f"head_bucket {self.bucket}")
                if not self.config.canary:
                    return result
                canary_ms = await self._canary(s3)
        except (ClientError, BotoCoreError) as exc:
            return ProbeResult(status=Status.FAIL, output=explain(exc, self.bucket))
        note = f"; canary put/get/delete in {canary_ms:.1f} ms"
        return result.model_copy(update={"output": result.output + note})

    async def _canary(self, s3: Any) -> float:
        payload = os.urandom(16).hex().encode()
        started = time.perf_counter()
        await s3.put_object(Bucket=self.bucket, Key=self.canary_key, Body=payload)
        response = await s3.get_object(Bucket=self.bucket, Key=self.canary_key)
        async with response["Body"] as body:
            read = await body.read()
        await s3.delete_object(Bucket=self.bucket, Key=self.canary_key)
        if read != payload:
            raise ValueError("canary object read back differs from what was written")
        return (time.perf_counter() - started) * 1000
