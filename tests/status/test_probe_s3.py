"""The S3 probe against a real S3 API (moto server): up, canary, down, slow, misconfigured."""

from __future__ import annotations

import boto3
import pytest

from services.health.probe import ProbeConfig, run_once
from services.health.probes.s3 import S3Probe
from shared import Status
from tests.harness import BUCKET
from tests.status.fakes import blackhole

FAST = ProbeConfig(interval_s=1, timeout_s=2)


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


async def test_up_reports_head_bucket_latency(s3_url: str) -> None:
    event = await run_once(S3Probe(BUCKET, s3_url, config=FAST), "t")
    assert event.status is Status.PASS, event.output
    assert event.observed_unit == "ms" and f"head_bucket {BUCKET}" in event.output
    assert "canary" not in event.output


async def test_canary_writes_reads_and_removes_its_object(s3_url: str) -> None:
    config = FAST.model_copy(update={"canary": True})
    probe = S3Probe(BUCKET, s3_url, config=config, canary_key="opsplane-canary/test")
    event = await run_once(probe, "t")
    assert event.status is Status.PASS, event.output
    assert "canary put/get/delete" in event.output
    client = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="opsplane-canary/")
    assert listed.get("KeyCount", 0) == 0


async def test_missing_bucket_is_a_misconfiguration(s3_url: str) -> None:
    event = await run_once(S3Probe("no-such-bucket-here", s3_url, config=FAST), "t")
    assert event.status is Status.FAIL
    assert event.output == "bucket 'no-such-bucket-here' not found"


async def test_down_fails() -> None:
    with blackhole() as port:
        pass
    event = await run_once(S3Probe(BUCKET, f"http://127.0.0.1:{port}", config=FAST), "t")
    assert event.status is Status.FAIL
    assert "connect" in event.output.lower()
    assert "testing" not in event.output  # never the credentials


async def test_a_server_that_hangs_times_out() -> None:
    with blackhole() as port:
        config = ProbeConfig(timeout_s=0.5)
        event = await run_once(S3Probe(BUCKET, f"http://127.0.0.1:{port}", config=config), "t")
    assert event.status is Status.FAIL
    assert event.latency_ms is not None and event.latency_ms < 1500
