"""Alert transitions to JetStream: ``ops.alerts.<rule>`` in stream ``OPS_EVENTS``.

Events queue in order and are published with an acknowledgement; when NATS is down they wait
(bounded, oldest dropped and counted) and go out when it is back. ``Nats-Msg-Id`` is derived
from the transition itself, so a retried publish is stored once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import Counter

from shared import EVENTS_STREAM, AlertEvent, get_logger, subjects

log = get_logger(__name__)

ALERT_EVENTS = Counter(
    "opsplane_alert_events_total", "Alert transitions published.", ["state", "severity"]
)
ALERT_EVENTS_DROPPED = Counter(
    "opsplane_alert_events_dropped_total", "Alert transitions dropped while NATS was down."
)

Publish = Callable[..., Awaitable[Any]]


def message_id(event: AlertEvent) -> str:
    return f"{event.rule}|{event.scope}|{event.state}|{event.since.isoformat()}"


class AlertOutbox:
    def __init__(self, publish: Publish, *, max_pending: int = 10_000) -> None:
        self._publish = publish
        self._queue: deque[AlertEvent] = deque()
        self._max_pending = max_pending
        self.published = 0

    def put(self, events: Iterable[AlertEvent]) -> None:
        for event in events:
            if len(self._queue) >= self._max_pending:
                self._queue.popleft()
                ALERT_EVENTS_DROPPED.inc()
            self._queue.append(event)

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self) -> None:
        while self._queue:
            event = self._queue[0]
            try:
                await self._publish(
                    event.to_bytes(),
                    subjects.alert(event.rule),
                    headers={"Nats-Msg-Id": message_id(event)},
                    stream=EVENTS_STREAM,
                    timeout=2.0,
                )
            except Exception as exc:
                log.warning("alerts.publish_failed", error=str(exc), pending=len(self._queue))
                return
            self._queue.popleft()
            self.published += 1
            ALERT_EVENTS.labels(state=event.state, severity=event.severity).inc()
            # Pending is common and often short-lived (10,000 tenants): debug; the rest info.
            emit = log.debug if event.state == "pending" else log.info
            emit("alert." + event.state, rule=event.rule, scope=event.scope,
                 value=event.value, threshold=event.threshold)
