"""Stream/bucket declarations against a real nats-server: idempotent, concurrent, drift-checked."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import RetentionPolicy

from shared import (
    COMMANDS_STREAM,
    EVENTS_STREAM,
    STATUS_BUCKET,
    DriftError,
    check_drift,
    ensure_jetstream,
)
from tests.harness import Servers


@pytest.fixture()
async def nc(private_servers: Servers) -> AsyncIterator[Client]:
    client = await nats.connect(private_servers.nats.url)
    yield client
    await client.close()


async def test_declaring_twice_and_concurrently_is_idempotent(nc: Client) -> None:
    js = nc.jetstream()
    results = await asyncio.gather(*(ensure_jetstream(js) for _ in range(5)))
    assert any(results), "the first declaration creates the resources"
    assert await ensure_jetstream(js) == []
    commands = await js.stream_info(COMMANDS_STREAM)
    assert commands.config.retention == RetentionPolicy.WORK_QUEUE
    assert (await js.key_value(STATUS_BUCKET)) is not None


async def test_mutable_drift_is_repaired_and_reported(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_jetstream(js)
    info = await js.stream_info(EVENTS_STREAM)
    await js.update_stream(dataclasses.replace(info.config, max_age=3600.0))
    report = await check_drift(js)
    assert "max_age" in report[EVENTS_STREAM]
    changes = await ensure_jetstream(js)
    assert any("updated stream OPS_EVENTS" in c for c in changes)
    assert (await js.stream_info(EVENTS_STREAM)).config.max_age == pytest.approx(30 * 86400)
    assert await check_drift(js) == {}


async def test_immutable_drift_refuses_to_start(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_jetstream(js)
    await js.delete_stream(COMMANDS_STREAM)
    await js.add_stream(
        name=COMMANDS_STREAM, subjects=["ops.cmd.>"], retention=RetentionPolicy.LIMITS
    )
    with pytest.raises(DriftError, match="retention"):
        await ensure_jetstream(js)
