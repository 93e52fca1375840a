"""Intake against a real PostgreSQL: what is accepted, rejected, audited, replayed, retried.

The job events go to a ``FakePublisher`` and accepted jobs to a ``FakeScheduler``: these tests
are about the intake's decisions and its one transaction; the worker process tests cover the
same paths end to end.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.maintenance.intake import Inbound, Intake, fallback_job_id
from services.maintenance.jobs import JobStore
from services.maintenance.keys import KeyringSource
from shared import Target, new_keypair, sign_command, subjects

from .conftest import FakePublisher, Signer, audit_rows, db_target, job_row, jti_of


@dataclass
class FakeScheduler:
    supported: set[str] = field(default_factory=lambda: {"db.report", "db.vacuum", "job.cancel"})
    submitted: list[str] = field(default_factory=list)

    def supports(self, action: str) -> bool:
        return action in self.supported

    def submit(self, job_id: str) -> None:
        self.submitted.append(job_id)


@dataclass
class Rig:
    intake: Intake
    pool: asyncpg.Pool
    publisher: FakePublisher
    scheduler: FakeScheduler
    dsn: str

    async def send(self, action: str, body: str | bytes, seq: int) -> tuple[str, str | None, str]:
        data = body.encode() if isinstance(body, str) else body
        out = await self.intake.handle(Inbound(subjects.command(action), data, seq))
        return out.outcome, out.reason, out.job_id or ""


@pytest.fixture()
async def rig(worker_db: str, keyring_file: Path, fake_publisher: FakePublisher):
    pool = await asyncpg.create_pool(worker_db, min_size=1, max_size=4)
    store = JobStore(pool, fake_publisher, worker="w-1")
    scheduler = FakeScheduler()
    intake = Intake(pool, store, scheduler, KeyringSource(keyring_file), audience="opsplane",
                    guards={}, worker="w-1")
    yield Rig(intake, pool, fake_publisher, scheduler, worker_db)
    await pool.close()


async def test_a_valid_command_is_recorded_queued_audited_and_handed_to_the_runner(
    rig: Rig, signer: Signer
) -> None:
    token = signer.sign("db.report")
    jti = jti_of(token)
    outcome, reason, job_id = await rig.send("db.report", token, seq=1)
    assert (outcome, reason, job_id) == ("accepted", None, jti)
    row = await job_row(rig.dsn, jti)
    assert row is not None and row["state"] == "queued" and row["action"] == "db.report"
    assert row["kid"] == signer.kid and row["issuer"] == signer.issuer and row["stream_seq"] == 1
    [audit] = await audit_rows(rig.dsn, jti=jti)
    assert audit["outcome"] == "accepted" and audit["token_sha256"] == hashlib.sha256(
        token.encode()).hexdigest()
    assert token not in str(audit), "the token itself is never stored"
    assert rig.scheduler.submitted == [jti]
    assert rig.publisher.states(jti) == ["queued"]
    assert rig.publisher.events[0][0] == f"ops.jobs.{jti}"
    assert rig.publisher.events[0][2] == f"{jti}:queued"


async def _rejected(rig: Rig, action: str, token: str | bytes, reason: str, seq: int) -> str:
    outcome, got, job_id = await rig.send(action, token, seq)
    assert (outcome, got) == ("rejected", reason)
    [event] = rig.publisher.of(job_id)
    assert event.state == "rejected" and event.result == {"reason": reason}
    assert event.error is not None and event.error.startswith(f"{reason}: ")
    row = await job_row(rig.dsn, job_id)
    assert row is not None and row["state"] == "rejected" and row["finished_at"] is not None
    audits = await audit_rows(rig.dsn, job_id=job_id)
    assert [a["outcome"] for a in audits] == ["rejected"] and audits[0]["reason"] == reason
    assert job_id not in rig.scheduler.submitted
    return job_id


async def test_a_bad_signature_is_rejected_under_its_jti_and_never_run(
    rig: Rig, signer: Signer
) -> None:
    other_private, _ = new_keypair()  # same kid, wrong key
    token = sign_command("db.report", {}, private_key_pem=other_private, kid=signer.kid,
                         issuer="mallory")
    job_id = await _rejected(rig, "db.report", token, "bad_signature", seq=2)
    assert job_id == jti_of(token), "the signer following its jti sees the rejection"


async def test_unknown_kid_expired_and_wrong_audience_are_rejected(
    rig: Rig, signer: Signer
) -> None:
    stranger = Signer(signer.private_pem, signer.public_pem, kid="nobody")
    await _rejected(rig, "db.report", stranger.sign("db.report"), "unknown_kid", seq=3)
    old = datetime.now(UTC) - timedelta(hours=1)
    await _rejected(rig, "db.report", signer.sign("db.report", now=old), "expired", seq=4)
    await _rejected(rig, "db.report", signer.sign("db.report", audience="staging"),
                    "wrong_audience", seq=5)
    await _rejected(rig, "db.vacuum", signer.sign("db.report"), "subject_mismatch", seq=6)


async def test_garbage_is_rejected_malformed_under_a_stable_id(rig: Rig) -> None:
    body = b"\xff\xfenot a token"
    job_id = await _rejected(rig, "db.report", body, "malformed", seq=7)
    assert job_id == fallback_job_id(hashlib.sha256(body).hexdigest())
    # The same garbage again: the same id, audited again, no crash.
    outcome, reason, again = await rig.send("db.report", body, seq=8)
    assert (outcome, reason, again) == ("rejected", "malformed", job_id)
    assert len(await audit_rows(rig.dsn, job_id=job_id)) == 2


async def test_a_replay_is_rejected_without_touching_the_original_job(
    rig: Rig, signer: Signer
) -> None:
    token = signer.sign("db.report")
    jti = jti_of(token)
    assert (await rig.send("db.report", token, seq=10))[0] == "accepted"
    outcome, reason, replay_id = await rig.send("db.report", token, seq=11)
    assert (outcome, reason) == ("rejected", "replayed")
    assert replay_id == fallback_job_id(hashlib.sha256(token.encode()).hexdigest())
    assert rig.publisher.states(jti) == ["queued"], "nothing misleading on the original job"
    assert rig.publisher.states(replay_id) == ["rejected"]
    original = await job_row(rig.dsn, jti)
    assert original is not None and original["state"] == "queued"
    assert rig.scheduler.submitted == [jti]
    audits = await audit_rows(rig.dsn, jti=jti)
    assert [(a["outcome"], a["reason"]) for a in audits] == [
        ("accepted", None), ("rejected", "replayed")]


async def test_a_redelivery_is_a_duplicate_not_a_replay(rig: Rig, signer: Signer) -> None:
    token = signer.sign("db.report")
    jti = jti_of(token)
    assert (await rig.send("db.report", token, seq=20))[0] == "accepted"
    # The same stream message again (ack lost, worker crashed before acking): still queued, so
    # it is handed to the runner again (its claim makes it run once) and re-announced with the
    # same Nats-Msg-Id (the server drops the copy).
    outcome, reason, job_id = await rig.send("db.report", token, seq=20)
    assert (outcome, reason, job_id) == ("duplicate", None, jti)
    assert rig.scheduler.submitted == [jti, jti]
    assert [m for _, _, m in rig.publisher.events] == [f"{jti}:queued", f"{jti}:queued"]
    # Once the job has run, a redelivery publishes nothing and hands over nothing.
    conn = await asyncpg.connect(rig.dsn)
    await conn.execute("UPDATE ops.jobs SET state = 'succeeded' WHERE job_id = $1", jti)
    await conn.close()
    assert (await rig.send("db.report", token, seq=20))[0] == "duplicate"
    assert rig.scheduler.submitted == [jti, jti] and len(rig.publisher.events) == 2
    assert [a["outcome"] for a in await audit_rows(rig.dsn, jti=jti)] == [
        "accepted", "duplicate", "duplicate"]


async def test_a_forged_token_cannot_take_over_or_shadow_a_real_job(
    rig: Rig, signer: Signer
) -> None:
    token = signer.sign("db.report")
    jti = jti_of(token)
    await rig.send("db.report", token, seq=30)
    other_private, _ = new_keypair()
    forged = sign_command("db.report", {}, private_key_pem=other_private, kid=signer.kid,
                          issuer="mallory", jti=jti)
    outcome, reason, job_id = await rig.send("db.report", forged, seq=31)
    assert (outcome, reason) == ("rejected", "bad_signature")
    assert job_id != jti and job_id.startswith("t-")
    assert rig.publisher.states(jti) == ["queued"]


async def test_a_real_command_takes_over_a_jti_a_forgery_used_first(
    rig: Rig, signer: Signer
) -> None:
    jti = str(uuid.uuid4())
    other_private, _ = new_keypair()
    forged = sign_command("db.report", {}, private_key_pem=other_private, kid=signer.kid,
                          issuer="mallory", jti=jti)
    assert (await rig.send("db.report", forged, seq=40))[2] == jti
    outcome, _, job_id = await rig.send("db.report", signer.sign("db.report", jti=jti), seq=41)
    assert (outcome, job_id) == ("accepted", jti)
    row = await job_row(rig.dsn, jti)
    assert row is not None and row["state"] == "queued" and row["issuer"] == signer.issuer


async def test_destructive_commands_need_this_database_as_target_and_their_guard(
    rig: Rig, signer: Signer
) -> None:
    here = await db_target(rig.dsn)
    params = {"scope": "all", "confirm": "CONFIRM"}
    elsewhere = Target(system_identifier="1", database=here.database)
    await _rejected(rig, "purge.app_data", signer.sign("purge.app_data", params,
                                                       target=elsewhere), "wrong_target", 50)
    other_db = Target(system_identifier=here.system_identifier, database="production")
    job_id = await _rejected(rig, "purge.app_data", signer.sign("purge.app_data", params,
                                                                target=other_db),
                             "wrong_target", 51)
    row = await job_row(rig.dsn, job_id)
    assert row is not None and "production" in row["message"]
    await _rejected(rig, "purge.app_data", signer.sign("purge.app_data", params, target=here),
                    "guard_disabled", 52)
    # Guard on, but no purge handler in this worker yet.
    rig.intake.guards["purge_app_data_allowed"] = True
    await _rejected(rig, "purge.app_data", signer.sign("purge.app_data", params, target=here),
                    "not_supported", 53)


async def test_a_rejected_verified_command_consumes_its_jti(rig: Rig, signer: Signer) -> None:
    here = await db_target(rig.dsn)
    token = signer.sign("backup.restore", {"key": "a/b.dump", "database": "x", "confirm": "x"},
                        target=here)
    await _rejected(rig, "backup.restore", token, "guard_disabled", 60)
    rig.intake.guards["backup_restore_allowed"] = True
    outcome, reason, _ = await rig.send("backup.restore", token, seq=61)
    assert (outcome, reason) == ("rejected", "replayed"), "enabling the guard later is no replay"


async def test_without_a_keyring_every_command_is_rejected_with_the_reason(
    rig: Rig, signer: Signer, tmp_path: Path
) -> None:
    rig.intake.keys = KeyringSource(None)
    job_id = await _rejected(rig, "db.report", signer.sign("db.report"),
                             "keyring_unavailable", 70)
    row = await job_row(rig.dsn, job_id)
    assert row is not None and "OPS_KEYRING is not set" in row["message"]
    broken = tmp_path / "broken.toml"
    broken.write_text("[keys.x]\npublic_key = 'nope'\n")
    rig.intake.keys = KeyringSource(broken)
    await _rejected(rig, "db.report", signer.sign("db.report"), "keyring_unavailable", 71)


async def test_a_keyring_file_replaced_on_disk_is_used_without_a_restart(
    rig: Rig, signer: Signer, keyring_file: Path
) -> None:
    newcomer = Signer(*new_keypair(), kid="ops-new")
    await _rejected(rig, "db.report", newcomer.sign("db.report"), "unknown_kid", 80)
    keyring_file.write_text(signer.keyring_toml() + newcomer.keyring_toml(["db.*"]))
    assert (await rig.send("db.report", newcomer.sign("db.report"), seq=81))[0] == "accepted"


async def test_a_database_outage_asks_for_a_retry_and_records_nothing(
    rig: Rig, signer: Signer
) -> None:
    token = signer.sign("db.report")
    await rig.pool.close()
    outcome = await rig.intake.handle(Inbound("ops.cmd.db.report", token.encode(), 90))
    assert outcome.retry and outcome.reason
    assert rig.publisher.events == [] and rig.scheduler.submitted == []
    assert await job_row(rig.dsn, jti_of(token)) is None
    # Back: the redelivered message is accepted, not taken for a replay.
    rig.intake.pool = rig.intake.store.pool = rig.pool = await asyncpg.create_pool(rig.dsn)
    assert (await rig.send("db.report", token, seq=90))[0] == "accepted"


async def test_the_replay_store_keeps_rows_until_expiry_then_purges_them(
    rig: Rig, signer: Signer
) -> None:
    token = signer.sign("db.report", lifetime_s=60)
    await rig.send("db.report", token, seq=95)
    conn = await asyncpg.connect(rig.dsn)
    try:
        expires = await conn.fetchval(
            "SELECT expires_at FROM ops.command_replay WHERE jti = $1", jti_of(token))
        assert expires > datetime.now(UTC) + timedelta(seconds=60)
        assert await rig.intake.purge_replay_store() == 0
        await conn.execute("UPDATE ops.command_replay SET expires_at = now() - interval '1 s'")
        assert await rig.intake.purge_replay_store() == 1
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM ops.command_audit")
    finally:
        await conn.close()
