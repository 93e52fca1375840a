"""Intake of signed commands: verify, check, record in one transaction, then queue or reject.

Per message (``ops.cmd.<action>``, body = the token):

1. ``verify_command`` with the keyring and ``OPS_DEPLOYMENT`` as audience (signature, kid, aud,
   times, action, key's patterns, subject, params, target present for destructive actions).
2. The worker's own checks: a ``target`` claim must name this database (system identifier and
   name, else ``wrong_target``); the seed guards (``guard_disabled``); a handler must exist
   here (``not_supported``).
3. One transaction: the replay row (a verified jti is consumed even if the command is then
   rejected), the audit row, the job row (``queued`` or ``rejected``).
4. After the commit: the job event, then the job is handed to the runner; the caller acks.

Duplicates and replays: a conflict on the replay row whose job was recorded from the *same
stream message* (JetStream sequence) is a redelivery: audited ``duplicate``, acked, nothing
republished (a job still ``queued`` is handed to the runner again; its claim makes it run once).
Any other conflict is a replay: rejected ``replayed`` under the job id ``t-<sha256(token)[:40]>``,
never on the original job's subject. A database failure returns ``retry`` (the caller naks
with a delay): a command is never lost to an outage.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import asyncpg

from shared import (
    ACTIONS,
    CommandRejected,
    DatabaseError,
    VerifiedCommand,
    database_errors,
    get_logger,
    verify_command,
)

from . import metrics
from .jobs import JobRecord, JobStore
from .keys import KeyringSource

log = get_logger(__name__)

SUBJECT_PREFIX = "ops.cmd."
REPLAY_MARGIN = timedelta(seconds=120)  # kept past exp: covers verify's 60 s clock skew
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# The worker's own reasons, beside shared.REJECTION_REASONS.
WORKER_REASONS: dict[str, str] = {
    "keyring_unavailable": "OPS_KEYRING is unset, unreadable or invalid on the worker",
    "wrong_target": "the target claim names another database than this worker's",
    "guard_disabled": "the action's seed guard (an *_ALLOWED variable) is not true",
    "not_supported": "a valid action this worker has no handler for (yet)",
}

# action prefix -> the seed guard (Settings attribute) that must be true to run it.
GUARDS: dict[str, tuple[str, str]] = {
    "purge.": ("purge_app_data_allowed", "PURGE_APP_DATA_ALLOWED"),
    "backup.restore": ("backup_restore_allowed", "BACKUP_RESTORE_ALLOWED"),
    "backfill.": ("backfill_tenant_ids_allowed", "BACKFILL_TENANT_IDS_ALLOWED"),
}


@dataclass(frozen=True)
class Inbound:
    """One command message as it came off the stream."""

    subject: str
    data: bytes
    stream_seq: int | None = None
    num_delivered: int = 1


@dataclass(frozen=True)
class Outcome:
    outcome: str  # accepted | rejected | duplicate | retry
    job_id: str | None = None
    reason: str | None = None

    @property
    def retry(self) -> bool:
        return self.outcome == "retry"


@dataclass(frozen=True)
class DbIdentity:
    system_identifier: str
    database: str


class Scheduler(Protocol):
    def supports(self, action: str) -> bool: ...

    def submit(self, job_id: str) -> None: ...


def fallback_job_id(token_sha256: str) -> str:
    return "t-" + token_sha256[:40]


def metric_action(action: Any) -> str:
    """An action label safe for metrics (never attacker-chosen text)."""
    return action if isinstance(action, str) and action in ACTIONS else "unknown"


def peek(token: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a token, *unverified* (for the audit and the job id only)."""

    def part(segment: bytes) -> dict[str, Any]:
        try:
            value = json.loads(base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)))
        except Exception:
            return {}
        return value if isinstance(value, dict) else {}

    pieces = token.strip().split(b".")
    if len(pieces) != 3:
        return {}, {}
    return part(pieces[0]), part(pieces[1])


