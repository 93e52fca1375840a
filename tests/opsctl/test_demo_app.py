"""The demo app as a real process against real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
import websockets
from nats.aio.msg import Msg

from opsctl._embedded import NatsServer
from opsctl._local_auth import local_keyring
from opsctl._procs import free_port
from opsctl.demo.first_backup import request_first_backup
from opsctl.demo.schema import load_demo
from shared import (
    COMMANDS_STREAM,
    Keyring,
    PoolGauge,
    RequestRecord,
    WsGauge,
    ensure_jetstream,
    subjects,
    verify_command,
)
from tests.harness import Servers, ServiceProcess

TENANTS = {"acme", "globex", "initech", "umbrella", "hooli"}


class Inbox:
    """Everything the app publishes on the ingest subjects, decoded."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.batches: list[list[dict[str, Any]]] = []
        self.ws: list[WsGauge] = []
        self.pool: list[PoolGauge] = []

    async def on_message(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        if msg.subject.startswith(subjects.INGEST_REQUESTS):  # plain or partitioned by tenant
            self.batches.append(body if isinstance(body, list) else [body])
        elif msg.subject == subjects.INGEST_WS and body["node"] == self.node:
            self.ws.append(WsGauge.model_validate(body))
        elif msg.subject == subjects.INGEST_POOL and body["node"] == self.node:
            self.pool.append(PoolGauge.model_validate(body))

    @property
    def records(self) -> list[RequestRecord]:
        return [RequestRecord.model_validate(r) for batch in self.batches for r in batch]


async def eventually(predicate: Callable[[], Any], timeout_s: float, message: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")


@pytest.fixture()
async def demo_database(fresh_database: str) -> str:
    conn = await asyncpg.connect(fresh_database)
    try:
        await load_demo(conn)
    finally:
        await conn.close()
    return fresh_database


async def test_demo_app_serves_ws_and_publishes_records_and_gauges(
    servers: Servers, demo_database: str, logdir: Path
) -> None:
    node = f"demo-{uuid.uuid4().hex[:8]}"
    inbox = Inbox(node)
    nc = await nats.connect(servers.nats.url)
    subjects_ = (
        subjects.INGEST_REQUESTS,
        f"{subjects.INGEST_REQUESTS}.>",
        subjects.INGEST_WS,
        subjects.INGEST_POOL,
    )
    for subject in subjects_:
        await nc.subscribe(subject, cb=inbox.on_message)
    env = servers.env(
        DATABASE_URL=demo_database, OPS_INSTANCE=node, DEMO_RATE="50", DEMO_TIMER_INTERVAL="0.2"
    )
    app = ServiceProcess("demo-app", env, logdir).start(wait="/readyz")
    try:
        async with websockets.connect(f"ws://127.0.0.1:{app.port}/ws", open_timeout=5) as ws:
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 3) == "pong"
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 3) == "hello"
            await ws.send(json.dumps({"type": "ping", "id": 7}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 3)) == {"type": "pong", "id": 7}
            await asyncio.wait_for(await ws.ping(), 3)  # protocol-level ping/pong
            await eventually(
                lambda: any(g.connections >= 1 for g in inbox.ws), 6, "ws gauge counting us"
            )

        # Batched records for every tenant, umbrella slow and erroring.
        await eventually(
            lambda: {r.tenant_id for r in inbox.records} >= TENANTS, 10, "records of 5 tenants"
        )
        assert any(len(batch) > 1 for batch in inbox.batches)  # batched, not one a message
        await eventually(lambda: len(inbox.records) >= 400, 15, "400 records")
        by_tenant: dict[str, list[RequestRecord]] = {}
        for record in inbox.records:
            by_tenant.setdefault(str(record.tenant_id), []).append(record)
        mean = {t: sum(r.duration_ms for r in rs) / len(rs) for t, rs in by_tenant.items()}
        assert mean["umbrella"] > 400
        assert all(mean[t] < 300 for t in TENANTS - {"umbrella"}), mean
        assert all(r.request_id for r in inbox.records)

        # The pool gauge is the real asyncpg pool: max as configured, in_use within it.
        gauge = await eventually(lambda: inbox.pool and inbox.pool[-1], 6, "pool gauge")
        assert gauge.max == 10
        assert 0 <= gauge.in_use <= 10

        # Timers are started and stopped in the app's database.
        conn = await asyncpg.connect(demo_database)
        try:
            deadline = time.monotonic() + 10
            while not await conn.fetchval(
                "SELECT count(*) FROM time_entries WHERE description = 'Demo timer'"
            ):
                assert time.monotonic() < deadline, "no timer started by the demo app"
                await asyncio.sleep(0.1)
            per_tenant = await conn.fetch(
                "SELECT tenant_id, count(*) FROM time_entries WHERE ended_at IS NULL "
                "GROUP BY tenant_id"
            )
            assert {r["tenant_id"] for r in per_tenant} == TENANTS  # never all stopped
        finally:
            await conn.close()
        assert app.get("/livez").status_code == 200
    finally:
        app.stop()
        await nc.close()


async def test_demo_app_survives_nats_and_postgres_being_down(tmp_path: Path, logdir: Path) -> None:
    nats_port, pg_port = free_port(), free_port()
    env = {
        "NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_port}/nothing",
        "DEMO_RATE": "50",
    }
    app = ServiceProcess("demo-app", env, logdir).start(wait="/livez")
    server = NatsServer(workdir=tmp_path, port=nats_port)
    try:
        assert app.get("/readyz").status_code == 503
        async with websockets.connect(f"ws://127.0.0.1:{app.port}/ws", open_timeout=5) as ws:
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 3) == "pong"
        # Records made while NATS is down are buffered (bounded), not lost.
        pending = await eventually(
            lambda: app.get("/").json()["records_pending"] >= 100, 10, "records buffered"
        )
        assert pending
        buffered = app.get("/").json()["records_pending"]
        server.start()
        inbox = Inbox("unused")
        nc = await nats.connect(server.url)
        try:
            await nc.subscribe(subjects.INGEST_REQUESTS, cb=inbox.on_message)
            await eventually(lambda: inbox.batches, 15, "records once NATS is up")
        finally:
            await nc.close()
        stats = app.get("/").json()
        assert stats["records_published"] >= buffered
        assert stats["records_dropped"] == 0
        assert app.proc is not None and app.proc.poll() is None
        assert app.get("/livez").status_code == 200
        assert "demo.db_unavailable" in app.log_tail(200)
    finally:
        app.stop()
        server.stop()


async def test_the_first_backup_request_is_a_valid_signed_command(
    tmp_path: Path,
) -> None:
    keyring_path, key_path = local_keyring(tmp_path)
    server = NatsServer(workdir=tmp_path)
    server.start()
    try:
        nc = await nats.connect(server.url)
        try:
            # No streams yet (the services have not declared them): retried, then given up.
            gave_up = await request_first_backup(nc, key_path.read_bytes(), audience="opsplane",
                                                 attempts=2, wait_s=0.01)
            assert gave_up is None
            js = nc.jetstream()
            await ensure_jetstream(js)
            job_id = await request_first_backup(nc, key_path.read_bytes(), audience="opsplane")
            assert job_id is not None
            msg = await js.get_last_msg(COMMANDS_STREAM, "ops.cmd.backup.create")
            command = verify_command(msg.data, subject_action="backup.create",
                                     keyring=Keyring.load(keyring_path), audience="opsplane")
            assert command.jti == job_id and command.params.model_dump() == {"label": "demo-start"}
        finally:
            await nc.close()
    finally:
        server.stop()
