"""The probe model and the loop that runs one probe.

A probe answers one question about one dependency. The runner gives each probe its own loop,
interval and hard timeout, so a dependency that hangs delays nobody but itself, and turns
whatever happens (result, timeout, exception) into a ``HealthEvent`` on ``ops.health.<check>``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from shared import HealthEvent, Status, describe, get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class ProbeConfig:
    interval_s: float = 5.0
    timeout_s: float = 2.0
    critical: bool = True
    enabled: bool = True
    # responseTime above this many ms is reported as warn.
    warn_ms: float = 500.0


@dataclass(frozen=True)
class ProbeResult:
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
    return ProbeResult(Status.PASS, output=f"skipped: {reason}", skipped=True)


def by_latency(latency_ms: float, config: ProbeConfig, what: str) -> ProbeResult:
    status = Status.WARN if latency_ms > config.warn_ms else Status.PASS
    note = f" (slower than {config.warn_ms:g} ms)" if status is Status.WARN else ""
    return ProbeResult(status, round(latency_ms, 3), "ms", f"{what} in {latency_ms:.1f} ms{note}")


async def run_once(probe: Probe, instance: str) -> HealthEvent:
    """Run ``probe`` once under its timeout and describe the outcome as an event."""
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(probe.run(), timeout=probe.config.timeout_s)
    except TimeoutError:
        result = ProbeResult(Status.FAIL, output=f"timed out after {probe.config.timeout_s:g} s")
    except Exception as exc:  # a probe's failure is a result, never a crash
        result = ProbeResult(Status.FAIL, output=describe(exc))
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
        output=result.output,
        instance=instance,
        critical=probe.config.critical,
        interval_s=probe.config.interval_s,
        skipped=result.skipped,
    )


async def probe_loop(probe: Probe, instance: str, publish: Publish) -> None:
    """Run ``probe`` every ``interval_s`` (measured start to start) until cancelled."""
    while True:
        started = time.monotonic()
        event = await run_once(probe, instance)
        try:
            await publish(event)
        except Exception as exc:
            log.warning("probe.publish_failed", check=probe.check, error=str(exc))
        if event.status is not Status.PASS:
            log.info("probe.result", check=probe.check, status=event.status, output=event.output)
        elapsed = time.monotonic() - started
        await asyncio.sleep(max(0.0, probe.config.interval_s - elapsed))
