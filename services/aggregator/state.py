"""The aggregator's in-memory state and the rules that turn it into the ``system`` view.

Inputs are the latest health event per check and the latest heartbeat per service instance.
Rules (docs/status-views.md, "Rules"):
- a check older than 3 of its intervals is ``warn``, older than 6 is ``fail``;
- a failing critical check fails the system, a failing non-critical one warns;
- a skipped check (not configured) counts as pass and is shown as skipped;
- an instance silent for more than 3 heartbeat intervals is down. A down instance that a newer
  instance of the same service replaced (a restart, a new pod) no longer counts; one that was
  not replaced makes its service ``warn`` until it is forgotten (10 min);
- a service with no live instance is ``fail`` when it is expected (``expected_services``), and
  any service not ``pass`` makes the system ``warn`` (an ops service down is not the app down).
Contributors (tenant summaries, alerts, metrics) fill the rest of the view and may add a status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pydantic import ValidationError

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
# Forget a check silent this long (a probe removed from the code; disabled ones report skipped).
FORGET_CHECK_S = 86_400.0
_STALE_OUTPUT = re.compile(r"^no result for \d+ s \(last: (.*)\)$", re.DOTALL)


class SystemContributor(Protocol):
    """Fills part of the system view (alerts, metrics, tenant summaries) from its own state."""

    def contribute(self, view: SystemView, now: datetime) -> Status | None:
        """Fill ``view`` in place; return a status to fold into the overall one, or ``None``."""

    def merge_system(self, view: SystemView) -> None:
        """Fold in what another aggregator replica wrote (newer data wins)."""


@dataclass
class SystemState:
    expected_services: frozenset[str] = frozenset()
    checks: dict[str, HealthEvent] = field(default_factory=dict)
    instances: dict[tuple[str, str], Heartbeat] = field(default_factory=dict)
    received_at: dict[tuple[str, str], datetime] = field(default_factory=dict)
    contributors: list[SystemContributor] = field(default_factory=list)

    def apply_health(self, event: HealthEvent) -> None:
        current = self.checks.get(event.check)
        if current is None or event.time >= current.time:
            self.checks[event.check] = event

    def apply_heartbeat(self, beat: Heartbeat, received_at: datetime) -> None:
        key = (beat.service, beat.instance)
        self.instances[key] = beat
        # Liveness is judged on our clock, not the sender's: a skewed clock must not hide a death.
        self.received_at[key] = received_at

    # ---- the view ----------------------------------------------------------------------

    def check_views(self, now: datetime) -> dict[str, CheckView]:
        views: dict[str, CheckView] = {}
        for name, event in sorted(self.checks.items()):
            age = max(0.0, (now - event.time).total_seconds())
            if age > FORGET_CHECK_S:
                del self.checks[name]
                continue
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
                    interval_s=beat.interval_s,
                )
            )
        return {
            name: ServiceView(name=name, status=self._service_status(name, instances),
                              instances=sorted(instances, key=lambda i: i.instance))
            for name, instances in sorted(by_service.items())
        }

    def _service_status(self, name: str, instances: list[InstanceView]) -> Status:
        alive = [i for i in instances if i.alive]
        if not alive:
            return Status.FAIL if name in self.expected_services else Status.WARN
        newest_start = max(i.started_at for i in alive)
        lost = [i for i in instances if not i.alive and i.last_seen >= newest_start]
        return Status.WARN if lost else Status.PASS

    def system_view(self, now: datetime) -> SystemView:
        checks = self.check_views(now)
        services = self.service_views(now)
        services_ok = all(s.status is Status.PASS for s in services.values())
        view = SystemView(status=Status.PASS, generated_at=now, checks=checks, services=services)
        statuses = [*(c.status for c in checks.values()),
                    Status.PASS if services_ok else Status.WARN]
        for contributor in self.contributors:
            contributed = contributor.contribute(view, now)
            if contributed is not None:
                statuses.append(contributed)
        if view.last_backup is None and "backups" in checks and not checks["backups"].skipped:
            view.last_backup = backup_summary(checks["backups"])
        view.status = Status.worst(statuses)
        return view

    # ---- merging what another replica wrote ------------------------------------------------

    def merge_system(self, view: SystemView) -> None:
        """Fold a view another replica wrote into our state: newer results per check and
        instance win, so neither replica's next write can take the other's news back."""
        for check in view.checks.values():
            current = self.checks.get(check.check)
            if current is not None and current.time >= check.time:
                continue
            event = _event_of(check)
            if event is not None:
                self.checks[check.check] = event
        for service in view.services.values():
            for inst in service.instances:
                key = (service.name, inst.instance)
                seen = self.received_at.get(key)
                if seen is not None and seen >= inst.last_seen:
                    continue
                self.instances[key] = Heartbeat(
                    service=service.name, instance=inst.instance, version=inst.version,
                    started_at=inst.started_at, time=inst.last_seen, interval_s=inst.interval_s,
                )
                self.received_at[key] = inst.last_seen
        for contributor in self.contributors:
            contributor.merge_system(view)


def _event_of(check: CheckView) -> HealthEvent | None:
    stale = _STALE_OUTPUT.match(check.output)
    try:
        return HealthEvent(
            check=check.check, component=check.component, measurement=check.measurement,
            component_type=check.component_type, status=check.reported,
            observed_value=check.observed_value, observed_unit=check.observed_unit,
            latency_ms=check.latency_ms, output=stale.group(1) if stale else check.output,
            time=check.time, instance=check.instance or "unknown", critical=check.critical,
            interval_s=check.interval_s, skipped=check.skipped,
        )
    except ValidationError:
        return None


def backup_summary(check: CheckView) -> dict[str, object]:
    """``last_backup`` of the system view, from the backups check until the worker reports."""
    return {
        "status": check.status.value,
        "age_hours": check.observed_value,
        "detail": check.output,
        "checked_at": check.time.isoformat(),
    }


def statuses_of_system(view: SystemView) -> dict[tuple[str, str], tuple[Status, str]]:
    """What a transition is computed over: the whole, every check and every service."""
    out: dict[tuple[str, str], tuple[Status, str]] = {("system", "system"): (view.status, "")}
    for name, check in view.checks.items():
        out[("check", name)] = (check.status, check.output)
    for name, service in view.services.items():
        alive = sum(1 for i in service.instances if i.alive)
        out[("service", name)] = (service.status, f"{alive}/{len(service.instances)} alive")
    return out
