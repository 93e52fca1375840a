"""The aggregator's in-memory state and the rules that turn it into the ``system`` view.

Inputs are the latest health event per check and the latest heartbeat per service instance.
Rules (docs/decisions.md, "Status"):
- a check older than 3 of its intervals is ``warn``, older than 6 is ``fail``;
- a failing critical check fails the system, a failing non-critical one warns;
- a skipped check (not configured) counts as pass and is shown as skipped;
- an instance silent for more than 3 heartbeat intervals is down; a service with no live
  instance is ``fail`` when it is expected (``expected_services``), else not shown as failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from shared import (
    CheckView,
    HealthEvent,
    Heartbeat,
    InstanceView,
    ServiceView,
    Status,
    SystemView,
    effective_status,
)

STALE_INTERVALS = 3
DEAD_INTERVALS = 6
HEARTBEAT_MISSES = 3
# Forget an instance that has been down this long (a scaled-down replica, a finished pod).
FORGET_INSTANCE_S = 600.0


@dataclass
class SystemState:
    expected_services: frozenset[str] = frozenset()
    checks: dict[str, HealthEvent] = field(default_factory=dict)
    instances: dict[tuple[str, str], Heartbeat] = field(default_factory=dict)
    received_at: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def apply_health(self, event: HealthEvent) -> None:
        current = self.checks.get(event.check)
        if current is None or event.time >= current.time:
            self.checks[event.check] = event

    def apply_heartbeat(self, beat: Heartbeat, received_at: datetime) -> None:
        key = (beat.service, beat.instance)
        self.instances[key] = beat
        # Liveness is judged on our clock, not the sender's: a skewed clock must not hide a death.
        self.received_at[key] = received_at

    def check_views(self, now: datetime) -> dict[str, CheckView]:
        views: dict[str, CheckView] = {}
        for name, event in sorted(self.checks.items()):
            age = max(0.0, (now - event.time).total_seconds())
            status = effective_status(
                event.status,
                critical=event.critical,
                age_s=age,
                stale_after_s=STALE_INTERVALS * event.interval_s,
                dead_after_s=DEAD_INTERVALS * event.interval_s,
            )
            output = event.output
            if age > STALE_INTERVALS * event.interval_s:
                output = f"no result for {age:.0f} s (last: {event.output})"
            views[name] = CheckView(
                check=event.check,
                component=event.component,
                measurement=event.measurement,
                component_type=event.component_type,
                reported=event.status,
                status=status,
                observed_value=event.observed_value,
                observed_unit=event.observed_unit,
                latency_ms=event.latency_ms,
                output=output,
                time=event.time,
                critical=event.critical,
                interval_s=event.interval_s,
                skipped=event.skipped,
                instance=event.instance,
            )
        return views

    def service_views(self, now: datetime) -> dict[str, ServiceView]:
        by_service: dict[str, list[InstanceView]] = {name: [] for name in self.expected_services}
        for key, beat in list(self.instances.items()):
            silent_s = (now - self.received_at[key]).total_seconds()
            if silent_s > FORGET_INSTANCE_S:
                del self.instances[key], self.received_at[key]
                continue
            by_service.setdefault(beat.service, []).append(
                InstanceView(
                    instance=beat.instance,
                    version=beat.version,
                    started_at=beat.started_at,
                    last_seen=self.received_at[key],
                    alive=silent_s <= HEARTBEAT_MISSES * beat.interval_s,
                )
            )
        views = {}
        for name, instances in sorted(by_service.items()):
            alive = any(i.alive for i in instances)
            if alive:
                status = Status.PASS if all(i.alive for i in instances) else Status.WARN
            else:
                status = Status.FAIL if name in self.expected_services else Status.WARN
            views[name] = ServiceView(name=name, status=status, instances=instances)
        return views

    def system_view(self, now: datetime) -> SystemView:
        checks = self.check_views(now)
        services = self.service_views(now)
        # A dead opsplane service degrades the view but does not fail the app's health: the app
        # may be fine while, say, the metrics service restarts.
        services_ok = all(s.status is Status.PASS for s in services.values())
        overall = Status.worst(
            [*(c.status for c in checks.values()), Status.PASS if services_ok else Status.WARN]
        )
        return SystemView(status=overall, generated_at=now, checks=checks, services=services)
