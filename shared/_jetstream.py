"""The one place that declares JetStream streams, durable consumers and KV buckets.

``ensure_jetstream`` is idempotent and safe to run from N replicas at once. It also checks
drift: a subscribe call never updates an existing stream or durable consumer, so a changed
declaration would otherwise be silently ignored. Mutable differences are applied (and logged);
immutable ones (retention, storage) raise ``DriftError`` because fixing them loses data and is a
decision for a human (``opsctl streams check`` shows them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from ._errors import BrokerError, DriftError
from ._logging import get_logger

log = get_logger(__name__)

DAY_S = 86_400.0
STATUS_BUCKET = "ops_status"
EVENTS_STREAM = "OPS_EVENTS"
COMMANDS_STREAM = "OPS_COMMANDS"
DLQ_STREAM = "OPS_DLQ"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    retention: RetentionPolicy = RetentionPolicy.LIMITS
    max_age_s: float = 7 * DAY_S
    max_bytes: int = 1 << 30
    duplicate_window_s: float = 120.0
    discard: DiscardPolicy = DiscardPolicy.OLD
    description: str = ""

    def config(self, replicas: int) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=self.retention,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=self.max_age_s,
            max_bytes=self.max_bytes,
            duplicate_window=self.duplicate_window_s,
            discard=self.discard,
        )


@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    durable: str
    filter_subject: str
    ack_wait_s: float = 60.0
    max_deliver: int = 5
    max_ack_pending: int = 100
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            filter_subject=self.filter_subject,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
            **self.extra,
        )


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        EVENTS_STREAM,
        ("ops.alerts.*", "ops.jobs.*", "ops.status.>"),
        max_age_s=30 * DAY_S,
        description="Alert and status transitions, maintenance job progress (audit trail).",
    ),
    StreamSpec(
        COMMANDS_STREAM,
        ("ops.cmd.>",),
        retention=RetentionPolicy.WORK_QUEUE,
        max_age_s=DAY_S,
        # Covers a command's whole validity (exp <= iat + 15 min) plus the 60 s clock skew; the
        # durable replay store in Postgres is the real guard, this just saves a round trip.
        duplicate_window_s=16 * 60.0,
        description="Signed maintenance commands; each is consumed exactly once.",
    ),
    StreamSpec(
        DLQ_STREAM,
        ("ops.dlq.*",),
        max_age_s=14 * DAY_S,
        description="Rejected messages with the reason, for inspection and replay.",
    ),
)

# Durable consumers are registered here by the services that own them, so drift is checked in
# one place too.
CONSUMERS: list[ConsumerSpec] = []

_MUTABLE_STREAM_FIELDS = (
    "subjects",
    "description",
    "max_age",
    "max_bytes",
    "duplicate_window",
    "discard",
    "num_replicas",
)
_IMMUTABLE_STREAM_FIELDS = ("retention", "storage")
_CONSUMER_FIELDS = ("filter_subject", "ack_wait", "max_deliver", "max_ack_pending")


def _norm(value: Any) -> Any:
    if isinstance(value, list):
        return sorted(value)
    if isinstance(value, float):
        return round(value, 3)
    return value


def diff_config(declared: Any, actual: Any, fields: Iterable[str]) -> dict[str, tuple[Any, Any]]:
    """Fields where ``actual`` differs from ``declared``, as ``{field: (declared, actual)}``."""
    out: dict[str, tuple[Any, Any]] = {}
    for name in fields:
        want, have = _norm(getattr(declared, name)), _norm(getattr(actual, name))
        if want is not None and want != have:
            out[name] = (want, have)
    return out


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int) -> list[str]:
    """Create or reconcile one stream; returns a description of what was changed."""
    declared = spec.config(replicas)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        try:
            await js.add_stream(declared)
            return [f"created stream {spec.name}"]
        except BadRequestError:  # another replica created it between our two calls
            info = await js.stream_info(spec.name)
    immutable = diff_config(declared, info.config, _IMMUTABLE_STREAM_FIELDS)
    if immutable:
        raise DriftError(f"stream {spec.name} differs in immutable fields: {immutable}")
    mutable = diff_config(declared, info.config, _MUTABLE_STREAM_FIELDS)
    if not mutable:
        return []
    log.warning("jetstream.drift", stream=spec.name, fields={k: str(v) for k, v in mutable.items()})
    await js.update_stream(
        dataclasses.replace(info.config, **{k: v[0] for k, v in mutable.items()})
    )
    return [f"updated stream {spec.name}: {sorted(mutable)}"]


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> list[str]:
    declared = spec.config()
    try:
        info = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        await js.add_consumer(spec.stream, declared)
        return [f"created consumer {spec.stream}/{spec.durable}"]
    drift = diff_config(declared, info.config, _CONSUMER_FIELDS)
    if not drift:
        return []
    log.warning(
        "jetstream.drift", consumer=spec.durable, fields={k: str(v) for k, v in drift.items()}
    )
    await js.add_consumer(spec.stream, declared)  # add with the same name updates in place
    return [f"updated consumer {spec.stream}/{spec.durable}: {sorted(drift)}"]


async def ensure_status_bucket(js: JetStreamContext, replicas: int) -> list[str]:
    try:
        await js.key_value(STATUS_BUCKET)
        return []
    except (NotFoundError, BadRequestError):
        pass
    try:
        await js.create_key_value(
            KeyValueConfig(
                bucket=STATUS_BUCKET,
                description="Status views: 'system' and 'tenant.<id>'.",
                history=1,
                replicas=replicas,
                storage=StorageType.FILE,
            )
        )
    except BadRequestError:  # created concurrently
        await js.key_value(STATUS_BUCKET)
        return []
    return [f"created bucket {STATUS_BUCKET}"]


async def open_status_bucket(js: JetStreamContext) -> KeyValue:
    """Bind to the declared bucket (never create it with other settings, as FastStream would)."""
    return await js.key_value(STATUS_BUCKET)


async def ensure_jetstream(js: JetStreamContext, *, replicas: int = 1) -> list[str]:
    """Declare every stream, registered consumer and bucket; returns what changed."""
    changes: list[str] = []
    try:
        for spec in STREAMS:
            changes += await ensure_stream(js, spec, replicas)
        for consumer in CONSUMERS:
            changes += await ensure_consumer(js, consumer)
        changes += await ensure_status_bucket(js, replicas)
    except DriftError:
        raise
    except Exception as exc:
        raise BrokerError(f"declaring JetStream resources failed: {exc}") from exc
    for change in changes:
        log.info("jetstream.declared", change=change)
    return changes


async def check_drift(js: JetStreamContext, *, replicas: int = 1) -> dict[str, dict[str, Any]]:
    """Report drift without changing anything (for ``opsctl streams check``)."""
    report: dict[str, dict[str, Any]] = {}
    for spec in STREAMS:
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            report[spec.name] = {"missing": True}
            continue
        fields = (*_MUTABLE_STREAM_FIELDS, *_IMMUTABLE_STREAM_FIELDS)
        drift = diff_config(spec.config(replicas), info.config, fields)
        if drift:
            report[spec.name] = {
                k: {"declared": str(a), "actual": str(b)} for k, (a, b) in drift.items()
            }
    return report
