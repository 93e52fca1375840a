"""The app-side BatchPublisher against a real nats-server: batches, bounds, never blocks."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest

from shared import BatchPublisher, request_record, subjects
from tests.harness import Servers


async def test_records_arrive_in_batches_on_the_ingest_subject(servers: Servers) -> None:
    sub_client = await nats.connect(servers.nats.url)
    pub_client = await nats.connect(servers.nats.url)
    received: list[list[dict[str, object]]] = []
    done = asyncio.Event()

    async def on_batch(msg: nats.aio.msg.Msg) -> None:
        received.append(json.loads(msg.data))
        if sum(len(b) for b in received) >= 450:
            done.set()

    try:
        await sub_client.subscribe(subjects.INGEST_REQUESTS, cb=on_batch)
        await sub_client.flush()
        publisher = BatchPublisher(pub_client, batch_size=200, flush_interval_s=0.05)
        await publisher.start()
        for i in range(450):
            publisher.add(request_record(method="GET", route="/x", status=200, duration_ms=i,
                                         tenant_id="acme"))
        await asyncio.wait_for(done.wait(), timeout=10)
        await publisher.stop()
        assert [len(b) for b in received][:2] == [200, 200]
        assert sum(len(b) for b in received) == 450 and publisher.dropped == 0
        assert received[0][0]["tenant_id"] == "acme" and received[0][0]["route"] == "/x"
    finally:  # a failure must not leak two connections into later tests' warnings
        await sub_client.close()
        await pub_client.close()


async def test_broker_down_drops_oldest_and_never_blocks(private_servers: Servers) -> None:
    client = await nats.connect(
        private_servers.nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    publisher = BatchPublisher(client, batch_size=100, flush_interval_s=0.02, max_buffer=1000)
    await publisher.start()
    private_servers.nats.stop()
    while client.is_connected:
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    for i in range(5000):
        publisher.add(request_record(method="GET", route="/x", status=200, duration_ms=i))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"adding 5000 records took {elapsed:.3f}s while the broker was down"
    assert publisher.pending == 1000
    assert publisher.dropped == 4000
    # The newest records are the ones kept.
    private_servers.nats.start()
    collector = await nats.connect(private_servers.nats.url)
    got: list[float] = []
    all_in = asyncio.Event()

    async def on_batch(msg: nats.aio.msg.Msg) -> None:
        got.extend(r["duration_ms"] for r in json.loads(msg.data))
        if len(got) >= 1000:
            all_in.set()

    await collector.subscribe(subjects.INGEST_REQUESTS, cb=on_batch)
    await collector.flush()
    await asyncio.wait_for(all_in.wait(), timeout=15)
    assert min(got) == 4000 and max(got) == 4999
    await publisher.stop()
    await client.close()
    await collector.close()


@pytest.mark.parametrize("bad_client_error", [RuntimeError("boom")])
async def test_a_failing_publish_keeps_the_batch(bad_client_error: Exception) -> None:
    class Flaky:
        is_connected = True
        calls = 0

        async def publish(self, subject: str, payload: bytes = b"", **kwargs: object) -> None:
            self.calls += 1
            if self.calls == 1:
                raise bad_client_error

    flaky = Flaky()
    publisher = BatchPublisher(flaky, batch_size=10)
    for i in range(10):
        publisher.add(request_record(method="GET", route="/x", status=200, duration_ms=i))
    await publisher.flush()
    assert publisher.pending == 10 and publisher.dropped == 0
    await publisher.flush()
    assert publisher.pending == 0 and publisher.published == 10
