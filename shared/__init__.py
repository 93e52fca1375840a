"""opsplane's shared library: the contract and the plumbing every service uses.

Import from here, never from the private ``_modules``.
"""

from . import _subjects as subjects
from ._asgi import RequestMetricsMiddleware
from ._broker import connect_with_retry, make_broker, round_trip
from ._db import DRIVER_ERRORS, connect, create_pool, describe
from ._dlq import DeadLetters, reason_of
from ._errors import (
    BrokerError,
    ConfigError,
    ContractError,
    DatabaseError,
    DependencyError,
    DriftError,
    MigrationError,
    OpsplaneError,
    StorageError,
)
from ._inbound import InboundMessage, raw_message, subscribe_raw
from ._ingest import BatchPublisher, publish_pool_gauge, publish_ws_gauge, request_record
from ._ingest_link import IngestLink
from ._jetstream import (
    COMMANDS_STREAM,
    CONSUMERS,
    DLQ_STREAM,
    EVENTS_STREAM,
    STATUS_BUCKET,
    STREAMS,
    ConsumerSpec,
    StreamSpec,
    check_drift,
    ensure_jetstream,
    open_status_bucket,
)
from ._logging import ContextMiddleware, configure_logging, context_headers, get_logger, scrub
from ._migrations import Migration, load_migrations, migrate
from ._models import (
    AlertEvent,
    DeadLetter,
    HealthEvent,
    Heartbeat,
    JobEvent,
    PoolGauge,
    Progress,
    RequestRecord,
    StatusChange,
    WireModel,
    WsGauge,
    utcnow,
)
from ._service import ServiceRuntime
from ._settings import Settings
from ._snapshot import (
    DURATION_BOUNDS_S,
    FULL_WINDOWS,
    LONG_WINDOWS,
    SKETCH_BINS_PER_DECADE,
    WINDOW_SECONDS,
    MetricSnapshot,
    TrafficTotals,
    WindowStats,
)
from ._status import Status, effective_status
from ._version import VERSION
from ._views import (
    SYSTEM_KEY,
    CheckView,
    InstanceView,
    ServiceView,
    SystemView,
    TenantSummary,
    TenantView,
    tenant_key,
)

__all__ = [
    "COMMANDS_STREAM",
    "CONSUMERS",
    "DLQ_STREAM",
    "DRIVER_ERRORS",
    "DURATION_BOUNDS_S",
    "EVENTS_STREAM",
    "FULL_WINDOWS",
    "LONG_WINDOWS",
    "SKETCH_BINS_PER_DECADE",
    "STATUS_BUCKET",
    "STREAMS",
    "SYSTEM_KEY",
    "VERSION",
    "WINDOW_SECONDS",
    "AlertEvent",
    "BatchPublisher",
    "BrokerError",
    "CheckView",
    "ConfigError",
    "ConsumerSpec",
    "ContextMiddleware",
    "ContractError",
    "DatabaseError",
    "DeadLetter",
    "DeadLetters",
    "DependencyError",
    "DriftError",
    "HealthEvent",
    "Heartbeat",
    "InboundMessage",
    "IngestLink",
    "InstanceView",
    "JobEvent",
    "MetricSnapshot",
    "Migration",
    "MigrationError",
    "OpsplaneError",
    "PoolGauge",
    "Progress",
    "RequestMetricsMiddleware",
    "RequestRecord",
    "ServiceRuntime",
    "ServiceView",
    "Settings",
    "Status",
    "StatusChange",
    "StorageError",
    "StreamSpec",
    "SystemView",
    "TenantSummary",
    "TenantView",
    "TrafficTotals",
    "WindowStats",
    "WireModel",
    "WsGauge",
    "check_drift",
    "configure_logging",
    "connect",
    "connect_with_retry",
    "context_headers",
    "create_pool",
    "describe",
    "effective_status",
    "ensure_jetstream",
    "get_logger",
    "load_migrations",
    "make_broker",
    "migrate",
    "open_status_bucket",
    "publish_pool_gauge",
    "publish_ws_gauge",
    "raw_message",
    "reason_of",
    "request_record",
    "round_trip",
    "scrub",
    "subjects",
    "subscribe_raw",
    "tenant_key",
    "utcnow",
]
