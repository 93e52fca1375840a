"""The health service: probes every dependency on its own interval, publishes ``ops.health.<check>``.

Subscribes: nothing yet (app gauges arrive in the probes issue).
Publishes: ``ops.health.<check>`` (one per probe run), ``ops.heartbeat.health.<instance>``.
State: none; every result is published and forgotten (the aggregator keeps the view).
"""

from __future__ import annotations

import functools

from faststream.asgi import AsgiFastStream

from shared import HealthEvent, ServiceRuntime, make_broker, subjects

from .config import HealthSettings, probe_configs
from .probe import Probe, probe_loop
from .probes.postgres import PostgresProbe

SERVICE = "health"


def build_probes(settings: HealthSettings) -> list[Probe]:
    configs = probe_configs(settings)
    probes: list[Probe] = []
    if settings.database_url is not None and configs["postgres"].enabled:
        probes.append(PostgresProbe(settings.database_dsn(), configs["postgres"]))
    return probes


def create_app(settings: HealthSettings | None = None) -> AsgiFastStream:
    settings = settings if isinstance(settings, HealthSettings) else HealthSettings()
    broker = make_broker(settings, service=SERVICE)
    runtime = ServiceRuntime(SERVICE, settings, broker)

    async def publish(event: HealthEvent) -> None:
        await broker.publish(event.to_bytes(), subjects.health(event.check))

    for probe in build_probes(settings):
        runtime.add_task(
            f"probe.{probe.check}", functools.partial(probe_loop, probe, settings.instance, publish)
        )
    return runtime.asgi()
