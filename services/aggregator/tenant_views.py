"""Tenant views (``tenant.<id>`` in KV) and their summaries in the ``system`` view.

This module keeps the views and their life cycle; what goes *into* a tenant view (metrics
windows, the thresholds that set its status, alerts) comes from the metrics issue's folding,
which calls ``TenantBook.upsert``. A tenant not updated for ``forget_s`` leaves the system view's
table (its KV key stays until it is purged, so its own endpoint still answers).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from shared import Status, SystemView, TenantSummary, TenantView, get_logger, tenant_key

log = get_logger(__name__)
TENANT_PREFIX = "tenant."


@dataclass
class TenantBook:
    views: dict[str, TenantView] = field(default_factory=dict)
    forget_s: float = 3600.0

    # ---- inputs -------------------------------------------------------------------------

    def upsert(self, view: TenantView) -> None:
        """Keep ``view`` unless we already hold a newer one for that tenant."""
        current = self.views.get(view.tenant_id)
        if current is None or view.generated_at >= current.generated_at:
            self.views[view.tenant_id] = view

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

    # ---- the system view's tenant table ---------------------------------------------------

    def contribute(self, view: SystemView, now: datetime) -> Status | None:
        for tenant, tv in list(self.views.items()):
            if (now - tv.generated_at).total_seconds() > self.forget_s:
                del self.views[tenant]
                continue
            view.tenants[tenant] = TenantSummary(
                tenant_id=tenant, status=tv.status, metrics=dict(tv.metrics),
                updated_at=tv.generated_at,
            )
        return None  # one tenant's trouble is that tenant's, not the whole system's

    def merge_system(self, view: SystemView) -> None:
        """Nothing to take from the summaries: the full tenant views are merged per key."""
