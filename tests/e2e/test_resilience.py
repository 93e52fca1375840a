"""Start-up order and bad input through real processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared import DLQ_STREAM, HealthEvent, subjects
from tests.harness import Servers, ServiceProcess, services, wait_until


def test_a_service_started_before_nats_waits_for_it(private_servers: Servers, logdir: Path) -> None:
    private_servers.nats.stop()
    proc = ServiceProcess("health", private_servers.env(OPS_PROBE_INTERVAL="0.5"), logdir)
    proc.start(wait=None)
    try:
        # Nothing to connect to: the process keeps waiting instead of exiting.
        wait_until(
            lambda: "nats.error" in proc.log_path.read_text(), timeout_s=15, message="a retry"
        )
        assert proc.proc is not None and proc.proc.poll() is None
        private_servers.nats.start()
        ready = proc.wait_http("/readyz", timeout_s=20)
        assert ready.json()["status"] == "ready"
    finally:
        proc.stop()


async def _dlq_letters(nats_url: str, origin: str, count: int) -> list[dict[str, object]]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            subjects.dlq(origin),
            stream=DLQ_STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        msgs = await sub.fetch(count, timeout=5)
        return [json.loads(m.data) for m in msgs]
    finally:
        await nc.close()


async def _publish(nats_url: str, items: list[tuple[str, bytes]]) -> None:
    nc = await nats.connect(nats_url)
    for subject, body in items:
        await nc.publish(subject, body)
    await nc.flush()
    await nc.close()


def test_bad_messages_go_to_the_dlq_and_the_consumer_keeps_going(
    private_servers: Servers, logdir: Path
) -> None:
    env = private_servers.env(OPS_HEARTBEAT_INTERVAL="0.5")
    with services(["aggregator", "gateway"], env, logdir) as procs:
        gateway = procs["gateway"]
        wait_until(lambda: gateway.get("/readyz").status_code == 200, timeout_s=20, message="ready")
        good = HealthEvent(
            check="canary",
            component="canary",
            status="pass",
            instance="t-1",
            observed_value=1.0,
            observed_unit="ms",
        )
        asyncio.run(
            _publish(
                private_servers.nats.url,
                [
                    ("ops.health.canary", b"{not json"),
                    ("ops.health.canary", b'{"check": "canary"}'),
                    ("ops.heartbeat.x.y", b"\xff\xfe"),
                    ("ops.health.canary", good.to_bytes()),
                ],
            )
        )
        wait_until(
            lambda: "canary:responseTime" in gateway.get("/api/health").json()["checks"],
            timeout_s=10,
            message="the good event after the bad ones",
        )
        letters = asyncio.run(_dlq_letters(private_servers.nats.url, "health", 2))
        reasons = " | ".join(str(letter["reason"]) for letter in letters)
        assert "Invalid JSON" in reasons and "component" in reasons
        assert letters[0]["body"] == "{not json" and letters[0]["subject"] == "ops.health.canary"
        heartbeat = asyncio.run(_dlq_letters(private_servers.nats.url, "heartbeat", 1))
        assert heartbeat[0]["origin"] == "heartbeat"
        metrics = procs["aggregator"].get("/metrics").text
        assert 'opsplane_dlq_messages_total{origin="health"} 2.0' in metrics
        assert procs["aggregator"].proc is not None and procs["aggregator"].proc.poll() is None
