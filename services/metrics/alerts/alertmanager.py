"""Firing and resolved alerts to Alertmanager (``POST {ALERTMANAGER_URL}/api/v2/alerts``).

As Prometheus does: a firing alert is sent when it fires and re-sent every ``resend_s`` with
``endsAt`` = now + 4 x ``resend_s`` (so Alertmanager resolves it by itself if opsplane dies);
a resolved one is sent with ``endsAt`` = the time it resolved, retried until delivered.
Labels: ``alertname``, ``severity``, ``scope``, ``tenant`` (tenant scope), ``deployment`` and
the rule's own; annotations: ``summary``, ``value``, ``threshold``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import httpx
from prometheus_client import Counter

from shared import get_logger

from .engine import Instance

log = get_logger(__name__)

NOTIFICATIONS = Counter(
    "opsplane_alertmanager_notifications_total", "POSTs to Alertmanager.", ["result"]
)


class AlertmanagerNotifier:
    def __init__(self, base_url: str, *, deployment: str, resend_s: float = 60.0,
                 timeout_s: float = 5.0, max_resolved: int = 10_000,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = base_url.rstrip("/") + "/api/v2/alerts"
        self._deployment = deployment
        self._resend_s = resend_s
        self._clock = clock  # monotonic seconds; injectable so tests need not wait out resend_s
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._last_sent: dict[tuple[str, str], float] = {}
        self._resolved: deque[Instance] = deque(maxlen=max_resolved)
        self.sent = 0

    def payload(self, instance: Instance, now: datetime) -> dict[str, Any]:
        labels = {
            **instance.rule.labels,
            "alertname": instance.rule.name,
            "severity": instance.rule.severity,
            "scope": instance.scope,
            "deployment": self._deployment,
        }
        if instance.scope.startswith("tenant."):
            labels["tenant"] = instance.scope.split(".", 1)[1]
        ends = instance.resolved_at or now + timedelta(seconds=4 * self._resend_s)
        return {
            "labels": labels,
            "annotations": {
                "summary": instance.rule.describe(instance.value, instance.scope),
                "value": "" if instance.value is None else f"{instance.value:g}",
                "threshold": f"{instance.rule.threshold:g}",
            },
            "startsAt": instance.active_at.isoformat(),
            "endsAt": ends.isoformat(),
        }

    async def notify(self, firing: Iterable[Instance], resolved: Iterable[Instance],
                     now: datetime) -> None:
        """Send what is due: new or re-send-due firing alerts, and every resolved one."""
        self._resolved.extend(resolved)
        clock = self._clock()
        firing = list(firing)
        live = {(i.rule.name, i.scope) for i in firing}
        for key in [k for k in self._last_sent if k not in live]:
            del self._last_sent[key]
        due = [i for i in firing
               if clock - self._last_sent.get((i.rule.name, i.scope), -1e18) >= self._resend_s]
        ended = list(self._resolved)
        if not due and not ended:
            return
        body = [self.payload(i, now) for i in due + ended]
        try:
            response = await self._client.post(self.url, json=body)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            NOTIFICATIONS.labels(result="error").inc()
            log.warning("alertmanager.post_failed", error=str(exc), alerts=len(body))
            return
        NOTIFICATIONS.labels(result="ok").inc()
        self.sent += len(body)
        for instance in due:
            self._last_sent[(instance.rule.name, instance.scope)] = clock
        for _ in ended:
            self._resolved.popleft()

    async def close(self) -> None:
        await self._client.aclose()
