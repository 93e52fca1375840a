"""The NATS probe against real nats-servers: up, streams missing, down, hung (SIGSTOP)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from opsctl._embedded import NatsServer
from services.health.probe import ProbeConfig, run_once
from services.health.probes.nats import NatsProbe
from shared import Status, ensure_jetstream

FAST = ProbeConfig(interval_s=1, timeout_s=1)


@pytest.fixture()
def lone_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test's own, with JetStream but none of opsplane's streams."""
    server = NatsServer(workdir=tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture()
async def lone_client(lone_nats: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(lone_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    yield client
    await client.close()


async def test_up_reports_rtt_and_jetstream(nats_url: str) -> None:
    client = await nats.connect(nats_url)
    await ensure_jetstream(client.jetstream())
    event = await run_once(NatsProbe(lambda: client, FAST), "t")
    await client.close()
    assert event.status is Status.PASS, event.output
    assert "round trip" in event.output and "stream(s)" in event.output
    assert event.observed_unit == "ms"


async def test_streams_not_declared_is_a_misconfiguration(lone_client: Client) -> None:
    event = await run_once(NatsProbe(lambda: lone_client, FAST), "t")
    assert event.status is Status.FAIL
    assert "missing stream(s): OPS_EVENTS, OPS_COMMANDS, OPS_DLQ" in event.output
    await ensure_jetstream(lone_client.jetstream())
    assert (await run_once(NatsProbe(lambda: lone_client, FAST), "t")).status is Status.PASS


async def test_a_stream_near_its_byte_limit_warns(lone_client: Client) -> None:
    js = lone_client.jetstream()
    await ensure_jetstream(js)
    await js.publish("ops.dlq.test", b"x" * 1024, stream="OPS_DLQ")
    config = FAST.model_copy(update={"warn_at": 1e-6})  # 1 KiB of 1 GiB is "near" for this test
    event = await run_once(NatsProbe(lambda: lone_client, config), "t")
    assert event.status is Status.WARN, event.output
    assert "OPS_DLQ 0% of max_bytes" in event.output
    failing = FAST.model_copy(update={"fail_at": 1e-6})
    assert (await run_once(NatsProbe(lambda: lone_client, failing), "t")).status is Status.FAIL


async def test_down_fails(lone_nats: NatsServer, lone_client: Client) -> None:
    lone_nats.stop()
    event = await run_once(NatsProbe(lambda: lone_client, FAST), "t")
    assert event.status is Status.FAIL


async def test_a_hung_server_times_out(lone_nats: NatsServer, lone_client: Client) -> None:
    await ensure_jetstream(lone_client.jetstream())
    assert lone_nats.proc is not None
    os.killpg(lone_nats.proc.pid, signal.SIGSTOP)
    try:
        event = await run_once(NatsProbe(lambda: lone_client, ProbeConfig(timeout_s=0.5)), "t")
    finally:
        os.killpg(lone_nats.proc.pid, signal.SIGCONT)
    assert event.status is Status.FAIL
    assert event.latency_ms is not None and event.latency_ms < 1500
