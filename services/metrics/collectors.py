"""Collectors on an interval: server connection saturation, database size, active timers.

Each query has its own timeout; a failing one leaves its gauges ``None`` (no data, so no alert
fires on a guess) and is logged once per change of error. Active timers come from
``OPS_ACTIVE_TIMERS_SQL`` (rows of tenant id and count); a partitioned instance keeps only the
tenants it owns, and only the owner of ``global`` runs the server-wide queries.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from shared import DRIVER_ERRORS, DatabaseError, connect, describe, get_logger

log = get_logger(__name__)
_TENANT = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
_FAILURES: tuple[type[BaseException], ...] = (*DRIVER_ERRORS, DatabaseError)

SERVER_SQL = (
    "SELECT count(*) FILTER (WHERE backend_type = 'client backend') AS used, "
    "current_setting('max_connections')::int AS max, "
    "pg_database_size(current_database()) AS size FROM pg_stat_activity"
)


class Collectors:
    def __init__(self, dsn: str | None, timers_sql: str, *, owns: Callable[[str], bool],
                 server_wide: bool, timeout_s: float = 5.0) -> None:
        self._dsn = dsn
        self._timers_sql = timers_sql
        self._owns = owns
        self._server_wide = server_wide
        self._timeout_s = timeout_s
        self.gauges: dict[str, float | None] = {}
        self.timers: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self.runs = 0

    async def run(self, interval_s: float) -> None:
        while True:
            await self.collect_once()
            await asyncio.sleep(interval_s)

    async def collect_once(self) -> None:
        if self._dsn is None:
            return
        try:
            async with connect(self._dsn, timeout_s=self._timeout_s,
                               application_name="opsplane-metrics") as conn:
                if self._server_wide:
                    await self._guard("server", self._server(conn))
                await self._guard("timers", self._timers(conn))
        except DatabaseError as exc:
            self._failed("connect", str(exc))
            self.gauges = {k: None for k in self.gauges}
            self.timers = {}
        self.runs += 1

    async def _guard(self, name: str, work: Any) -> None:
        try:
            await asyncio.wait_for(work, timeout=self._timeout_s)
        except _FAILURES as exc:
            self._failed(name, describe(exc))
            if name == "timers":
                self.timers = {}
                self.gauges["active_timers"] = None
            else:
                for key in ("db_connections", "db_max_connections",
                            "db_server_connections_ratio", "db_size_bytes"):
                    self.gauges[key] = None
        else:
            if self.errors.pop(name, None) is not None:
                log.info("collector.recovered", collector=name)

    async def _server(self, conn: Any) -> None:
        row = await conn.fetchrow(SERVER_SQL)
        used, most = int(row["used"]), int(row["max"])
        self.gauges.update(
            db_connections=float(used),
            db_max_connections=float(most),
            db_server_connections_ratio=round(used / most, 4) if most else None,
            db_size_bytes=float(row["size"]),
        )

    async def _timers(self, conn: Any) -> None:
        rows = await conn.fetch(self._timers_sql)
        timers: dict[str, int] = {}
        for row in rows:
            tenant, count = row[0], row[1]
            # Only ids that can be a subject token (as ingest requires); others are not ours.
            if tenant is not None and _TENANT.match(str(tenant)) and self._owns(str(tenant)):
                timers[str(tenant)] = int(count)
        self.timers = timers
        self.gauges["active_timers"] = float(sum(timers.values()))

    def _failed(self, name: str, error: str) -> None:
        if self.errors.get(name) != error:
            log.warning("collector.failed", collector=name, error=error)
        self.errors[name] = error
