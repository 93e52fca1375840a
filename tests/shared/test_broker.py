"""Broker plumbing against a real nats-server: connect retries, round trips, context headers."""

from __future__ import annotations

import asyncio

import nats
import pytest
import structlog
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage

from opsctl._procs import free_port
from shared import BrokerError, Settings, connect_with_retry, make_broker, round_trip
from shared._logging import REQUEST_ID_HEADER, TENANT_ID_HEADER
from tests.harness import Servers


async def test_a_bounded_connect_gives_up_with_a_clear_error() -> None:
    settings = Settings(
        NATS_URL=f"nats://127.0.0.1:{free_port()}",
        OPS_NATS_MAX_RECONNECT=1,
        OPS_NATS_RECONNECT_WAIT=0.01,
    )
    broker = make_broker(settings, service="t")
    with pytest.raises(BrokerError, match="cannot connect to NATS"):
        await connect_with_retry(broker)


async def test_round_trip_is_none_without_a_server(private_servers: Servers) -> None:
    client = await nats.connect(private_servers.nats.url, max_reconnect_attempts=-1)
    assert (await round_trip(client)) is not None
    private_servers.nats.stop()
    assert await round_trip(client, timeout_s=0.5) is None
    await client.close()


async def test_request_and_tenant_context_follow_a_message(servers: Servers) -> None:
    """A handler's outgoing messages carry the incoming message's request/tenant ids."""
    settings = Settings(NATS_URL=servers.nats.url)
    broker: NatsBroker = make_broker(settings, service="ctx")
    seen: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    @broker.subscriber("test.ctx.in")
    async def relay(msg: NatsMessage) -> None:
        assert structlog.contextvars.get_contextvars()["tenant_id"] == "acme"
        await broker.publish(b"next", "test.ctx.out")

    @broker.subscriber("test.ctx.out")
    async def sink(msg: NatsMessage) -> None:
        if not seen.done():
            seen.set_result(dict(msg.headers))

    await broker.start()
    try:
        await broker.publish(
            b"go", "test.ctx.in", headers={REQUEST_ID_HEADER: "req-42", TENANT_ID_HEADER: "acme"}
        )
        headers = await asyncio.wait_for(seen, timeout=5)
    finally:
        await broker.stop()
    assert headers[REQUEST_ID_HEADER] == "req-42"
    assert headers[TENANT_ID_HEADER] == "acme"
