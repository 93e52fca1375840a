"""Alert states with Prometheus semantics: inactive -> pending -> firing -> resolved.

- The condition holds: an inactive alert becomes ``pending`` (``firing`` at once when
  ``for`` is 0); a pending one fires once it has held for ``for``.
- The condition stops holding (or the scope has no data): a pending alert is dropped (a
  ``resolved`` event closes it on the stream; Alertmanager never heard of it); a firing one
  resolves once the condition has been false for ``keep_firing_for``.

So one bad window never pages: it must persist for ``for``; and one good window never
resolves a real problem early: it must stay good for ``keep_firing_for``. Every transition is
returned as an ``AlertEvent`` whose ``since`` is when the alert entered that state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from shared import AlertEvent

from .rules import Rule


@dataclass
class Instance:
    rule: Rule
    scope: str
    state: str  # "pending" | "firing"
    active_at: datetime
    last_true_at: datetime
    value: float | None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None

    @property
    def since(self) -> datetime:
        if self.resolved_at is not None:
            return self.resolved_at
        return self.fired_at if self.fired_at is not None else self.active_at

    def event(self, state: str | None = None) -> AlertEvent:
        return AlertEvent(
            rule=self.rule.name,
            scope=self.scope,
            state=state or self.state,
            value=self.value,
            threshold=self.rule.threshold,
            since=self.since,
            severity=self.rule.severity,
            summary=self.rule.describe(self.value, self.scope)[:1024],
        )


class AlertEngine:
    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        # scope -> rule name -> instance: views ask "what is active for this scope".
        self._active: dict[str, dict[str, Instance]] = {}

    def rules_for(self, scope_kind: str) -> list[Rule]:
        return [r for r in self.rules if r.scope == scope_kind]

    def evaluate(self, scope: str, values: Mapping[str, float | None], now: datetime
                 ) -> tuple[list[AlertEvent], list[Instance]]:
        """Evaluate every rule of ``scope``'s kind; returns (transitions, resolved instances)."""
        kind = "global" if scope == "global" else "tenant"
        events: list[AlertEvent] = []
        resolved: list[Instance] = []
        for rule in self.rules_for(kind):
            holds, value = rule.evaluate(values)
            event, ended = self._step(rule, scope, holds, value, now)
            if event is not None:
                events.append(event)
            if ended is not None:
                resolved.append(ended)
        return events, resolved

    def _step(self, rule: Rule, scope: str, holds: bool, value: float | None, now: datetime
              ) -> tuple[AlertEvent | None, Instance | None]:
        by_rule = self._active.get(scope)
        current = by_rule.get(rule.name) if by_rule else None
        if holds:
            if current is None:
                current = Instance(rule, scope, "pending", now, now, value)
                self._active.setdefault(scope, {})[rule.name] = current
                if rule.for_s <= 0:
                    current.state, current.fired_at = "firing", now
                return current.event(), None
            current.value, current.last_true_at = value, now
            held_s = (now - current.active_at).total_seconds()
            if current.state == "pending" and held_s >= rule.for_s:
                current.state, current.fired_at = "firing", now
                return current.event(), None
            return None, None
        if current is None:
            return None, None
        if current.state == "firing":
            if value is not None:
                current.value = value
            if (now - current.last_true_at).total_seconds() < rule.keep_firing_for_s:
                return None, None
        self._remove(scope, rule.name)
        was_firing = current.state == "firing"
        current.resolved_at = now
        return current.event("resolved"), current if was_firing else None

    def _remove(self, scope: str, name: str) -> None:
        by_rule = self._active.get(scope)
        if by_rule is not None:
            by_rule.pop(name, None)
            if not by_rule:
                del self._active[scope]

    def active(self, scope: str) -> list[AlertEvent]:
        return [i.event() for i in self._active.get(scope, {}).values()]

    def scopes(self) -> list[str]:
        return list(self._active)

    def firing(self) -> Iterator[Instance]:
        for by_rule in self._active.values():
            for instance in by_rule.values():
                if instance.state == "firing":
                    yield instance
