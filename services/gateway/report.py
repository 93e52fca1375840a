"""The super-admin status report: the ``system`` view arranged for people.

What the seed asks for, in order: database connectivity and latency, S3/Mailgun status,
WebSocket status, services alive, tenant health (worst first), active alerts, the last backup and
recent jobs. Unlike ``/api/health`` this is for operators: outputs and instances are included.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared import (
    VERSION,
    AlertEvent,
    CheckView,
    JobEvent,
    ServiceView,
    Status,
    SystemView,
    TenantSummary,
)

from .health_doc import view_freshness


class DatabaseSummary(BaseModel):
    status: Status | None = None
    latency_ms: float | None = Field(default=None, description="SELECT 1 round trip")
    connections_pct: float | None = Field(default=None, description="server connection use")
    pool_pct: float | None = Field(default=None, description="the app's pool use")
    output: str = ""


class StatusReport(BaseModel):
    status: Status
    deployment: str
    version: str = VERSION
    generated_at: datetime | None = None
    view_age_s: float | None = None
    freshness: str = ""
    database: DatabaseSummary
    components: list[CheckView] = Field(default_factory=list, description="worst first")
    services: list[ServiceView] = Field(default_factory=list)
    tenants: list[TenantSummary] = Field(default_factory=list, description="worst first")
    alerts: list[AlertEvent] = Field(default_factory=list, description="pending and firing")
    metrics: dict[str, float | None] = Field(default_factory=dict)
    last_backup: dict[str, Any] | None = None
    jobs: list[JobEvent] = Field(default_factory=list, description="newest first")


def _rank(status: Status) -> int:
    return -status.rank


def database_summary(checks: dict[str, CheckView]) -> DatabaseSummary:
    main = checks.get("postgres")
    conns, pool = checks.get("postgres_connections"), checks.get("postgres_pool")
    return DatabaseSummary(
        status=main.status if main else None,
        latency_ms=main.observed_value if main and not main.skipped else None,
        connections_pct=conns.observed_value if conns and not conns.skipped else None,
        pool_pct=pool.observed_value if pool and not pool.skipped else None,
        output=main.output if main else "no result yet",
    )


def status_report(view: SystemView | None, age_s: float | None, deployment: str) -> StatusReport:
    fresh_status, fresh_note = view_freshness(age_s)
    if view is None:
        return StatusReport(status=Status.FAIL, deployment=deployment, freshness=fresh_note,
                            database=DatabaseSummary(output="no status view yet"))
    return StatusReport(
        status=Status.worst([view.status, fresh_status]),
        deployment=deployment,
        generated_at=view.generated_at,
        view_age_s=None if age_s is None else round(age_s, 3),
        freshness=fresh_note,
        database=database_summary(view.checks),
        components=sorted(view.checks.values(), key=lambda c: (_rank(c.status), c.check)),
        services=sorted(view.services.values(), key=lambda s: (_rank(s.status), s.name)),
        tenants=sorted(view.tenants.values(), key=lambda t: (_rank(t.status), t.tenant_id)),
        alerts=[a for a in view.alerts if a.state != "resolved"],
        metrics=view.metrics,
        last_backup=view.last_backup,
        jobs=sorted(view.jobs, key=lambda j: j.time, reverse=True)[:20],
    )
