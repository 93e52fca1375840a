"""Wire models of the contract (DESIGN.md, "Subjects and streams").

Every message on the bus is one of these pydantic v2 models. Each carries a ``schema`` version
that defaults to 1, so producers (the app) may omit it; a consumer rejects versions it does not
know rather than guessing. Unknown fields are rejected too: a typo in a producer shows up in the
DLQ instead of silently dropping data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
)

from ._status import Status

SCHEMA_VERSION = 1  # the only version so far; bump with a new Literal member


def utcnow() -> datetime:
    return datetime.now(UTC)


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# RFC 3339 with an offset, or epoch seconds (pydantic reads numbers as Unix time, in UTC).
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]


class WireModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, serialize_by_alias=True, frozen=False
    )

    schema_version: Literal[1] = Field(default=1, alias="schema")

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


# ---- ingest (the app publishes these) -------------------------------------------------------


class RequestRecord(WireModel):
    """One request the app served."""

    ts: UtcDatetime
    tenant_id: Identifier | None = None
    request_id: Annotated[str, Field(max_length=128)] | None = None
    method: Annotated[str, Field(min_length=1, max_length=16)]
    route: Annotated[str, Field(min_length=1, max_length=256)]
    status: Annotated[int, Field(ge=100, le=599)]
    duration_ms: NonNegativeFloat


class WsGauge(WireModel):
    """Open WebSocket connections on one app node."""

    ts: UtcDatetime
    node: Identifier
    connections: NonNegativeInt


class PoolGauge(WireModel):
    """The app's database connection pool on one node."""

    ts: UtcDatetime
    node: Identifier
    in_use: NonNegativeInt
    max: Annotated[int, Field(gt=0)]


# ---- health and liveness ------------------------------------------------------------------


class HealthEvent(WireModel):
    """One probe result, published on ``ops.health.<check>``.

    ``component`` and ``measurement`` form the ``component:measurement`` key of the public
    health document; ``output`` is for operators and never contains secrets.
    """

    check: Identifier
    component: Identifier
    measurement: Annotated[str, Field(min_length=1, max_length=64)] = "responseTime"
    component_type: Annotated[str, Field(max_length=64)] = "component"
    status: Status
    observed_value: float | None = None
    observed_unit: Annotated[str, Field(max_length=32)] | None = None
    latency_ms: NonNegativeFloat | None = None
    output: Annotated[str, Field(max_length=2048)] = ""
    time: UtcDatetime = Field(default_factory=utcnow)
    instance: Identifier
    critical: bool = True
    # How often the probe runs: lets the aggregator judge staleness without configuration.
    interval_s: Annotated[float, Field(gt=0)] = 5.0
    skipped: bool = False


class Heartbeat(WireModel):
    service: Identifier
    instance: Identifier
    version: Annotated[str, Field(max_length=64)]
    started_at: UtcDatetime
    time: UtcDatetime = Field(default_factory=utcnow)
    interval_s: Annotated[float, Field(gt=0)] = 5.0


# ---- alerts and jobs ----------------------------------------------------------------------


AlertState = Literal["pending", "firing", "resolved"]


class AlertEvent(WireModel):
    rule: Identifier
    scope: Annotated[str, Field(min_length=1, max_length=200)]
    state: AlertState
    value: float | None = None
    threshold: float | None = None
    since: UtcDatetime
    severity: Annotated[str, Field(max_length=32)] = "warning"
    summary: Annotated[str, Field(max_length=1024)] = ""


StatusKind = Literal["system", "check", "service", "tenant"]


class StatusChange(WireModel):
    """A status transition in a view, published on ``ops.status.<kind>[.<name>]`` (JetStream).

    Published once per change by the aggregator replica whose compare-and-set write made it
    (``Nats-Msg-Id`` = ``<view key>@<revision>/<kind>.<name>``), so N replicas never duplicate one.
    ``previous`` is ``None`` when the thing first appears.
    """

    key: Annotated[str, Field(min_length=1, max_length=200)]
    kind: StatusKind
    name: Annotated[str, Field(min_length=1, max_length=200)]
    previous: Status | None = None
    status: Status
    output: Annotated[str, Field(max_length=2048)] = ""
    revision: NonNegativeInt = 0
    time: UtcDatetime = Field(default_factory=utcnow)


JobState = Literal["queued", "running", "succeeded", "failed", "rejected", "cancelled"]


class Progress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    done: NonNegativeInt = 0
    total: NonNegativeInt | None = None
    unit: Annotated[str, Field(max_length=32)] = ""


class JobEvent(WireModel):
    job_id: Annotated[str, Field(min_length=1, max_length=64)]
    action: Annotated[str, Field(max_length=64)]
    state: JobState
    progress: Progress = Field(default_factory=Progress)
    message: Annotated[str, Field(max_length=4096)] = ""
    result: dict[str, Any] | None = None
    error: Annotated[str, Field(max_length=4096)] | None = None
    time: UtcDatetime = Field(default_factory=utcnow)


class DeadLetter(WireModel):
    """A rejected message as it arrived, plus why (published on ``ops.dlq.<origin>``)."""

    origin: Identifier
    subject: str
    reason: Annotated[str, Field(max_length=8192)]
    # The raw body, decoded as UTF-8 with replacement; truncated past 64 KiB (``truncated``).
    body: str
    truncated: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    time: UtcDatetime = Field(default_factory=utcnow)
