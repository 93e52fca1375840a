"""Windowed metric snapshots: what the metrics service publishes on ``ops.metrics.<scope>``.

Scopes: ``global`` (the whole app), ``tenant.<id>`` (one tenant) and ``partition.<k>`` (the
partial global of one metrics partition, with its latency sketch so the owner of ``global``
can merge partitions exactly). Windows are keyed ``1m``/``5m`` (full request statistics) and
``30m``/``1h``/``6h`` (counts and 5xx only, for SLO burn rates).

``flat()`` turns a snapshot into the metric names alert rules and views use:
``<field>_<window>`` (``avg_ms_5m``, ``error_ratio_1h``, ``p95_ms_1m``...) plus the gauges
(``db_connections_ratio``, ``active_timers``...).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt

from ._models import AlertEvent, Identifier, UtcDatetime, WireModel, utcnow

# Latency sketch: bin j holds durations in (10**((j-1)/24), 10**(j/24)] ms, so a quantile read
# at the bin's geometric middle is within 5 % of the truth. Bins merge by addition.
SKETCH_BINS_PER_DECADE = 24
# Prometheus histogram bounds (seconds): every 8th sketch boundary (10**(k/3) ms), so the
# cumulative bucket counts derived from the sketch are exact.
DURATION_BOUNDS_S: tuple[float, ...] = tuple(
    round(10 ** (k / 3) / 1000, 6) for k in range(-3, 13)
)
FULL_WINDOWS = ("1m", "5m")
LONG_WINDOWS = ("30m", "1h", "6h")
WINDOW_SECONDS = {"1m": 60, "5m": 300, "30m": 1800, "1h": 3600, "6h": 21600}
STAT_FIELDS = (
    "count",
    "errors",
    "rate_per_s",
    "error_ratio",
    "avg_ms",
    "p50_ms",
    "p95_ms",
    "p99_ms",
)


class WindowStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_s: Annotated[int, Field(gt=0)]
    count: NonNegativeInt = 0
    errors: NonNegativeInt = 0  # responses with status >= 500
    sum_ms: NonNegativeFloat = 0.0
    rate_per_s: NonNegativeFloat = 0.0
    error_ratio: float | None = None
    avg_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None


class TrafficTotals(BaseModel):
    """Cumulative request counters of one metrics partition since ``started_at``.

    What Prometheus counters and histograms need: monotonic, reset only when that partition's
    process restarts (the gateway labels them by partition, so a reset is seen as one).
    """

    model_config = ConfigDict(extra="forbid")

    started_at: UtcDatetime
    # "<METHOD> <class>", e.g. "GET 2xx"; methods outside the usual set count as "OTHER".
    requests: dict[str, NonNegativeInt] = Field(default_factory=dict)
    bounds_s: list[float] = Field(default_factory=lambda: list(DURATION_BOUNDS_S))
    # Cumulative counts: buckets[i] = requests with duration <= bounds_s[i].
    buckets: list[NonNegativeInt] = Field(default_factory=list)
    count: NonNegativeInt = 0
    sum_s: NonNegativeFloat = 0.0


class MetricSnapshot(WireModel):
    scope: Annotated[str, Field(min_length=1, max_length=200)]
    tenant_id: Identifier | None = None
    instance: Identifier
    partition: NonNegativeInt | None = None
    partitions: Annotated[int, Field(ge=1)] = 1
    time: UtcDatetime = Field(default_factory=utcnow)
    interval_s: Annotated[float, Field(gt=0)] = 5.0
    windows: dict[str, WindowStats] = Field(default_factory=dict)
    gauges: dict[str, float | None] = Field(default_factory=dict)
    # Active (pending or firing) alerts of this scope; views show them.
    alerts: list[AlertEvent] = Field(default_factory=list)
    # Partition partials only: latency sketch per full window, for an exact merge.
    sketch: dict[str, dict[int, NonNegativeInt]] = Field(default_factory=dict)
    # Global and partition snapshots: cumulative counters, keyed by partition.
    traffic: dict[str, TrafficTotals] = Field(default_factory=dict)

    def flat(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, stats in self.windows.items():
            for field in STAT_FIELDS:
                value = getattr(stats, field)
                if value is not None or name in FULL_WINDOWS:
                    out[f"{field}_{name}"] = None if value is None else float(value)
        out.update(self.gauges)
        return out
