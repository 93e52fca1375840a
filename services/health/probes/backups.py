"""Backups: how old is the last successful backup, read from the maintenance worker's catalog.

The catalog (default ``ops.backups``, ``OPS_BACKUP_CATALOG``) belongs to the maintenance worker;
its shape is fixed in docs/health-probes.md. Until that table exists the check is ``skipped``,
so this probe ships before the worker and starts judging as soon as the worker's migration runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from shared import Status, connect

from ..probe import ProbeConfig, ProbeResult, by_threshold, skipped
from .postgres import APPLICATION_NAME

_QUALIFIED = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")


@dataclass
class BackupsProbe:
    dsn: str
    config: ProbeConfig = field(default_factory=ProbeConfig)
    catalog: str = "ops.backups"
    check: str = "backups"
    component: str = "backups"
    measurement: str = "age"
    component_type: str = "component"

    def __post_init__(self) -> None:
        if not _QUALIFIED.match(self.catalog):  # it is spliced into SQL below
            raise ValueError(f"backup catalog must be schema.table, got {self.catalog!r}")

    async def run(self) -> ProbeResult:
        async with connect(
            self.dsn, timeout_s=self.config.timeout_s, application_name=APPLICATION_NAME
        ) as conn:
            if await conn.fetchval("SELECT to_regclass($1)::text", self.catalog) is None:
                return skipped(
                    f"no backup catalog {self.catalog} (maintenance worker not installed)"
                )
            try:
                row = await conn.fetchrow(
                    f"SELECT key, finished_at FROM {self.catalog} "
                    "WHERE status = 'succeeded' AND finished_at IS NOT NULL "
                    "ORDER BY finished_at DESC LIMIT 1"
                )
            except (asyncpg.UndefinedColumnError, asyncpg.DataError) as exc:
                return ProbeResult(
                    status=Status.FAIL,
                    output=f"backup catalog {self.catalog} has an unexpected shape: {exc}",
                )
        if row is None:
            return ProbeResult(status=Status.FAIL, output="no successful backup recorded yet")
        finished: datetime = row["finished_at"]
        age_h = max(0.0, (datetime.now(UTC) - finished).total_seconds() / 3600)
        status = by_threshold(age_h, self.config)
        return ProbeResult(
            status=status,
            observed_value=round(age_h, 3),
            observed_unit="h",
            output=f"last successful backup {row['key']} finished {finished.isoformat()} "
            f"({age_h:.1f} h ago)",
        )
