"""Probe configuration: defaults per probe, overridable from a TOML file (``OPS_PROBES``).

```toml
[postgres]
interval_s = 5
timeout_s = 2
critical = true
enabled = true
warn_ms = 500
```
"""

from __future__ import annotations

import tomllib
from dataclasses import fields, replace
from pathlib import Path

from pydantic import Field

from shared import ConfigError, Settings

from .probe import ProbeConfig

DEFAULTS: dict[str, ProbeConfig] = {
    "postgres": ProbeConfig(interval_s=5.0, timeout_s=2.0, critical=True, warn_ms=250.0),
}


class HealthSettings(Settings):
    probes_path: Path | None = Field(default=None, alias="OPS_PROBES")
    # One knob to speed every probe up (tests, demos) without a file.
    probe_interval_s: float | None = Field(default=None, alias="OPS_PROBE_INTERVAL")


def probe_configs(settings: HealthSettings) -> dict[str, ProbeConfig]:
    configs = dict(DEFAULTS)
    if settings.probe_interval_s is not None:
        configs = {k: replace(v, interval_s=settings.probe_interval_s) for k, v in configs.items()}
    if settings.probes_path is None:
        return configs
    try:
        raw = tomllib.loads(settings.probes_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"OPS_PROBES {settings.probes_path}: {exc}") from exc
    allowed = {f.name for f in fields(ProbeConfig)}
    for name, overrides in raw.items():
        if not isinstance(overrides, dict) or not set(overrides) <= allowed:
            raise ConfigError(f"OPS_PROBES [{name}]: keys must be among {sorted(allowed)}")
        configs[name] = replace(configs.get(name, ProbeConfig()), **overrides)
    return configs
