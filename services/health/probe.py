"""The probe model and the loop that runs one probe.

A probe answers one question about one dependency. The runner gives each probe its own loop,
interval and hard timeout, so a dependency that hangs delays nobody but itself, and turns
whatever happens (result, timeout, exception) into a ``HealthEvent`` on ``ops.health.<check>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared import HealthEvent, Status, describe, get_logger

log = get_logger(__name__)


class ProbeConfig(BaseModel):
    """One probe's knobs (``OPS_PROBES`` TOML, one table per check; docs/health-probes.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: float = Field(default=5.0, gt=0, le=86_400)
    timeout_s: float = Field(default=2.0, gt=0, le=300)
    # A failing critical check fails the whole system; a non-critical one only warns.
    critical: bool = True
    enabled: bool = True
    # responseTime above this many ms is reported as warn.
    warn_ms: float = Field(default=500.0, gt=0)
    # Thresholds on the observed value (percent for saturations, hours for backup age, ...).
    warn_at: float | None = None
    fail_at: float | None = None
    # s3: also put, get and delete a small canary object.
    canary: bool = False


class ProbeResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: Status
    observed_value: float | None = None
    observed_unit: str | None = None
    output: str = ""
    skipped: bool = False


class Probe(Protocol):
    check: str
    component: str
    measurement: str
    component_type: str
    config: ProbeConfig

    async def run(self) -> ProbeResult: ...


Publish = Callable[[HealthEvent], Awaitable[None]]


def skipped(reason: str) -> ProbeResult:
    return ProbeResult(status=Status.PASS, output=f"skipped: {reason}", skipped=True)


def failed(output: str) -> ProbeResult:
    return ProbeResult(status=Status.FAIL, output=output)


def by_latency(latency_ms: float, config: ProbeConfig, what: str) -> ProbeResult:
    status = Status.WARN if latency_ms > config.warn_ms else Status.PASS
    note = f" (slower than {config.warn_ms:g} ms)" if status is Status.WARN else ""
    return ProbeResult(
        status=status,
        observed_value=round(latency_ms, 3),
        observed_unit="ms",
        output=f"{what} in {latency_ms:.1f} ms{note}",
    )


def by_threshold(value: float, config: ProbeConfig) -> Status:
    """``fail`` at or above ``fail_at``, ``warn`` at or above ``warn_at``, else ``pass``."""
    if config.fail_at is not None and value >= config.fail_at:
        return Status.FAIL
    if config.warn_at is not None and value >= config.warn_at:
        return Status.WARN
    return Status.PASS


async def run_once(probe: Probe, instance: str) -> HealthEvent:
    """Run ``probe`` once under its timeout and describe the outcome as an event."""
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(probe.run(), timeout=probe.config.timeout_s)
    except TimeoutError:
        result = failed(f"timed out after {probe.config.timeout_s:g} s")
    except Exception as exc:  # a probe's failure is a result, never a crash
        result = failed(describe(exc))
    latency_ms = (time.perf_counter() - started) * 1000
    return HealthEvent(
        check=probe.check,
        component=probe.component,
        measurement=probe.measurement,
        component_type=probe.component_type,
        status=result.status,
        observed_value=result.observed_value,
        observed_unit=result.observed_unit,
        latency_ms=round(latency_ms, 3),
        output=result.output[:2048],
        instance=instance,
        critical=probe.config.critical,
        interval_s=probe.config.interval_s,
        skipped=result.skipped,
    )


async def probe_loop(
    probe: Probe, instance: str, publish: Publish, wake: asyncio.Event | None = None
) -> None:
    """Run ``probe`` every ``interval_s`` (measured start to start) until cancelled; setting
    ``wake`` runs it at once (the backups check, when a backup job has just ended)."""
    last: Status | None = None
    while True:
        started = time.monotonic()
        event = await run_once(probe, instance)
        try:
            await publish(event)
        except Exception as exc:
            log.warning("probe.publish_failed", check=probe.check, error=str(exc))
        if event.status is not last:
            log.info("probe.status", check=probe.check, status=event.status, output=event.output)
            last = event.status
        remaining = max(0.0, probe.config.interval_s - (time.monotonic() - started))
        if wake is None:
            await asyncio.sleep(remaining)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=remaining)
        wake.clear()
