"""PostgreSQL: can we connect, and how long does ``SELECT 1`` take?

A fresh connection every time: a pooled connection can look healthy while new ones are refused
(``max_connections`` reached, auth changed, listener gone), and new connections are what the app
needs after a restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shared import connect

from ..probe import ProbeConfig, ProbeResult, by_latency


@dataclass
class PostgresProbe:
    dsn: str
    config: ProbeConfig = field(default_factory=ProbeConfig)
    check: str = "postgres"
    component: str = "postgres"
    measurement: str = "responseTime"
    component_type: str = "datastore"

    async def run(self) -> ProbeResult:
        started = time.perf_counter()
        async with connect(self.dsn, timeout_s=self.config.timeout_s, application_name="opsplane-health") as conn:
            connected = time.perf_counter()
            await conn.fetchval("SELECT 1")
            done = time.perf_counter()
        result = by_latency((done - connected) * 1000, self.config, "SELECT 1")
        connect_ms = (connected - started) * 1000
        return ProbeResult(
            result.status, result.observed_value, result.observed_unit,
            f"{result.output}; connect {connect_ms:.1f} ms",
        )
