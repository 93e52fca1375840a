"""Alert rules (TOML), Prometheus state semantics, burn rates and the JetStream outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.metrics.alerts.engine import AlertEngine
from services.metrics.alerts.outbox import AlertOutbox, message_id
from services.metrics.alerts.rules import load_rules, parse_duration, parse_rules
from shared import ConfigError

T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_defaults_are_the_seed_table() -> None:
    rules = {r.name: r for r in load_rules(None)}
    assert rules["high_latency"].expr == "avg_ms_5m" and rules["high_latency"].threshold == 500
    assert rules["tenant_high_latency"].scope == "tenant"
    assert rules["db_connections_high"].expr == "db_connections_ratio"
    assert rules["db_connections_high"].threshold == 0.8
    assert rules["high_error_rate"].expr == "error_ratio_5m"
    assert rules["high_error_rate"].threshold == 0.01
    fast, slow = rules["availability_burn_1h"], rules["availability_burn_6h"]
    assert (fast.long, fast.short, fast.threshold) == ("1h", "5m", 14.4)
    assert (slow.long, slow.short, slow.threshold) == ("6h", "30m", 6.0)
    assert all(r.for_s > 0 for r in rules.values())


def test_a_rules_file_replaces_or_extends_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rule]]\nname = "timers"\nexpr = "active_timers"\nop = "<"\n'
                    'threshold = 1\nfor = "1m30s"\nscope = "tenant"\n')
    (only,) = load_rules(path)
    assert (only.name, only.op, only.for_s, only.scope) == ("timers", "<", 90.0, "tenant")
    path.write_text("include_defaults = true\n" + path.read_text())
    assert len(load_rules(path)) == len(load_rules(None)) + 1


@pytest.mark.parametrize("text, message", [
    ('[[rule]]\nname = "x"\nexpr = "avg_ms_5m"\nthreshold = 1\ncolour = 1\n', "unknown keys"),
    ('[[rule]]\nname = "x"\nexpr = "nope"\nthreshold = 1\n', "unknown metric"),
    ('[[rule]]\nname = "x"\nexpr = "db_size_bytes"\nthreshold = 1\nscope = "tenant"\n',
     "unknown metric"),
    ('[[rule]]\nname = "x"\nexpr = "avg_ms_5m"\nthreshold = 1\nfor = "soon"\n', "duration"),
    ('[[rule]]\nname = "x y"\nexpr = "avg_ms_5m"\nthreshold = 1\n', "name"),
    ('[[rule]]\nname = "x"\nexpr = "avg_ms_5m"\nthreshold = "1"\n', "threshold"),
    ('[[rule]]\nname = "x"\nexpr = "avg_ms_5m"\nthreshold = 1\nop = "=="\n', "op must"),
    ('[[slo]]\nname = "a"\nobjective = 1.5\n', "objective"),
    ('[[slo]]\nname = "a"\nobjective = 0.9\nalerts = [{ long = "2h", short = "5m", '
     'burn_rate = 2 }]\n', "long and short"),
    ('[[rule]]\nname = "x"\nexpr = "avg_ms_5m"\nthreshold = 1\n[[rule]]\nname = "x"\n'
     'expr = "avg_ms_1m"\nthreshold = 1\n', "duplicate"),
    ("[[rule]\n", "rules"),
    ("[surprise]\n", "unknown tables"),
])
def test_bad_rules_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rules(text)


def test_missing_rules_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_rules(tmp_path / "absent.toml")


def test_durations() -> None:
    assert parse_duration("1h30m", "x") == 5400 and parse_duration(2, "x") == 2.0
    assert parse_duration("0.5s", "x") == 0.5
    with pytest.raises(ConfigError):
        parse_duration(-1, "x")


RULE = """
[[rule]]
name = "slow"
expr = "avg_ms_1m"
threshold = 500
scope = "tenant"
for = "30s"
keep_firing_for = "20s"
severity = "critical"
min_count = 10
summary = "{tenant}: {value:.0f} ms"
"""


def values(avg: float | None, count: int = 100) -> dict[str, float | None]:
    return {"avg_ms_1m": avg, "count_1m": float(count)}


def states(engine: AlertEngine, scope: str) -> list[str]:
    return [a.state for a in engine.active(scope)]


def test_pending_then_firing_then_resolved_after_keep_firing_for() -> None:
    engine = AlertEngine(parse_rules(RULE))
    scope = "tenant.acme"
    events, _ = engine.evaluate(scope, values(900), at(0))
    assert [(e.state, e.since) for e in events] == [("pending", at(0))]
    assert engine.evaluate(scope, values(950), at(20))[0] == []  # still pending
    events, _ = engine.evaluate(scope, values(950), at(30))
    assert [(e.state, e.since, e.value) for e in events] == [("firing", at(30), 950)]
    assert events[0].summary == "acme: 950 ms" and events[0].severity == "critical"
    # Good again: keeps firing for keep_firing_for, then resolves (one event, once).
    assert engine.evaluate(scope, values(100), at(40))[0] == []
    assert states(engine, scope) == ["firing"]
    events, resolved = engine.evaluate(scope, values(100), at(61))
    assert [(e.state, e.since) for e in events] == [("resolved", at(61))]
    assert [i.rule.name for i in resolved] == ["slow"]
    assert engine.active(scope) == [] and engine.evaluate(scope, values(100), at(70))[0] == []


def test_one_bad_window_never_fires() -> None:
    engine = AlertEngine(parse_rules(RULE))
    for second, avg in [(0, 100), (5, 2000), (10, 100), (15, 2000), (20, 100), (60, 100)]:
        events, resolved = engine.evaluate("tenant.acme", values(avg), at(second))
        assert all(e.state != "firing" for e in events) and not resolved
    # A pending alert that clears is closed on the stream but never reached Alertmanager.


def test_a_short_dip_does_not_resolve_a_firing_alert() -> None:
    engine = AlertEngine(parse_rules(RULE))
    engine.evaluate("tenant.acme", values(900), at(0))
    engine.evaluate("tenant.acme", values(900), at(30))
    assert engine.evaluate("tenant.acme", values(100), at(35))[0] == []
    assert engine.evaluate("tenant.acme", values(900), at(45))[0] == []  # back: reset
    assert engine.evaluate("tenant.acme", values(100), at(60))[0] == []  # 15 s < 20 s
    assert states(engine, "tenant.acme") == ["firing"]


def test_no_data_and_too_few_requests_do_not_alert() -> None:
    engine = AlertEngine(parse_rules(RULE.replace('"30s"', '"0s"')))
    assert engine.evaluate("tenant.acme", values(None), at(0))[0] == []
    assert engine.evaluate("tenant.acme", values(5000, count=3), at(0))[0] == []
    events, _ = engine.evaluate("tenant.acme", values(5000), at(0))
    assert [e.state for e in events] == ["firing"]  # for = 0: straight to firing
    assert engine.evaluate("global", values(5000), at(0))[0] == []  # tenant rules only


SLO = """
[[slo]]
name = "availability"
objective = 0.999
scope = "tenant"
min_count = 100
"""


def slo_values(ratios: dict[str, float], count: int = 1000) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"error_ratio_{w}": r for w, r in ratios.items()}
    out.update({f"count_{w}": float(count) for w in ratios})
    return out


def test_multiwindow_burn_rates() -> None:
    rules = {r.name: r for r in parse_rules(SLO)}
    fast, slow = rules["availability_burn_1h"], rules["availability_burn_6h"]
    # 2 % errors = 20x the 0.1 % budget over both windows: the page fires.
    assert fast.evaluate(slo_values({"1h": 0.02, "5m": 0.02})) == (True, 20.0)
    # The long window burns, but the short one has recovered: no page (it is over).
    assert fast.evaluate(slo_values({"1h": 0.02, "5m": 0.0005}))[0] is False
    # A short spike alone does not page either.
    assert fast.evaluate(slo_values({"1h": 0.001, "5m": 0.5}))[0] is False
    assert slow.evaluate(slo_values({"6h": 0.007, "30m": 0.008})) == (True, 7.0)
    assert slow.evaluate(slo_values({"6h": 0.005, "30m": 0.008}))[0] is False
    assert fast.evaluate(slo_values({"1h": 0.5, "5m": 0.5}, count=10))[0] is False
    assert fast.severity == "critical" and slow.severity == "warning"
    assert "99.90%" in fast.describe(20.0, "tenant.acme")


async def test_outbox_keeps_events_in_order_until_nats_takes_them() -> None:
    engine = AlertEngine(parse_rules(RULE.replace('"30s"', '"0s"')))
    sent: list[tuple[str, dict[str, Any]]] = []
    fail = {"on": True}

    async def publish(body: bytes, subject: str, **kwargs: Any) -> None:
        if fail["on"]:
            raise ConnectionError("nats down")
        sent.append((subject, kwargs))

    outbox = AlertOutbox(publish, max_pending=3)
    for second, avg in [(0, 900), (30, 100), (60, 900), (90, 100)]:
        events, _ = engine.evaluate("tenant.acme", values(avg), at(second))
        outbox.put(events)
    await outbox.flush()
    assert outbox.pending == 3 and not sent  # bounded: the oldest was dropped
    fail["on"] = False
    await outbox.flush()
    assert outbox.pending == 0
    assert [s for s, _ in sent] == ["ops.alerts.slow"] * 3
    assert [kw["stream"] for _, kw in sent] == ["OPS_EVENTS"] * 3
    ids = [kw["headers"]["Nats-Msg-Id"] for _, kw in sent]
    assert len(set(ids)) == 3 and ids[1].startswith("slow|tenant.acme|firing|")


def test_message_ids_are_stable() -> None:
    engine = AlertEngine(parse_rules(RULE.replace('"30s"', '"0s"')))
    (event,), _ = engine.evaluate("tenant.acme", values(900), at(0))
    assert message_id(event) == message_id(event.model_copy())
