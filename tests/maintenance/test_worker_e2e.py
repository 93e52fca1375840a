"""The maintenance worker as a real process against real nats-server and PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from shared import new_keypair, sign_command
from tests.harness import Servers, ServiceProcess, wait_until

from .conftest import (
    Signer,
    audit_rows,
    job_events,
    jti_of,
    metric_value,
    publish_command,
    wait_job,
)

pytestmark = pytest.mark.e2e


@pytest.fixture()
def worker_env(servers: Servers, worker_db: str, keyring_file: Path) -> dict[str, str]:
    return servers.env(DATABASE_URL=worker_db, OPS_KEYRING=str(keyring_file),
                       OPS_INSTANCE="maintenance-t", OPS_JOB_PROGRESS_INTERVAL="0.05")


@pytest.fixture()
def worker(worker_env: dict[str, str], logdir: Path) -> Iterator[ServiceProcess]:
    proc = ServiceProcess("maintenance", worker_env, logdir).start(wait="/readyz")
    yield proc
    proc.stop()


async def send(nats_url: str, action: str, token: str, msg_id: str | None = None) -> str:
    await publish_command(nats_url, action, token, msg_id or jti_of(token))
    return jti_of(token)


async def test_db_report_and_vacuum_run_and_publish_their_progress(
    worker: ServiceProcess, servers: Servers, worker_db: str, signer: Signer
) -> None:
    url = servers.nats.url
    report = await send(url, "db.report", signer.sign("db.report"))
    events = await job_events(url, report, wait_for={"succeeded", "failed"})
    states = [e.state for e in events]
    assert states[0] == "queued" and states[1] == "running" and states[-1] == "succeeded"
    assert events[-1].result is not None
    assert events[-1].result["database"]["name"] == worker_db.rsplit("/", 1)[-1]

    conn = await asyncpg.connect(worker_db)
    await conn.execute("CREATE TABLE invoices (id int); INSERT INTO invoices VALUES (1)")
    await conn.close()
    vacuum = await send(url, "db.vacuum", signer.sign("db.vacuum", {"tables": ["invoices"]}))
    events = await job_events(url, vacuum, wait_for={"succeeded", "failed"})
    assert events[-1].state == "succeeded", events[-1].error
    assert events[-1].result == {**events[-1].result, "count": 1}
    assert events[-1].result["tables"][0]["table"] == "public.invoices"

    missing = await send(url, "db.vacuum", signer.sign("db.vacuum", {"tables": ["nope"]}))
    events = await job_events(url, missing, wait_for={"succeeded", "failed"})
    assert (events[-1].state, events[-1].error) == ("failed", "no such table: nope")

    metrics = worker.get("/metrics").text
    assert metric_value(metrics, "opsplane_jobs_total", action="db.report",
                        state="succeeded") == 1
    assert metric_value(metrics, "opsplane_jobs_total", action="db.vacuum", state="failed") == 1
    assert metric_value(metrics, "opsplane_job_duration_seconds_count", action="db.vacuum") == 2
    assert worker.get("/readyz").json()["checks"]["database"] == "ok"


async def test_bad_commands_are_rejected_audited_and_never_run_and_intake_goes_on(
    worker: ServiceProcess, servers: Servers, worker_db: str, signer: Signer
) -> None:
    url = servers.nats.url
    forged = sign_command("db.report", {}, private_key_pem=new_keypair()[0], kid=signer.kid,
                          issuer="mallory")
    stranger = Signer(*new_keypair(), kid="stranger").sign("db.report")
    expired = signer.sign("db.report", now=datetime.now(UTC) - timedelta(hours=1))
    cases = {"bad_signature": forged, "unknown_kid": stranger, "expired": expired}
    for reason, token in cases.items():
        job_id = await send(url, "db.report", token)
        [event] = await job_events(url, job_id, wait_for={"rejected"})
        assert event.state == "rejected" and event.result == {"reason": reason}
        row = await wait_job(worker_db, job_id)
        assert row["state"] == "rejected" and row["started_at"] is None
        assert [a["reason"] for a in await audit_rows(worker_db, job_id=job_id)] == [reason]

    await publish_command(url, "db.report", b"\x00\xffgarbage", msg_id="garbage-1")
    good = signer.sign("db.report")
    job_id = await send(url, "db.report", good)
    assert (await wait_job(worker_db, job_id))["state"] == "succeeded"
    # The same token again under another Nats-Msg-Id (so JetStream does not drop it): replayed.
    await publish_command(url, "db.report", good, msg_id="replay-of-" + job_id)
    audits = await _wait_audit(worker_db, jti=job_id, count=2)
    assert [(a["outcome"], a["reason"]) for a in audits] == [
        ("accepted", None), ("rejected", "replayed")]
    replay_events = await job_events(url, audits[1]["job_id"], wait_for={"rejected"})
    assert replay_events[-1].result == {"reason": "replayed"}
    story = list(dict.fromkeys(e.state for e in await job_events(url, job_id)))
    assert story == ["queued", "running", "succeeded"], "the original job's story is untouched"
    [garbage] = await _wait_audit(worker_db, reason="malformed", count=1)
    assert garbage["jti"] is None and garbage["job_id"].startswith("t-")

    metrics = worker.get("/metrics").text
    for reason in ("bad_signature", "unknown_kid", "expired", "replayed", "malformed"):
        assert metric_value(metrics, "opsplane_commands_rejected_total", reason=reason) == 1
    assert metric_value(metrics, "opsplane_jobs_total", action="unknown", state="rejected") == 1
    assert worker.proc is not None and worker.proc.poll() is None


async def _wait_audit(dsn: str, count: int, **where: str) -> list[dict[str, object]]:
    for _ in range(300):
        rows = await audit_rows(dsn, **where)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"{count} audit rows for {where} not seen")


async def _hold_lock(dsn: str, table: str) -> asyncpg.Connection:
    """A session holding ACCESS EXCLUSIVE on ``table``: a VACUUM of it waits."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("BEGIN")
    await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return conn


