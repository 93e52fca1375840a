"""Subject names of the wire contract (DESIGN.md, "Subjects and streams").

Kept as functions and constants so no service spells a subject by hand.
"""

from __future__ import annotations

import re

PREFIX = "ops"

INGEST_REQUESTS = "ops.ingest.requests"
INGEST_WS = "ops.ingest.ws"
INGEST_POOL = "ops.ingest.pool"
# Partitioned ingest (docs/metrics.md): the app publishes ``ops.ingest.requests.<tenant_id>``;
# the server's mapping rewrites it to ``ops.ingest.part.<k>.<tenant_id>``.
INGEST_REQUESTS_BY_TENANT = "ops.ingest.requests.*"
INGEST_PARTITION_PREFIX = "ops.ingest.part"

HEALTH_ALL = "ops.health.*"
HEARTBEAT_ALL = "ops.heartbeat.*.*"
METRICS_ALL = "ops.metrics.>"
METRICS_GLOBAL = "ops.metrics.global"
METRICS_TENANTS = "ops.metrics.tenant.*"
METRICS_PARTITIONS = "ops.metrics.partition.*"
ALERTS_ALL = "ops.alerts.*"
CMD_ALL = "ops.cmd.>"
JOBS_ALL = "ops.jobs.*"
DLQ_ALL = "ops.dlq.*"
STATUS_ALL = "ops.status.>"

# A subject token: no dots, wildcards or whitespace (NATS would split or widen it).
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


def token(value: str) -> str:
    """Return ``value`` if it is a safe single subject token, else raise ``ValueError``."""
    if not _TOKEN.match(value):
        raise ValueError(f"not a valid subject token: {value!r}")
    return value


def health(check: str) -> str:
    return f"ops.health.{token(check)}"


def heartbeat(service: str, instance: str) -> str:
    return f"ops.heartbeat.{token(service)}.{token(instance)}"


def metrics_global() -> str:
    return "ops.metrics.global"


def metrics_tenant(tenant_id: str) -> str:
    return f"ops.metrics.tenant.{token(tenant_id)}"


def ingest_requests_tenant(tenant_id: str) -> str:
    return f"{INGEST_REQUESTS}.{token(tenant_id)}"


def ingest_partition(partition: int) -> str:
    """What the metrics instance owning ``partition`` subscribes to (one tenant a token)."""
    return f"{INGEST_PARTITION_PREFIX}.{int(partition)}.*"


def metrics_partition(partition: int) -> str:
    return f"ops.metrics.partition.{int(partition)}"


def alert(rule: str) -> str:
    return f"ops.alerts.{token(rule)}"


def command(action: str) -> str:
    # Actions are dotted ("backup.create"), each part a token.
    return "ops.cmd." + ".".join(token(part) for part in action.split("."))


def job(job_id: str) -> str:
    return f"ops.jobs.{token(job_id)}"


def status_change(kind: str, name: str | None = None) -> str:
    """``ops.status.system``, ``ops.status.check.<check>``, ``ops.status.tenant.<id>``, ..."""
    if name is None:
        return f"ops.status.{token(kind)}"
    return f"ops.status.{token(kind)}.{token(name)}"


def dlq(origin: str) -> str:
    return f"ops.dlq.{token(origin)}"


def last_token(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]
