"""Alert rules: thresholds over window metrics and gauges, and SLO burn rates (TOML).

``OPS_ALERT_RULES`` names a TOML file; without it the seed's table applies (``DEFAULTS``).
A file replaces the defaults unless it says ``include_defaults = true``.

```toml
[[rule]]
name = "high_latency"          # -> subject ops.alerts.high_latency
expr = "avg_ms_5m"             # <field>_<window> or a gauge (see METRIC_NAMES)
op = ">"                       # > >= < <=
threshold = 500
scope = "global"               # "global", or "tenant": evaluated for each tenant
for = "2m"                     # pending this long before firing
keep_firing_for = "5m"         # stays firing this long after the condition clears
severity = "warning"
summary = "Average response time {value:.0f} ms > {threshold:g} ms ({scope})"
min_count = 20                 # skip while the window has fewer requests (no noise alerts)
labels = { team = "core" }

[[slo]]                        # multiwindow, multi-burn-rate (Google SRE workbook)
name = "availability"          # alerts availability_burn_1h and availability_burn_6h
objective = 0.999              # 5xx count against the budget
scope = "tenant"
# alerts = [{ long = "1h", short = "5m", burn_rate = 14.4, severity = "critical" }, ...]
```
"""

from __future__ import annotations

import operator
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared import ConfigError, WindowStats

WINDOWS = ("1m", "5m", "30m", "1h", "6h")
WINDOW_FIELDS = tuple(f for f in WindowStats.model_fields if f not in ("window_s", "sum_ms"))
GLOBAL_GAUGES = (
    "db_connections",
    "db_max_connections",
    "db_connections_ratio",
    "db_server_connections_ratio",
    "db_pool_ratio",
    "db_size_bytes",
    "ws_connections",
    "active_timers",
    "partitions_reporting",
)
TENANT_GAUGES = ("active_timers",)
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")
DEFAULT_BURN_ALERTS = (
    {"long": "1h", "short": "5m", "burn_rate": 14.4, "severity": "critical", "for": "2m"},
    {"long": "6h", "short": "30m", "burn_rate": 6.0, "severity": "warning", "for": "15m"},
)

DEFAULTS = """
[[rule]]
name = "high_latency"
expr = "avg_ms_5m"
threshold = 500
scope = "global"
for = "2m"
keep_firing_for = "5m"
min_count = 20
summary = "Average API response time {value:.0f} ms > {threshold:g} ms"

[[rule]]
name = "tenant_high_latency"
expr = "avg_ms_5m"
threshold = 500
scope = "tenant"
for = "2m"
keep_firing_for = "5m"
min_count = 20
summary = "Average response time of tenant {tenant}: {value:.0f} ms > {threshold:g} ms"

[[rule]]
name = "high_error_rate"
expr = "error_ratio_5m"
threshold = 0.01
scope = "global"
for = "2m"
keep_firing_for = "5m"
min_count = 50
severity = "critical"
summary = "5xx error rate {value:.2%} > {threshold:.0%}"

[[rule]]
name = "tenant_high_error_rate"
expr = "error_ratio_5m"
threshold = 0.01
scope = "tenant"
for = "2m"
keep_firing_for = "5m"
min_count = 50
summary = "5xx error rate of tenant {tenant}: {value:.2%} > {threshold:.0%}"

[[rule]]
name = "db_connections_high"
expr = "db_connections_ratio"
threshold = 0.8
scope = "global"
for = "2m"
keep_firing_for = "5m"
severity = "critical"
summary = "Database connections at {value:.0%} of the maximum (> {threshold:.0%})"

[[slo]]
name = "availability"
objective = 0.999
scope = "tenant"
min_count = 100
"""


@dataclass(frozen=True)
class Rule:
    """One alert rule. ``evaluate`` returns (condition holds, value shown)."""

    name: str
    scope: str  # "global" | "tenant"
    threshold: float
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    severity: str = "warning"
    summary: str = ""
    min_count: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    expr: str = ""
    op: str = ">"
    # Burn-rate rules: error budget 1 - objective, over a long and a short window.
    objective: float | None = None
    long: str = ""
    short: str = ""

    def evaluate(self, values: Mapping[str, float | None]) -> tuple[bool, float | None]:
        if self.objective is not None:
            return self._burn(values)
        value = values.get(self.expr)
        if value is None:
            return False, None
        window = self.expr.rsplit("_", 1)[-1]
        if self.min_count and (values.get(f"count_{window}") or 0) < self.min_count:
            return False, value
        return OPS[self.op](value, self.threshold), value

    def _burn(self, values: Mapping[str, float | None]) -> tuple[bool, float | None]:
        budget = 1.0 - (self.objective or 0.0)
        long_ratio = values.get(f"error_ratio_{self.long}")
        short_ratio = values.get(f"error_ratio_{self.short}")
        if long_ratio is None or short_ratio is None:
            return False, None
        burn_long, burn_short = long_ratio / budget, short_ratio / budget
        if (values.get(f"count_{self.long}") or 0) < self.min_count:
            return False, round(burn_long, 3)
        return burn_long > self.threshold and burn_short > self.threshold, round(burn_long, 3)

    def describe(self, value: float | None, scope: str) -> str:
        tenant = scope.split(".", 1)[1] if scope.startswith("tenant.") else ""
        try:
            return self.summary.format(
                value=value if value is not None else float("nan"),
                threshold=self.threshold, scope=scope, tenant=tenant, rule=self.name,
            )
        except (KeyError, ValueError, IndexError, TypeError):
            return self.summary