async def test_job_cancel_stops_a_vacuum_waiting_on_a_lock(
    worker: ServiceProcess, servers: Servers, worker_db: str, signer: Signer
) -> None:
    url = servers.nats.url
    conn = await asyncpg.connect(worker_db)
    await conn.execute("CREATE TABLE t1 (id int); CREATE TABLE t2 (id int); "
                       "CREATE TABLE t3 (id int)")
    await conn.close()
    holder = await _hold_lock(worker_db, "t2")
    try:
        vacuum = await send(url, "db.vacuum",
                            signer.sign("db.vacuum", {"tables": ["t1", "t2", "t3"]}))
        await _wait_message(worker_db, vacuum, "vacuuming public.t2")
        cancel = await send(url, "job.cancel", signer.sign("job.cancel", {"job_id": vacuum}))
        row = await wait_job(worker_db, vacuum, timeout_s=20)
        assert row["state"] == "cancelled"
        events = await job_events(url, vacuum)
        assert events[-1].state == "cancelled" and events[-1].progress.done == 1
        cancel_row = await wait_job(worker_db, cancel)
        assert cancel_row["state"] == "succeeded"
    finally:
        await holder.close()


async def _wait_message(dsn: str, job_id: str, message: str) -> None:
    for _ in range(300):
        row = await wait_job(dsn, job_id, {"running", "failed", "succeeded", "cancelled"})
        if row["message"] == message:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} never said {message!r}")


async def test_a_job_left_running_by_a_killed_worker_is_failed_at_restart(
    worker_env: dict[str, str], logdir: Path, servers: Servers, worker_db: str, signer: Signer
) -> None:
    url = servers.nats.url
    conn = await asyncpg.connect(worker_db)
    await conn.execute("CREATE TABLE held (id int)")
    await conn.close()
    holder = await _hold_lock(worker_db, "held")
    proc = ServiceProcess("maintenance", worker_env, logdir).start(wait="/readyz")
    try:
        job_id = await send(url, "db.vacuum", signer.sign("db.vacuum", {"tables": ["held"]}))
        await _wait_message(worker_db, job_id, "vacuuming public.held")
        proc.stop(sig=signal.SIGKILL)
        await holder.close()
        proc = ServiceProcess("maintenance", worker_env, logdir).start(wait="/readyz")
        row = await wait_job(worker_db, job_id)
        assert (row["state"], row["error"]) == ("failed", "worker restarted while running")
        events = await job_events(url, job_id, wait_for={"failed"})
        assert events[-1].state == "failed"
    finally:
        proc.stop()
        if not holder.is_closed():
            await holder.close()