def _text(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


async def fetch_identity(pool: asyncpg.Pool) -> DbIdentity:
    with database_errors():
        row = await pool.fetchrow(
            "SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sysid, "
            "current_database() AS db"
        )
    assert row is not None
    return DbIdentity(row["sysid"], row["db"])


class Intake:
    def __init__(
        self,
        pool: asyncpg.Pool,
        store: JobStore,
        scheduler: Scheduler,
        keys: KeyringSource,
        *,
        audience: str,
        guards: Mapping[str, bool],
        worker: str,
        identity: DbIdentity | None = None,
        verify: Callable[..., VerifiedCommand] = verify_command,
    ) -> None:
        self.pool = pool
        self.store = store
        self.scheduler = scheduler
        self.keys = keys
        self.audience = audience
        self.guards = dict(guards)
        self.worker = worker
        self._identity = identity
        self._verify = verify

    async def identity(self) -> DbIdentity:
        if self._identity is None:
            self._identity = await fetch_identity(self.pool)
        return self._identity

    async def handle(self, msg: Inbound) -> Outcome:
        try:
            return await self._handle(msg)
        except DatabaseError as exc:
            metrics.INTAKE_RETRIES.inc()
            log.warning("command.retry", subject=msg.subject, stream_seq=msg.stream_seq,
                        error=str(exc))
            return Outcome("retry", reason=str(exc))

    async def _handle(self, msg: Inbound) -> Outcome:
        sha = hashlib.sha256(msg.data).hexdigest()
        command: VerifiedCommand | None = None
        rejection: CommandRejected | None = None
        try:
            keyring = self.keys.current()
            if keyring is None:
                raise CommandRejected("keyring_unavailable", self.keys.problem or "no keyring")
            command = self._verify(
                msg.data, subject_action=msg.subject.removeprefix(SUBJECT_PREFIX),
                keyring=keyring, audience=self.audience,
            )
            await self._check(command)
        except CommandRejected as exc:
            rejection = exc
        return await self._record(msg, sha, command, rejection)

    async def _check(self, command: VerifiedCommand) -> None:
        if command.target is not None:
            here = await self.identity()
            target = command.target
            if (target.system_identifier, target.database) != (here.system_identifier,
                                                               here.database):
                raise CommandRejected(
                    "wrong_target",
                    f"signed for database {target.database!r} on system "
                    f"{target.system_identifier}; this worker serves {here.database!r} on "
                    f"system {here.system_identifier}",
                )
        for prefix, (attribute, variable) in GUARDS.items():
            if command.action.startswith(prefix) and not self.guards.get(attribute, False):
                raise CommandRejected(
                    "guard_disabled", f"{command.action} needs {variable}=true on the worker"
                )
        if not self.scheduler.supports(command.action):
            raise CommandRejected(
                "not_supported", f"{command.action} is valid but this worker cannot run it yet"
            )

    # ---- the transaction ---------------------------------------------------------------

    async def _record(
        self,
        msg: Inbound,
        sha: str,
        command: VerifiedCommand | None,
        rejection: CommandRejected | None,
    ) -> Outcome:
        header, claims = peek(msg.data) if command is None else ({}, {})
        kid = command.kid if command else _text(header.get("kid"))
        issuer = command.issuer if command else _text(claims.get("iss"))
        action = command.action if command else _text(claims.get("act"), 64)
        jti = command.jti if command else _text(claims.get("jti"), 64)
        record: JobRecord | None = None
        duplicate: JobRecord | None = None
        with database_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                if command is not None:
                    fresh = await conn.fetchval(
                        "INSERT INTO ops.command_replay (jti, expires_at) VALUES ($1, $2) "
                        "ON CONFLICT (jti) DO NOTHING RETURNING true",
                        command.jti, command.expires_at + REPLAY_MARGIN,
                    )
                    if not fresh:
                        seen = await conn.fetchrow(
                            "SELECT job_id FROM ops.jobs WHERE job_id = $1 AND stream_seq = $2",
                            command.jti, msg.stream_seq,
                        )
                        if seen is not None and msg.stream_seq is not None:
                            await self._audit(conn, msg, sha, jti, kid, issuer, action,
                                              "duplicate", None, command.jti)
                            duplicate = await self.store.get(command.jti)
                        else:
                            rejection = CommandRejected(
                                "replayed", f"jti {command.jti} was seen before: a command runs "
                                "once; sign a new one",
                            )
                if duplicate is None:
                    if rejection is None:
                        assert command is not None
                        record = await self._insert_queued(conn, msg, command)
                        await self._audit(conn, msg, sha, jti, kid, issuer, action, "accepted",
                                          None, record.job_id)
                    else:
                        record = await self._insert_rejected(
                            conn, msg, sha, rejection, jti, kid, issuer, action
                        )
                        await self._audit(conn, msg, sha, jti, kid, issuer, action, "rejected",
                                          rejection.reason, record.job_id)

        if duplicate is not None:
            log.info("command.duplicate", job_id=duplicate.job_id, stream_seq=msg.stream_seq,
                     state=duplicate.state)
            if duplicate.state == "queued":  # recorded, but maybe never handed over: hand it
                await self.store.announce(duplicate)
                self.scheduler.submit(duplicate.job_id)
            return Outcome("duplicate", duplicate.job_id)
        assert record is not None
        if rejection is not None:
            metrics.REJECTED.labels(reason=rejection.reason).inc()
            metrics.JOBS.labels(action=metric_action(action), state="rejected").inc()
            log.warning("command.rejected", reason=rejection.reason, detail=str(rejection),
                        job_id=record.job_id, subject=msg.subject, kid=kid)
            await self.store.announce(record)
            return Outcome("rejected", record.job_id, rejection.reason)
        metrics.JOBS.labels(action=record.action, state="queued").inc()
        log.info("command.accepted", job_id=record.job_id, action=record.action, kid=kid,
                 issuer=issuer)
        await self.store.announce(record)
        self.scheduler.submit(record.job_id)
        return Outcome("accepted", record.job_id)

    async def _insert_queued(
        self, conn: asyncpg.Connection, msg: Inbound, command: VerifiedCommand
    ) -> JobRecord:
        # The replay row was fresh, so a row under this jti can only be an unverified
        # rejection (someone sent a bad token with this jti): the real command takes it over.
        row = await conn.fetchrow(
            "INSERT INTO ops.jobs (job_id, action, state, issuer, kid, params, stream_seq) "
            "VALUES ($1, $2, 'queued', $3, $4, $5::jsonb, $6) "
            "ON CONFLICT (job_id) DO UPDATE SET action = EXCLUDED.action, state = 'queued', "
            "issuer = EXCLUDED.issuer, kid = EXCLUDED.kid, params = EXCLUDED.params, "
            "stream_seq = EXCLUDED.stream_seq, message = '', result = NULL, error = NULL, "
            "progress = '{}'::jsonb, created_at = now(), finished_at = NULL, updated_at = now() "
            "WHERE ops.jobs.state = 'rejected' "
            "RETURNING job_id, action, state, params, issuer, kid, stream_seq",
            command.jti, command.action, command.issuer, command.kid,
            command.params.model_dump_json(), msg.stream_seq,
        )
        if row is None:
            raise DatabaseError(f"job {command.jti} exists in a live state without a replay row")
        return JobRecord(job_id=row["job_id"], action=row["action"], state="queued",
                         params=command.params.model_dump(mode="json"), issuer=row["issuer"],
                         kid=row["kid"], stream_seq=row["stream_seq"])

    async def _insert_rejected(
        self,
        conn: asyncpg.Connection,
        msg: Inbound,
        sha: str,
        rejection: CommandRejected,
        jti: str | None,
        kid: str | None,
        issuer: str | None,
        action: str | None,
    ) -> JobRecord:
        """The rejected job's row: under its jti when that is a UUID not taken by another job
        (a verified jti is always its own), else under ``t-<sha256>``."""
        error = f"{rejection.reason}: {rejection}"[:4000]
        result = {"reason": rejection.reason}
        candidates = [jti] if jti and _UUID.match(jti) and rejection.reason != "replayed" else []
        candidates.append(fallback_job_id(sha))
        shown_action = (action or "unknown")[:64]
        for job_id in candidates:
            inserted = await conn.fetchval(
                "INSERT INTO ops.jobs (job_id, action, state, issuer, kid, message, error, "
                "result, stream_seq, finished_at) VALUES ($1, $2, 'rejected', $3, $4, $5, $6, "
                "$7::jsonb, $8, now()) ON CONFLICT (job_id) DO NOTHING RETURNING true",
                job_id, shown_action, issuer, kid, str(rejection)[:4000], error,
                json.dumps(result), msg.stream_seq,
            )
            if inserted or job_id == candidates[-1]:
                return JobRecord(job_id=job_id, action=shown_action, state="rejected",
                                 params={}, message=str(rejection)[:4000], error=error,
                                 result=result, issuer=issuer, kid=kid)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _audit(
        self, conn: asyncpg.Connection, msg: Inbound, sha: str, jti: str | None, kid: str | None,
        issuer: str | None, action: str | None, outcome: str, reason: str | None,
        job_id: str | None,
    ) -> None:
        await conn.execute(
            "INSERT INTO ops.command_audit (subject, stream_seq, jti, kid, issuer, action, "
            "outcome, reason, job_id, token_sha256, worker) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            msg.subject[:256], msg.stream_seq, jti, kid, issuer, action, outcome, reason,
            job_id, sha, self.worker,
        )

    async def purge_replay_store(self) -> int:
        """Delete replay rows past their expiry (they can no longer verify anyway)."""
        with database_errors():
            status = await self.pool.execute(
                "DELETE FROM ops.command_replay WHERE expires_at < now()"
            )
        return int(str(status).rsplit(" ", 1)[-1] or 0)
