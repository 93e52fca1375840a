"""Firing and resolved alerts to a real Alertmanager (Debian's prometheus-alertmanager)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from opsctl._procs import free_port
from services.metrics.alerts.alertmanager import AlertmanagerNotifier
from services.metrics.alerts.engine import AlertEngine
from services.metrics.alerts.rules import parse_rules
from tests.harness import wait_until
from tests.metrics.conftest import Alertmanager

RULE = """
[[rule]]
name = "{name}"
expr = "avg_ms_1m"
threshold = 500
scope = "tenant"
keep_firing_for = "0s"
severity = "critical"
summary = "tenant {{tenant}} answers in {{value:.0f}} ms"
labels = {{ team = "core" }}
"""


def ours(am: Alertmanager, name: str) -> list[dict[str, Any]]:
    return [a for a in am.alerts() if a["labels"]["alertname"] == name]  # type: ignore[index]


async def test_firing_is_sent_resent_and_resolved(alertmanager: Alertmanager) -> None:
    name = f"slow_{uuid.uuid4().hex[:6]}"
    engine = AlertEngine(parse_rules(RULE.format(name=name)))
    clock = [1000.0]
    notifier = AlertmanagerNotifier(alertmanager.url, deployment="test", resend_s=30,
                                    clock=lambda: clock[0])
    now = datetime.now(UTC)
    engine.evaluate("tenant.acme", {"avg_ms_1m": 900.0}, now)
    await notifier.notify(engine.firing(), [], now)
    (alert,) = wait_until(lambda: ours(alertmanager, name), timeout_s=10, message="alert in AM")
    assert alert["labels"] == {"alertname": name, "severity": "critical", "scope": "tenant.acme",
                               "tenant": "acme", "deployment": "test", "team": "core"}
    assert alert["annotations"]["summary"] == "tenant acme answers in 900 ms"
    assert alert["status"]["state"] == "active"
    first_end = alert["endsAt"]
    sent = notifier.sent
    await notifier.notify(engine.firing(), [], now)  # not due yet: nothing sent
    assert notifier.sent == sent
    clock[0] += 30  # the re-send period passes
    await notifier.notify(engine.firing(), [], now + timedelta(seconds=5))  # re-sent
    assert notifier.sent == sent + 1
    wait_until(lambda: ours(alertmanager, name)[0]["endsAt"] > first_end, timeout_s=10,
               message="endsAt pushed out by the re-send")
    _, resolved = engine.evaluate("tenant.acme", {"avg_ms_1m": 100.0}, datetime.now(UTC))
    assert len(resolved) == 1
    await notifier.notify(engine.firing(), resolved, datetime.now(UTC))
    wait_until(lambda: not ours(alertmanager, name), timeout_s=10, message="resolved in AM")
    await notifier.close()


async def test_an_unreachable_alertmanager_is_retried(alertmanager: Alertmanager) -> None:
    name = f"slow_{uuid.uuid4().hex[:6]}"
    engine = AlertEngine(parse_rules(RULE.format(name=name)))
    notifier = AlertmanagerNotifier(f"http://127.0.0.1:{free_port()}", deployment="test",
                                    resend_s=60, timeout_s=1.0)
    now = datetime.now(UTC)
    engine.evaluate("tenant.acme", {"avg_ms_1m": 900.0}, now)
    await notifier.notify(engine.firing(), [], now)  # fails quietly
    assert notifier.sent == 0
    notifier.url = f"{alertmanager.url}/api/v2/alerts"  # it is back
    await notifier.notify(engine.firing(), [], now)
    wait_until(lambda: ours(alertmanager, name), timeout_s=10, message="alert after retry")
    _, resolved = engine.evaluate("tenant.acme", {}, datetime.now(UTC))  # the tenant went quiet
    await notifier.notify([], resolved, datetime.now(UTC))
    wait_until(lambda: not ours(alertmanager, name), timeout_s=10, message="resolved")
    await notifier.close()
