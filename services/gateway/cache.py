"""The gateway's in-memory copy of the status views, fed by a watch on KV ``ops_status``.

Requests read only this cache, so ``/api/health`` never waits on NATS or anything else. The
watch is re-opened if it errors or goes silent longer than ``stall_s`` (the aggregator refreshes
``system`` every ~2 s, so silence means the watch, not the world, is stuck).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from shared import SYSTEM_KEY, SystemView, TenantView, get_logger

log = get_logger(__name__)
TENANT_PREFIX = "tenant."


class ViewCache:
    def __init__(self, *, stall_s: float = 10.0) -> None:
        self.system: SystemView | None = None
        self.tenants: dict[str, TenantView] = {}
        self.updated_monotonic: float | None = None
        self.watch_restarts = 0
        self._stall_s = stall_s
        self._listeners: list[Callable[[str], None]] = []
        self.changed = asyncio.Event()

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(key)`` on every change (the status page's live stream uses this)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[str], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def age_s(self) -> float | None:
        """Seconds since the system view was generated (by the aggregator's clock)."""
        if self.system is None:
            return None
        from shared import utcnow

        return max(0.0, (utcnow() - self.system.generated_at).total_seconds())

    def apply(self, key: str, value: bytes | None) -> None:
        try:
            if key == SYSTEM_KEY:
                if value is None:
                    self.system = None
                else:
                    self.system = SystemView.model_validate_json(value)
            elif key.startswith(TENANT_PREFIX):
                tenant = key[len(TENANT_PREFIX) :]
                if value is None:
                    self.tenants.pop(tenant, None)
                else:
                    self.tenants[tenant] = TenantView.model_validate_json(value)
            else:
                return
        except ValidationError as exc:
            log.warning("view.invalid", key=key, error=str(exc)[:300])
            return
        self.updated_monotonic = time.monotonic()
        for listener in list(self._listeners):
            listener(key)

    async def watch(self, open_bucket: Callable[[], Awaitable[Any]]) -> None:
        """Follow the bucket forever: initial values first, then every update."""
        while True:
            watcher = None
            try:
                kv = await open_bucket()
                watcher = await kv.watchall()
                while True:
                    entry = await watcher.updates(timeout=self._stall_s)
                    if entry is None:  # end of the initial values
                        continue
                    deleted = entry.operation in ("DEL", "PURGE")
                    self.apply(entry.key, None if deleted else entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.watch_restarts += 1
                log.info("view.watch_restart", reason=type(exc).__name__)
                await asyncio.sleep(0.5)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):  # the watch is being replaced anyway
                        await watcher.stop()
