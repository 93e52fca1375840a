"""Gauges the app publishes (``ops.ingest.pool``, ``ops.ingest.ws``) and the checks built on them.

The app reports per node; a check sums over the nodes heard from recently. A node that went
quiet (scaled down, crashed) drops out after ``fresh_s``. Until any node has ever reported, the
check is ``skipped`` (the app does not publish that gauge); once one has, silence is a ``warn``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from shared import PoolGauge, Status, WsGauge

from .probe import ProbeConfig, ProbeResult, by_threshold, skipped

G = TypeVar("G", PoolGauge, WsGauge)


@dataclass
class GaugeBook(Generic[G]):
    """The latest gauge per app node, with when we received it (our monotonic clock)."""

    nodes: dict[str, tuple[G, float]] = field(default_factory=dict)
    ever_seen: bool = False
    last_received: float | None = None

    def apply(self, gauge: G, *, now: float | None = None) -> None:
        received = time.monotonic() if now is None else now
        current = self.nodes.get(gauge.node)
        if current is not None and current[0].ts > gauge.ts:
            return  # an older, reordered report
        self.nodes[gauge.node] = (gauge, received)
        self.ever_seen = True
        self.last_received = received

    def fresh(self, fresh_s: float, *, now: float | None = None) -> list[G]:
        at = time.monotonic() if now is None else now
        for node, (_, received) in list(self.nodes.items()):
            if at - received > fresh_s:
                del self.nodes[node]
        return [gauge for gauge, _ in self.nodes.values()]

    def silent_for(self, *, now: float | None = None) -> float:
        at = time.monotonic() if now is None else now
        return 0.0 if self.last_received is None else at - self.last_received


def current_gauges(
    book: GaugeBook[G], config: ProbeConfig, what: str, subject: str
) -> list[G] | ProbeResult:
    """The fresh gauges of ``book``, or the result to report when there are none."""
    if not book.ever_seen:
        return skipped(f"the app publishes no {what} on {subject}")
    gauges = book.fresh(fresh_window(config))
    if not gauges:
        return ProbeResult(
            status=Status.WARN,
            output=f"no {what} from any app node for {book.silent_for():.0f} s",
        )
    return gauges


def fresh_window(config: ProbeConfig) -> float:
    """How long a node's last report counts (3 probe intervals, at least 15 s)."""
    return max(15.0, 3 * config.interval_s)


@dataclass
class PoolProbe:
    """The app's own DB pool: connections in use over the pool size, summed over app nodes."""

    book: GaugeBook[PoolGauge]
    config: ProbeConfig = field(default_factory=ProbeConfig)
    check: str = "postgres_pool"
    component: str = "postgres"
    measurement: str = "poolUtilization"
    component_type: str = "datastore"

    async def run(self) -> ProbeResult:
        gauges = current_gauges(self.book, self.config, "pool gauge", "ops.ingest.pool")
        if isinstance(gauges, ProbeResult):
            return gauges
        in_use, size = sum(g.in_use for g in gauges), sum(g.max for g in gauges)
        ratio = 100.0 * in_use / size
        return ProbeResult(
            status=by_threshold(ratio, self.config),
            observed_value=round(ratio, 2),
            observed_unit="%",
            output=f"{in_use}/{size} pool connections in use on {len(gauges)} app node(s)",
        )


@dataclass
class WsConnectionsProbe:
    """Open WebSocket connections, summed over app nodes (thresholds optional)."""

    book: GaugeBook[WsGauge]
    config: ProbeConfig = field(default_factory=ProbeConfig)
    check: str = "websocket_connections"
    component: str = "websocket"
    measurement: str = "connections"
    component_type: str = "component"

    async def run(self) -> ProbeResult:
        gauges = current_gauges(self.book, self.config, "connection gauge", "ops.ingest.ws")
        if isinstance(gauges, ProbeResult):
            return gauges
        total = sum(g.connections for g in gauges)
        return ProbeResult(
            status=by_threshold(float(total), self.config),
            observed_value=float(total),
            observed_unit="connections",
            output=f"{total} open connection(s) on {len(gauges)} app node(s)",
        )
