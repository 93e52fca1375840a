"""``opsctl keys new`` and ``opsctl cmd`` as real commands against a real nats-server.

Each test gets a nats-server of its own: ``OPS_COMMANDS`` is a work-queue stream, which allows
one consumer per subject, and the session server may carry the maintenance worker's durable
consumer; a private server also lets a test assert the stream stayed empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
import subprocess
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
from nats.js import JetStreamContext

from opsctl._embedded import NatsServer
from opsctl._procs import free_port
from shared import (
    COMMANDS_STREAM,
    CommandRejected,
    JobEvent,
    Keyring,
    Progress,
    ensure_jetstream,
    new_keypair,
    subjects,
    verify_command,
)
from tests.opsctl.conftest import opsctl

# ---- opsctl keys new -------------------------------------------------------------------------


def test_keys_new_writes_a_private_key_0600_and_prints_the_keyring_entry(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    result = opsctl("keys", "new", "ops-alice", "--dir", str(keys), "--actions", "backup.*",
                    "--actions", "db.report")  # fmt: skip
    assert result.returncode == 0, result.stderr
    private, public = keys / "ops-alice.pem", keys / "ops-alice.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    block = result.stdout[result.stdout.index("[keys.ops-alice]") :]
    ring = Keyring.from_mapping(tomllib.loads(block))
    alice = ring.get("ops-alice")
    assert alice is not None
    assert alice.allows("backup.create") and alice.allows("db.report")
    assert not alice.allows("purge.app_data")


def test_keys_new_refuses_to_overwrite(tmp_path: Path) -> None:
    assert opsctl("keys", "new", "k1", "--dir", str(tmp_path)).returncode == 0
    before = (tmp_path / "k1.pem").read_bytes()
    again = opsctl("keys", "new", "k1", "--dir", str(tmp_path))
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stdout
    assert (tmp_path / "k1.pem").read_bytes() == before


def test_keys_new_refuses_bad_patterns_and_kids(tmp_path: Path) -> None:
    bad_pattern = opsctl("keys", "new", "k2", "--dir", str(tmp_path), "--actions", "backups.*")
    assert bad_pattern.returncode == 2
    assert "matches no action" in bad_pattern.stdout
    bad_kid = opsctl("keys", "new", "bad kid", "--dir", str(tmp_path))
    assert bad_kid.returncode == 2
    assert not list(tmp_path.iterdir())  # nothing written for either


# ---- opsctl cmd against a fake worker --------------------------------------------------------


@pytest.fixture()
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(workdir=tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture()
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    context = nc.jetstream()
    await ensure_jetstream(context)
    # A work queue takes one consumer per subject: drop a maintenance worker's durable, declared
    # when its module registered it in this session, so the fake worker below can pull.
    for consumer in await context.consumers_info(COMMANDS_STREAM):
        await context.delete_consumer(COMMANDS_STREAM, consumer.name)
    yield context
    await nc.close()


@pytest.fixture()
def signing_key(tmp_path: Path) -> tuple[Path, Keyring]:
    private, public = new_keypair()
    path = tmp_path / "ops-test.pem"
    path.write_bytes(private)
    ring = Keyring.from_mapping(
        {"keys": {"ops-test": {"public_key": public.decode(), "actions": ["*"]}}}
    )
    return path, ring


async def publish(js: JetStreamContext, event: JobEvent) -> None:
    await js.publish(subjects.job(event.job_id), event.to_bytes())


async def fake_worker(js: JetStreamContext, keyring: Keyring, seen: list[Any]) -> None:
    """Pull commands, verify them as the real worker does, publish job events."""
    sub = await js.pull_subscribe(subjects.CMD_ALL, durable="fake-worker", stream=COMMANDS_STREAM)
    while True:
        try:
            messages = await sub.fetch(1, timeout=0.5)
        except nats.errors.TimeoutError:
            continue
        for msg in messages:
            await msg.ack()
            action = msg.subject.removeprefix("ops.cmd.")
            try:
                command = verify_command(
                    msg.data, subject_action=action, keyring=keyring, audience="opsplane"
                )
            except CommandRejected as exc:
                jti = (msg.headers or {})["Nats-Msg-Id"]  # the job id, as opsctl sends it
                await publish(
                    js,
                    JobEvent(
                        job_id=jti, action=action, state="rejected", error=f"{exc.reason}: {exc}"
                    ),
                )
                continue
            seen.append(command)
            job = command.jti
            await publish(js, JobEvent(job_id=job, action=action, state="queued"))
            for done in (0, 50, 100):
                await publish(
                    js,
                    JobEvent(
                        job_id=job,
                        action=action,
                        state="running",
                        progress=Progress(done=done, total=100, unit="rows"),
                        message=f"copied {done} rows",
                    ),
                )
            label = getattr(command.params, "label", None)
            if label == "fail":
                await publish(
                    js, JobEvent(job_id=job, action=action, state="failed", error="disk full")
                )
            else:
                result = {"rows": 100, "action": action}
                if command.target is not None:
                    result["database"] = command.target.database
                await publish(
                    js, JobEvent(job_id=job, action=action, state="succeeded", result=result)
                )


@pytest.fixture()
async def worker(
    js: JetStreamContext, signing_key: tuple[Path, Keyring]
) -> AsyncIterator[list[Any]]:
    seen: list[Any] = []
    task = asyncio.create_task(fake_worker(js, signing_key[1], seen))
    yield seen
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run_cmd(server: NatsServer, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(opsctl, "cmd", *args, NATS_URL=server.url, **env)


async def stream_messages(js: JetStreamContext) -> int:
    return int((await js.stream_info(COMMANDS_STREAM)).state.messages)


async def test_cmd_follows_a_job_to_success_and_prints_the_result(
    nats_server: NatsServer, signing_key: tuple[Path, Keyring], worker: list[Any]
) -> None:
    key, _ = signing_key
    result = await run_cmd(
        nats_server, "backfill.tenant_ids", "batch_size=250", "dry_run=true", "--key", str(key)
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"rows": 100, "action": "backfill.tenant_ids"}
    assert "running [50/100 rows]: copied 50 rows" in result.stderr
    assert "backfill.tenant_ids succeeded" in result.stderr
    (command,) = worker
    assert command.kid == "ops-test"  # from the key file's name
    assert (command.params.batch_size, command.params.dry_run) == (250, True)
    assert f"job {command.jti}" in result.stderr


async def test_params_json_merges_over_key_values(
    nats_server: NatsServer, signing_key: tuple[Path, Keyring], worker: list[Any]
) -> None:
    key, _ = signing_key
    result = await run_cmd(
        nats_server,
        "backfill.tenant_ids",
        "batch_size=5",
        "--params",
        '{"batch_size": 7}',
        "--key",
        str(key),
        "--issuer",
        "oncall@example.com",
    )
    assert result.returncode == 0, result.stderr
    (command,) = worker
    assert command.params.batch_size == 7
    assert command.issuer == "oncall@example.com"


async def test_a_failing_job_exits_1_with_its_error(
    nats_server: NatsServer, signing_key: tuple[Path, Keyring], worker: list[Any]
) -> None:
    key, _ = signing_key
    result = await run_cmd(nats_server, "backup.create", "label=fail", "--key", str(key))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "backup.create failed: disk full" in result.stderr


async def test_a_rejected_command_exits_1_with_the_reason(
    nats_server: NatsServer, worker: list[Any], tmp_path: Path
) -> None:
    stranger = tmp_path / "mallory.pem"
    stranger.write_bytes(new_keypair()[0])
    result = await run_cmd(nats_server, "db.report", "--key", str(stranger))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "db.report rejected: unknown_kid" in result.stderr
    assert worker == []


async def test_a_destructive_command_carries_the_target_read_from_the_database(
    nats_server: NatsServer,
    signing_key: tuple[Path, Keyring],
    worker: list[Any],
    database_url: str,
) -> None:
    key, _ = signing_key
    result = await run_cmd(
        nats_server,
        "purge.app_data",
        "scope=tenant",
        "tenant_id=acme",
        "confirm=acme",
        "--key",
        str(key),
        "--target-db",
        database_url,
    )
    assert result.returncode == 0, result.stderr
    (command,) = worker
    conn = await asyncpg.connect(database_url)
    try:
        sid = await conn.fetchval("SELECT system_identifier::text FROM pg_control_system()")
        name = await conn.fetchval("SELECT current_database()")
    finally:
        await conn.close()
    assert command.target.system_identifier == sid
    assert command.target.database == name


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["backfill.tenant_ids", "batch_size=0"], "batch_size:"),
        (["db.report", "verbose=true"], "verbose: unknown parameter"),
        (["purge.app_data", "scope=all", "confirm=yes"], "confirm = 'CONFIRM'"),
        (["db.drop"], "unknown action 'db.drop'"),
        (["db.report", "--params", "[1]"], "--params must be a JSON object"),
        (["db.report", "oops"], "expected key=value"),
        (["purge.app_data", "scope=all", "confirm=CONFIRM"], "--target-db"),
        (["db.report", "--key", "/nonexistent/key.pem"], "cannot read the key"),
    ],
)
async def test_bad_input_exits_2_and_publishes_nothing(
    nats_server: NatsServer,
    js: JetStreamContext,
    signing_key: tuple[Path, Keyring],
    args: list[str],
    says: str,
) -> None:
    key, _ = signing_key
    full = [*args, "--key", str(key)] if "--key" not in args else args
    result = await run_cmd(nats_server, *full)
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr
    assert "not sent" in result.stderr
    assert await stream_messages(js) == 0


async def test_an_unreachable_target_database_exits_2(
    nats_server: NatsServer, js: JetStreamContext, signing_key: tuple[Path, Keyring]
) -> None:
    key, _ = signing_key
    dsn = f"postgresql://ops:hunter2@127.0.0.1:{free_port()}/app"
    result = await run_cmd(
        nats_server, "backup.restore", "key=k.dump", "database=app", "confirm=app",
        "--key", str(key), "--target-db", dsn,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot read the target database" in result.stderr
    assert "hunter2" not in result.stderr
    assert await stream_messages(js) == 0


def test_without_a_key_it_says_where_one_comes_from(tmp_path: Path) -> None:
    result = opsctl("cmd", "db.report", "--workdir", str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no signing key" in result.stderr and "opsctl keys new" in result.stderr


def test_nats_unreachable_exits_4(signing_key: tuple[Path, Keyring]) -> None:
    key, _ = signing_key
    url = f"nats://127.0.0.1:{free_port()}"
    result = opsctl("cmd", "db.report", "--key", str(key), NATS_URL=url)
    assert result.returncode == 4, result.stdout + result.stderr
    assert f"cannot connect to NATS at {url}" in result.stderr
    assert "nothing was sent" in result.stderr


async def test_without_a_worker_timeout_exits_3_with_the_job_id(
    nats_server: NatsServer, js: JetStreamContext, signing_key: tuple[Path, Keyring]
) -> None:
    key, _ = signing_key
    result = await run_cmd(nats_server, "db.report", "--key", str(key), "--timeout", "1")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "timed out following job" in result.stderr
    assert await stream_messages(js) == 1  # it waits in the work queue for a worker


async def test_no_follow_prints_the_job_id_and_the_message_is_deduplicated_by_jti(
    nats_server: NatsServer, js: JetStreamContext, signing_key: tuple[Path, Keyring]
) -> None:
    key, ring = signing_key
    result = await run_cmd(nats_server, "db.vacuum", "--key", str(key), "--no-follow")
    assert result.returncode == 0, result.stderr
    jti = result.stdout.strip()
    message = await js.get_last_msg(COMMANDS_STREAM, "ops.cmd.db.vacuum")
    assert message.headers is not None and message.headers["Nats-Msg-Id"] == jti
    assert message.data is not None
    command = verify_command(
        message.data, subject_action="db.vacuum", keyring=ring, audience="opsplane"
    )
    assert command.jti == jti
    # A retried publish of the same command (same Nats-Msg-Id) is dropped by the stream.
    ack = await js.publish(
        "ops.cmd.db.vacuum", message.data, headers={"Nats-Msg-Id": jti}
    )
    assert ack.duplicate
    assert await stream_messages(js) == 1


async def test_the_audience_comes_from_ops_deployment(
    nats_server: NatsServer, js: JetStreamContext, signing_key: tuple[Path, Keyring]
) -> None:
    key, ring = signing_key
    result = await run_cmd(
        nats_server, "db.report", "--key", str(key), "--no-follow", OPS_DEPLOYMENT="staging"
    )
    assert result.returncode == 0, result.stderr
    message = await js.get_last_msg(COMMANDS_STREAM, "ops.cmd.db.report")
    assert message.data is not None
    with pytest.raises(CommandRejected) as info:
        verify_command(message.data, subject_action="db.report", keyring=ring, audience="opsplane")
    assert info.value.reason == "wrong_audience"
    staging = verify_command(
        message.data, subject_action="db.report", keyring=ring, audience="staging"
    )
    assert staging.action == "db.report"
