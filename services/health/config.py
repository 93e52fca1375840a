"""Probe configuration: defaults per check, overridable from a TOML file (``OPS_PROBES``).

```toml
[postgres]
interval_s = 5
timeout_s = 2
critical = true
enabled = true
warn_ms = 250

[s3]
critical = true     # an S3 outage fails the system instead of degrading it
canary = true       # also put/get/delete a canary object

[backups]
warn_at = 26        # hours since the last successful backup
fail_at = 50
```

Every key is checked: an unknown check name or field, or a value of the wrong type, stops the
service at start-up (``ConfigError``) instead of silently probing with defaults.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from shared import ConfigError, Settings

from .probe import ProbeConfig

# What each check is for and why its defaults are what they are: docs/health-probes.md.
DEFAULTS: dict[str, ProbeConfig] = {
    "postgres": ProbeConfig(interval_s=5, timeout_s=2, critical=True, warn_ms=250),
    "postgres_connections": ProbeConfig(
        interval_s=15, timeout_s=2, critical=False, warn_at=80, fail_at=95
    ),
    "postgres_pool": ProbeConfig(interval_s=5, timeout_s=1, critical=False, warn_at=80, fail_at=95),
    "s3": ProbeConfig(interval_s=15, timeout_s=3, critical=False, warn_ms=500),
    "mailgun": ProbeConfig(interval_s=60, timeout_s=5, critical=False, warn_ms=1500),
    "websocket": ProbeConfig(interval_s=10, timeout_s=3, critical=False, warn_ms=500),
    "websocket_connections": ProbeConfig(interval_s=10, timeout_s=1, critical=False),
    "nats": ProbeConfig(interval_s=10, timeout_s=2, critical=False, warn_ms=250, warn_at=80,
                        fail_at=95),
    "backups": ProbeConfig(interval_s=300, timeout_s=5, critical=False, warn_at=26, fail_at=50),
}
CHECKS = tuple(DEFAULTS)


class HealthSettings(Settings):
    probes_path: Path | None = Field(default=None, alias="OPS_PROBES")
    # One knob to speed every probe up (tests, demos) without a file.
    probe_interval_s: float | None = Field(default=None, gt=0, alias="OPS_PROBE_INTERVAL")
    # Prefix of the S3 canary object (``<prefix>/<instance>``).
    s3_canary_prefix: str = Field(default="opsplane-canary", alias="OPS_S3_CANARY_PREFIX")
    # The maintenance worker's backup catalog (docs/health-probes.md, "backups").
    backup_catalog: str = Field(default="ops.backups", alias="OPS_BACKUP_CATALOG")


def parse_probes(raw: dict[str, Any], base: dict[str, ProbeConfig]) -> dict[str, ProbeConfig]:
    configs = dict(base)
    for name, overrides in raw.items():
        if name not in DEFAULTS:
            raise ConfigError(f"OPS_PROBES: unknown check [{name}]; known: {', '.join(CHECKS)}")
        if not isinstance(overrides, dict):
            raise ConfigError(f"OPS_PROBES: [{name}] must be a table")
        merged = {**configs[name].model_dump(), **overrides}
        try:
            configs[name] = ProbeConfig.model_validate(merged)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"OPS_PROBES [{name}]: {problems}") from None
    return configs


def probe_configs(settings: HealthSettings) -> dict[str, ProbeConfig]:
    configs = dict(DEFAULTS)
    if settings.probe_interval_s is not None:
        interval = settings.probe_interval_s
        configs = {
            name: config.model_copy(
                update={"interval_s": interval, "timeout_s": min(config.timeout_s, interval * 4)}
            )
            for name, config in configs.items()
        }
    if settings.probes_path is None:
        return configs
    try:
        raw = tomllib.loads(settings.probes_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"OPS_PROBES {settings.probes_path}: {exc}") from exc
    return parse_probes(raw, configs)