async def test_a_command_sent_while_postgres_is_down_runs_once_it_is_back(
    private_servers: Servers, logdir: Path, tmp_path: Path, signer: Signer
) -> None:
    keyring = tmp_path / "keyring.toml"
    keyring.write_text(signer.keyring_toml())
    env = private_servers.env(OPS_KEYRING=str(keyring), OPS_INSTANCE="maintenance-pg")
    proc = ServiceProcess("maintenance", env, logdir).start(wait="/readyz")
    try:
        assert private_servers.postgres is not None
        private_servers.postgres.stop()
        job_id = await send(private_servers.nats.url, "db.report", signer.sign("db.report"))
        wait_until(lambda: "command.retry" in proc.log_path.read_text(), timeout_s=20,
                   message="the worker handing the command back")
        assert proc.get("/readyz").status_code == 503
        private_servers.postgres.start()
        row = await wait_job(private_servers.database_url, job_id, timeout_s=60)
        assert row["state"] == "succeeded", row["error"]
        audits = await audit_rows(private_servers.database_url, jti=job_id)
        assert [a["outcome"] for a in audits] == ["accepted"], "recorded once, not lost"
    finally:
        proc.stop()


async def test_without_a_keyring_the_worker_runs_and_rejects_every_command(
    servers: Servers, worker_db: str, logdir: Path, signer: Signer
) -> None:
    env = servers.env(DATABASE_URL=worker_db, OPS_INSTANCE="maintenance-nokeys")
    proc = ServiceProcess("maintenance", env, logdir).start(wait="/readyz")
    try:
        assert "every command is rejected" in proc.get("/readyz").json()["checks"]["keyring"]
        job_id = await send(servers.nats.url, "db.report", signer.sign("db.report"))
        row = await wait_job(worker_db, job_id)
        assert row["state"] == "rejected" and row["error"].startswith("keyring_unavailable")
        assert proc.log_path.read_text().count("keyring.unavailable") == 1
    finally:
        proc.stop()


async def test_a_graceful_stop_fails_the_running_job_with_the_reason(
    worker_env: dict[str, str], logdir: Path, servers: Servers, worker_db: str, signer: Signer
) -> None:
    conn = await asyncpg.connect(worker_db)
    await conn.execute("CREATE TABLE busy (id int)")
    await conn.close()
    holder = await _hold_lock(worker_db, "busy")
    proc = ServiceProcess("maintenance", worker_env, logdir).start(wait="/readyz")
    try:
        job_id = await send(servers.nats.url, "db.vacuum",
                            signer.sign("db.vacuum", {"tables": ["busy"]}))
        await _wait_message(worker_db, job_id, "vacuuming public.busy")
        proc.stop()  # SIGTERM: uvicorn shuts down gracefully, then re-raises the signal
        row = await wait_job(worker_db, job_id, timeout_s=5)
        assert (row["state"], row["error"]) == ("failed", "worker shut down while running")
        events = await job_events(servers.nats.url, job_id, wait_for={"failed"})
        assert events[-1].error == "worker shut down while running"
    finally:
        proc.stop()
        await holder.close()


async def test_sigterm_after_work_stops_the_worker_promptly(
    worker_env: dict[str, str], logdir: Path, servers: Servers, signer: Signer
) -> None:
    proc = ServiceProcess("maintenance", worker_env, logdir).start(wait="/readyz")
    try:
        job_id = await send(servers.nats.url, "db.report", signer.sign("db.report"))
        events = await job_events(servers.nats.url, job_id, wait_for={"succeeded", "failed"})
        assert events[-1].state == "succeeded"
        # Not an event to await: the hang needed a pull fetch (5 s) to have expired while idle
        # (without the fix this stop is SIGKILLed after 15 s).
        await asyncio.sleep(6)
        started = time.monotonic()
        assert proc.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
        # A pull subscription left open held the connection's drain for nats-py's 30 s.
        assert time.monotonic() - started < 5.0
    finally:
        proc.stop()
