"""Tenant views (``tenant.<id>`` in KV) and their summaries in the ``system`` view.

This module keeps the views and their life cycle; what goes *into* a tenant view (metrics
windows, the thresholds that set its status, alerts) comes from the metrics issue's folding,
which calls ``TenantBook.upsert``. A tenant not updated for ``forget_s`` leaves the system view's
table (its KV key stays until it is purged, so its own endpoint still answers).

10,000 tenants must cost the view tick little (docs/status-views.md, "Many tenants"):
- every accepted ``upsert`` (and ``merge``, which upserts) marks the tenant's key **dirty**; the
  writer syncs only dirty keys, oldest first, a bounded number per tick, and settles a key once
  KV holds what it was built from (a failed write leaves it dirty for the next tick);
- the summary a tenant shows in the system view, and its worst-first rank, are built once per
  upsert, not once per tick, so building the system view is a few dict copies.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import ValidationError

from shared import AlertEvent, Status, SystemView, TenantSummary, TenantView, get_logger, tenant_key

log = get_logger(__name__)
TENANT_PREFIX = "tenant."
# Worst first: status, then error ratio, then average latency, then the id (a total order).
Rank = tuple[int, float, float, str]


def worst_first(summary: TenantSummary) -> Rank:
    return (-summary.status.rank, -(summary.metrics.get("error_ratio_5m") or 0.0),
            -(summary.metrics.get("avg_ms_5m") or 0.0), summary.tenant_id)


def summary_of(view: TenantView) -> TenantSummary:
    return TenantSummary(tenant_id=view.tenant_id, status=view.status,
                         metrics=dict(view.metrics), updated_at=view.generated_at)


@dataclass
class TenantBook:
    views: dict[str, TenantView] = field(default_factory=dict)
    forget_s: float = 3600.0
    summaries: dict[str, TenantSummary] = field(default_factory=dict)
    _ranks: dict[str, Rank] = field(default_factory=dict, repr=False)
    _alerting: dict[str, None] = field(default_factory=dict, repr=False)  # an ordered set
    # KV key -> version of its latest change; insertion order = the order keys became dirty.
    _dirty: dict[str, int] = field(default_factory=dict, repr=False)
    _versions: Iterator[int] = field(default_factory=itertools.count, repr=False)

    # ---- inputs -------------------------------------------------------------------------

    def upsert(self, view: TenantView) -> bool:
        """Keep ``view`` unless we already hold a newer one for that tenant; ``True`` if kept
        (its key is then dirty until the writer settles it)."""
        tenant = view.tenant_id
        current = self.views.get(tenant)
        if current is not None and view.generated_at < current.generated_at:
            return False
        self.views[tenant] = view
        summary = self.summaries[tenant] = summary_of(view)
        self._ranks[tenant] = worst_first(summary)
        if view.alerts:
            self._alerting[tenant] = None
        else:
            self._alerting.pop(tenant, None)
        # Assigning an existing key keeps its place: a busy tenant cannot starve a quiet one.
        self._dirty[tenant_key(tenant)] = next(self._versions)
        return True

    def forget(self, tenant: str) -> None:
        """Drop a tenant from memory (its KV key stays)."""
        for table in (self.views, self.summaries, self._ranks, self._alerting):
            table.pop(tenant, None)
        self._dirty.pop(tenant_key(tenant), None)

    # ---- a view source for the writer ------------------------------------------------------

    def keys(self) -> Iterable[str]:
        return [tenant_key(tenant) for tenant in sorted(self.views)]

    def view(self, key: str, now: datetime) -> TenantView | None:
        return self.views.get(key[len(TENANT_PREFIX):])

    def parse(self, key: str, raw: bytes) -> TenantView | None:
        try:
            return TenantView.model_validate_json(raw)
        except ValidationError:
            return None

    def merge(self, key: str, raw: bytes) -> None:
        view = self.parse(key, raw)
        if view is not None:
            self.upsert(view)

    def statuses(self, view: TenantView) -> dict[tuple[str, str], tuple[Status, str]]:
        return {("tenant", view.tenant_id): (view.status, "; ".join(view.reasons))}

    # ---- change tracking (writer.ChangeTracking) --------------------------------------------

    def pending(self) -> Iterator[str]:
        """Dirty keys, the longest-waiting first."""
        return iter(self._dirty)

    @property
    def dirty_count(self) -> int:
        return len(self._dirty)

    def version(self, key: str) -> int | None:
        return self._dirty.get(key)

    def settle(self, key: str, version: int | None) -> None:
        """KV holds the view as of ``version``: clean, unless it changed again since."""
        if version is None or self._dirty.get(key) == version:
            self._dirty.pop(key, None)

    def retry_later(self, key: str) -> None:
        """The write failed: keep the key dirty, behind the others (one bad key blocks none)."""
        version = self._dirty.pop(key, None)
        if version is not None:
            self._dirty[key] = version

    # ---- the system view's tenant table ---------------------------------------------------

    def contribute(self, view: SystemView, now: datetime) -> Status | None:
        cutoff = now - timedelta(seconds=self.forget_s)
        for tenant in [t for t, tv in self.views.items() if tv.generated_at < cutoff]:
            self.forget(tenant)
        view.tenants.update(self.summaries)
        return None  # one tenant's trouble is that tenant's, not the whole system's

    def worst(self, n: int) -> list[str]:
        """The ``n`` worst tenants, worst first."""
        return [rank[-1] for rank in heapq.nsmallest(n, self._ranks.values())]

    def alerts(self) -> Iterator[AlertEvent]:
        """The active alerts of every tenant."""
        for tenant in self._alerting:
            yield from self.views[tenant].alerts

    def merge_system(self, view: SystemView) -> None:
        """Nothing to take from the summaries: the full tenant views are merged per key."""
