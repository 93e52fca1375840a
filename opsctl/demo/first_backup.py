"""The demo's first backup: right after ``make run`` the status page shows a real last backup
(and the backups check passes) instead of "no successful backup recorded yet" until 02:00.

The demo app signs one ``backup.create`` with the local stack's key (``DEMO_SIGNING_KEY``, set
by ``opsctl up --demo`` only when it wrote that key) and publishes it like any operator would;
the maintenance worker verifies and runs it. The stream may not exist yet while the services
start, so publishing is retried for a while.
"""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.client import Client
from nats.errors import Error as NatsError

from opsctl._local_auth import LOCAL_KID
from shared import get_logger, sign_command, subjects

log = get_logger(__name__)


async def request_first_backup(
    nc: Client, private_pem: bytes, *, audience: str, attempts: int = 60, wait_s: float = 1.0
) -> str | None:
    """Publish a signed ``backup.create``; returns its job id, or None if it never got through."""
    jti = str(uuid.uuid4())
    token = sign_command(
        "backup.create", {"label": "demo-start"}, private_key_pem=private_pem,
        kid=LOCAL_KID, issuer="demo-app", audience=audience, lifetime_s=600, jti=jti,
    )
    js = nc.jetstream()
    for _ in range(attempts):
        try:
            await js.publish(subjects.command("backup.create"), token.encode(),
                             headers={"Nats-Msg-Id": jti}, timeout=2)
        except (NatsError, TimeoutError) as exc:  # no stream yet, or NATS still starting
            log.info("demo.first_backup_retry", reason=type(exc).__name__)
            await asyncio.sleep(wait_s)
            continue
        log.info("demo.first_backup_requested", job_id=jti)
        return jti
    log.warning("demo.first_backup_not_sent", detail="OPS_COMMANDS never accepted it")
    return None
