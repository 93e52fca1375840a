"""The status views the aggregator writes to KV bucket ``ops_status`` and gateways read.

Keys: ``system`` and ``tenant.<tenant_id>``. Views ignore unknown fields when read, so a gateway
of the previous release can still serve a view written by a newer aggregator during a rollout.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ._models import AlertEvent, JobEvent, utcnow
from ._snapshot import TrafficTotals
from ._status import Status

SYSTEM_KEY = "system"


def tenant_key(tenant_id: str) -> str:
    return f"tenant.{tenant_id}"


class ViewModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class CheckView(ViewModel):
    check: str
    component: str
    measurement: str
    component_type: str
    reported: Status
    status: Status  # after criticality and staleness
    observed_value: float | None = None
    observed_unit: str | None = None
    latency_ms: float | None = None
    output: str = ""
    time: datetime
    critical: bool = True
    interval_s: float = 5.0
    skipped: bool = False
    instance: str = ""


class InstanceView(ViewModel):
    instance: str
    version: str
    started_at: datetime
    last_seen: datetime
    alive: bool
    interval_s: float = 5.0  # the instance's heartbeat interval


class ServiceView(ViewModel):
    name: str
    status: Status
    instances: list[InstanceView] = Field(default_factory=list)


class TenantSummary(ViewModel):
    tenant_id: str
    status: Status
    metrics: dict[str, float | None] = Field(default_factory=dict)
    updated_at: datetime


class SystemView(ViewModel):
    status: Status
    generated_at: datetime = Field(default_factory=utcnow)
    checks: dict[str, CheckView] = Field(default_factory=dict)
    services: dict[str, ServiceView] = Field(default_factory=dict)
    tenants: dict[str, TenantSummary] = Field(default_factory=dict)
    alerts: list[AlertEvent] = Field(default_factory=list)
    metrics: dict[str, float | None] = Field(default_factory=dict)
    last_backup: dict[str, Any] | None = None
    jobs: list[JobEvent] = Field(default_factory=list)
    # Cumulative request counters per metrics partition (for the gateway's /metrics).
    traffic: dict[str, TrafficTotals] = Field(default_factory=dict)


class TenantView(ViewModel):
    tenant_id: str
    status: Status
    generated_at: datetime = Field(default_factory=utcnow)
    metrics: dict[str, float | None] = Field(default_factory=dict)
    alerts: list[AlertEvent] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
