"""Fixtures of the maintenance worker tests: a database of each test's own (migrated), a
signing key with its keyring file, and helpers to publish commands and follow jobs."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared import (
    EVENTS_STREAM,
    JobEvent,
    Target,
    keyring_entry_toml,
    migrate,
    new_keypair,
    sign_command,
    subjects,
)
from tests.harness import Servers

TERMINAL = {"succeeded", "failed", "rejected", "cancelled"}


async def create_database(server_url: str) -> str:
    name = f"mnt_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


async def drop_database(server_url: str, dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture()
async def worker_db(servers: Servers) -> AsyncIterator[str]:
    """A migrated database of this test's own."""
    dsn = await create_database(servers.database_url)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield dsn
    await drop_database(servers.database_url, dsn)


@dataclass
class Signer:
    private_pem: bytes
    public_pem: bytes
    kid: str = "ops-test"
    issuer: str = "tester"
    audience: str = "opsplane"

    def sign(self, action: str, params: dict[str, Any] | None = None, **kwargs: Any) -> str:
        kwargs.setdefault("audience", self.audience)
        return sign_command(action, params or {}, private_key_pem=self.private_pem, kid=self.kid,
                            issuer=self.issuer, **kwargs)

    def keyring_toml(self, actions: list[str] | None = None) -> str:
        return keyring_entry_toml(self.kid, self.public_pem, actions or ["*"])


@pytest.fixture(scope="session")
def signer() -> Signer:
    private_pem, public_pem = new_keypair()
    return Signer(private_pem, public_pem)


@pytest.fixture()
def keyring_file(tmp_path: Path, signer: Signer) -> Path:
    path = tmp_path / "keyring.toml"
    path.write_text(signer.keyring_toml())
    return path


async def db_target(dsn: str) -> Target:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT system_identifier::text FROM pg_control_system()) AS s, "
            "current_database() AS d"
        )
    finally:
        await conn.close()
    assert row is not None
    return Target(system_identifier=row["s"], database=row["d"])


def jti_of(token: str) -> str:
    import base64

    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["jti"])


async def publish_command(nats_url: str, action: str, body: bytes | str,
                          msg_id: str | None = None) -> int:
    """Publish on ``ops.cmd.<action>`` through JetStream; returns the stream sequence."""
    nc = await nats.connect(nats_url)
    try:
        data = body.encode() if isinstance(body, str) else body
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        ack = await nc.jetstream().publish(subjects.command(action), data, headers=headers,
                                           timeout=5)
        return int(ack.seq)
    finally:
        await nc.close()


async def job_events(nats_url: str, job_id: str, *, wait_for: set[str] | None = None,
                     timeout_s: float = 30.0) -> list[JobEvent]:
    """Every event published for ``job_id`` so far; with ``wait_for``, until one of those
    states has been seen (or the timeout: then what there is)."""
    nc = await nats.connect(nats_url)
    events: list[JobEvent] = []
    try:
        js = nc.jetstream()
        sub = await js.subscribe(
            subjects.job(job_id), stream=EVENTS_STREAM, ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=min(remaining, 1.0 if wait_for else 0.5))
            except nats.errors.TimeoutError:
                if wait_for is None:
                    break
                continue
            events.append(JobEvent.model_validate_json(msg.data))
            if wait_for is not None and events[-1].state in wait_for:
                break
        await sub.unsubscribe()
    finally:
        await nc.close()
    return events


async def job_row(dsn: str, job_id: str) -> dict[str, Any] | None:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM ops.jobs WHERE job_id = $1", job_id)
    finally:
        await conn.close()
    return dict(row) if row else None


async def wait_job(dsn: str, job_id: str, states: set[str] | None = None,
                   timeout_s: float = 30.0) -> dict[str, Any]:
    states = states or TERMINAL
    deadline = asyncio.get_running_loop().time() + timeout_s
    row: dict[str, Any] | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            row = await job_row(dsn, job_id)
        except (OSError, asyncpg.PostgresError):
            row = None
        if row is not None and row["state"] in states:
            return row
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} not in {states} after {timeout_s}s: {row}")


async def audit_rows(dsn: str, **where: Any) -> list[dict[str, Any]]:
    clauses = " AND ".join(f"{k} = ${i}" for i, k in enumerate(where, 1)) or "true"
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f"SELECT * FROM ops.command_audit WHERE {clauses} ORDER BY id", *where.values()
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


@dataclass
class FakePublisher:
    """Collects job events instead of sending them (in-process tests)."""

    events: list[tuple[str, JobEvent, str]] = field(default_factory=list)
    fail: bool = False

    async def __call__(self, subject: str, body: bytes, msg_id: str) -> None:
        if self.fail:
            raise ConnectionError("broker away")
        self.events.append((subject, JobEvent.model_validate_json(body), msg_id))

    def states(self, job_id: str) -> list[str]:
        return [e.state for _, e, _ in self.events if e.job_id == job_id]

    def of(self, job_id: str) -> list[JobEvent]:
        return [e for _, e, _ in self.events if e.job_id == job_id]


@pytest.fixture()
def fake_publisher() -> FakePublisher:
    return FakePublisher()


def metric_value(text: str, name: str, **labels: str) -> float:
    """A sample's value from Prometheus text (0.0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base, _, rest = metric.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if base == name and got == want:
            return float(value)
    return 0.0


Factory = Callable[..., Any]
