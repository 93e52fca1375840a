"""The app's own gauges: DB pool use (``ops.ingest.pool``) and WebSocket connections
(``ops.ingest.ws``), latest per node; a node silent for ``fresh_s`` no longer counts."""

from __future__ import annotations

import time

from shared import PoolGauge, WsGauge


class AppGauges:
    def __init__(self, *, fresh_s: float = 60.0) -> None:
        self._fresh_s = fresh_s
        self._pool: dict[str, tuple[PoolGauge, float]] = {}
        self._ws: dict[str, tuple[WsGauge, float]] = {}

    def apply_pool(self, gauge: PoolGauge) -> None:
        self._pool[gauge.node] = (gauge, time.monotonic())

    def apply_ws(self, gauge: WsGauge) -> None:
        self._ws[gauge.node] = (gauge, time.monotonic())

    def values(self) -> dict[str, float | None]:
        cutoff = time.monotonic() - self._fresh_s
        pools = [g for g, seen in self._pool.values() if seen >= cutoff]
        sockets = [g for g, seen in self._ws.values() if seen >= cutoff]
        out: dict[str, float | None] = {}
        if pools:
            in_use, size = sum(g.in_use for g in pools), sum(g.max for g in pools)
            out.update(app_pool_in_use=in_use, app_pool_max=size,
                       db_pool_ratio=round(in_use / size, 4))
        if sockets:
            out["ws_connections"] = float(sum(g.connections for g in sockets))
        return out
