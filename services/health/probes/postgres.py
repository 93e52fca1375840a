"""PostgreSQL: can we connect, how long does ``SELECT 1`` take, and how full is the server?

A fresh connection every time: a pooled connection can look healthy while new ones are refused
(``max_connections`` reached, auth changed, listener gone), and new connections are what the app
needs after a restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shared import connect

from ..probe import ProbeConfig, ProbeResult, by_latency, by_threshold

APPLICATION_NAME = "opsplane-health"

# Client sessions against the slots they may use (superusers keep their reserved ones).
SATURATION_SQL = """
SELECT
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS used,
  current_setting('max_connections')::int AS max_connections,
  current_setting('superuser_reserved_connections')::int AS reserved
"""


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
        async with connect(
            self.dsn, timeout_s=self.config.timeout_s, application_name=APPLICATION_NAME
        ) as conn:
            connected = time.perf_counter()
            await conn.fetchval("SELECT 1")
            done = time.perf_counter()
        result = by_latency((done - connected) * 1000, self.config, "SELECT 1")
        connect_ms = (connected - started) * 1000
        return result.model_copy(update={"output": f"{result.output}; connect {connect_ms:.1f} ms"})


@dataclass
class PostgresConnectionsProbe:
    """Server-side saturation: client sessions in ``pg_stat_activity`` over the usable slots."""

    dsn: str
    config: ProbeConfig = field(default_factory=ProbeConfig)
    check: str = "postgres_connections"
    component: str = "postgres"
    measurement: str = "connections"
    component_type: str = "datastore"

    async def run(self) -> ProbeResult:
        async with connect(
            self.dsn, timeout_s=self.config.timeout_s, application_name=APPLICATION_NAME
        ) as conn:
            row = await conn.fetchrow(SATURATION_SQL)
        assert row is not None
        usable = max(1, row["max_connections"] - row["reserved"])
        ratio = 100.0 * row["used"] / usable
        return ProbeResult(
            status=by_threshold(ratio, self.config),
            observed_value=round(ratio, 2),
            observed_unit="%",
            output=f"{row['used']}/{usable} connections in use (max_connections "
            f"{row['max_connections']}, {row['reserved']} reserved)",
        )