def parse_duration(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.match(str(value).strip()) if isinstance(value, str) and value else None
    if match is None:
        raise ConfigError(f"{where}: not a duration: {value!r} (use e.g. 30s, 2m, 1h30m)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def metric_names(scope: str) -> set[str]:
    gauges = GLOBAL_GAUGES if scope == "global" else TENANT_GAUGES
    return {f"{f}_{w}" for f in WINDOW_FIELDS for w in WINDOWS} | set(gauges)


_RULE_KEYS = {"name", "expr", "op", "threshold", "scope", "for", "keep_firing_for", "severity",
              "summary", "min_count", "labels"}
_SLO_KEYS = {"name", "objective", "scope", "min_count", "labels", "alerts", "summary"}
_BURN_KEYS = {"long", "short", "burn_rate", "severity", "for", "keep_firing_for"}


def _common(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: name must match {_NAME.pattern}")
    scope = raw.get("scope", "global")
    if scope not in ("global", "tenant"):
        raise ConfigError(f"{where}: scope must be 'global' or 'tenant'")
    labels = raw.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ConfigError(f"{where}: labels must be a table of strings")
    min_count = raw.get("min_count", 0)
    if not isinstance(min_count, int) or min_count < 0:
        raise ConfigError(f"{where}: min_count must be a non-negative integer")
    return {"name": name, "scope": scope, "labels": dict(labels), "min_count": min_count}


def _rule(raw: Mapping[str, Any], where: str) -> Rule:
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    common = _common(raw, where)
    expr, op, threshold = raw.get("expr"), raw.get("op", ">"), raw.get("threshold")
    if expr not in metric_names(common["scope"]):
        raise ConfigError(f"{where}: unknown metric {expr!r} for scope {common['scope']}")
    if op not in OPS:
        raise ConfigError(f"{where}: op must be one of {sorted(OPS)}")
    if not isinstance(threshold, int | float) or isinstance(threshold, bool):
        raise ConfigError(f"{where}: threshold must be a number")
    return Rule(
        **common, expr=expr, op=op, threshold=float(threshold),
        for_s=parse_duration(raw.get("for", 0), f"{where}.for"),
        keep_firing_for_s=parse_duration(raw.get("keep_firing_for", 0), f"{where}.keep_firing_for"),
        severity=str(raw.get("severity", "warning")),
        summary=str(raw.get("summary", f"{common['name']}: {{value}} {op} {{threshold}}")),
    )


def _slo(raw: Mapping[str, Any], where: str) -> list[Rule]:
    unknown = set(raw) - _SLO_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    common = _common(raw, where)
    objective = raw.get("objective")
    if not isinstance(objective, float) or not 0.0 < objective < 1.0:
        raise ConfigError(f"{where}: objective must be a fraction, e.g. 0.999")
    rules = []
    for index, alert in enumerate(raw.get("alerts", DEFAULT_BURN_ALERTS)):
        here = f"{where}.alerts[{index}]"
        if not isinstance(alert, dict) or set(alert) - _BURN_KEYS:
            raise ConfigError(f"{here}: keys must be among {sorted(_BURN_KEYS)}")
        long, short = alert.get("long"), alert.get("short")
        if long not in WINDOWS or short not in WINDOWS:
            raise ConfigError(f"{here}: long and short must be among {WINDOWS}")
        burn = alert.get("burn_rate")
        if not isinstance(burn, int | float) or burn <= 0:
            raise ConfigError(f"{here}: burn_rate must be a positive number")
        name = f"{common['name']}_burn_{long}"
        default_summary = (f"{common['name']} SLO {objective:.2%}: burning the error budget at "
                           "{value:.1f}x over " + f"{long} and {short} (> {{threshold:g}}x)")
        rules.append(Rule(
            **{**common, "name": name}, threshold=float(burn), objective=objective,
            long=long, short=short, severity=str(alert.get("severity", "warning")),
            for_s=parse_duration(alert.get("for", 0), f"{here}.for"),
            keep_firing_for_s=parse_duration(alert.get("keep_firing_for", 0), here),
            summary=str(raw.get("summary", default_summary)),
        ))
    return rules


def parse_rules(text: str, where: str = "rules") -> list[Rule]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    unknown = set(raw) - {"rule", "slo", "include_defaults"}
    if unknown:
        raise ConfigError(f"{where}: unknown tables {sorted(unknown)}")
    rules = parse_rules(DEFAULTS, "defaults") if raw.get("include_defaults") else []
    for index, item in enumerate(raw.get("rule", [])):
        rules.append(_rule(item, f"{where}: rule[{index}]"))
    for index, item in enumerate(raw.get("slo", [])):
        rules.extend(_slo(item, f"{where}: slo[{index}]"))
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: duplicate rule names {duplicates}")
    return rules


def load_rules(path: Path | None) -> list[Rule]:
    if path is None:
        return parse_rules(DEFAULTS, "defaults")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"OPS_ALERT_RULES {path}: {exc}") from exc
    return parse_rules(text, f"OPS_ALERT_RULES {path}")
