"""The health service: probes each dependency on its own interval, publishes ``ops.health.*``.

Subscribes: ``ops.ingest.pool`` and ``ops.ingest.ws`` (the app's gauges; bad ones to the DLQ);
``ops.jobs.*`` (a backup job that ended re-runs the backups check at once).
Publishes: ``ops.health.<check>`` (one per probe run), ``ops.heartbeat.health.<instance>``.
State: the latest gauge per app node; every probe result is published and forgotten (the
aggregator keeps the view). Any number of replicas may run: the aggregator keeps the newest
result per check.
"""

from __future__ import annotations

import asyncio
import functools

from faststream.asgi import AsgiFastStream
from faststream.nats import NatsRouter
from pydantic import ValidationError

from shared import (
    DeadLetters,
    HealthEvent,
    InboundMessage,
    JobEvent,
    PoolGauge,
    ServiceRuntime,
    WsGauge,
    make_broker,
    subjects,
    subscribe_raw,
)

from .config import HealthSettings, probe_configs
from .gauges import GaugeBook, PoolProbe, WsConnectionsProbe
from .probe import Probe, ProbeConfig, ProbeResult, failed, probe_loop, skipped
from .probes.backups import BackupsProbe
from .probes.mailgun import DEFAULT_API_BASE, MailgunProbe
from .probes.nats import NatsProbe
from .probes.postgres import PostgresConnectionsProbe, PostgresProbe
from .probes.s3 import S3Probe
from .probes.websocket import WebSocketProbe

SERVICE = "health"


class NotConfigured:
    """A check whose dependency is not configured: reported as ``skipped`` on every interval
    (or as ``fail`` when the dependency is not optional, like the app's database)."""

    def __init__(self, check: str, component: str, reason: str, config: ProbeConfig,
                 *, required: bool = False) -> None:
        self.check, self.component, self.config = check, component, config
        self.measurement, self.component_type = "responseTime", "component"
        self._reason, self._required = reason, required

    async def run(self) -> ProbeResult:
        return failed(self._reason) if self._required else skipped(self._reason)


class Disabled:
    """A check switched off in ``OPS_PROBES``: shown as skipped, never run."""

    def __init__(self, probe: Probe) -> None:
        self.check, self.component, self.config = probe.check, probe.component, probe.config
        self.measurement, self.component_type = probe.measurement, probe.component_type

    async def run(self) -> ProbeResult:
        return skipped("disabled in OPS_PROBES")


def build_probes(
    settings: HealthSettings,
    runtime: ServiceRuntime,
    pools: GaugeBook[PoolGauge],
    sockets: GaugeBook[WsGauge],
) -> list[Probe]:
    configs = probe_configs(settings)
    probes: list[Probe] = []
    dsn = settings.database_dsn() if settings.database_url is not None else None
    if dsn is not None:
        probes += [
            PostgresProbe(dsn, configs["postgres"]),
            PostgresConnectionsProbe(dsn, configs["postgres_connections"]),
            BackupsProbe(dsn, configs["backups"], catalog=settings.backup_catalog),
        ]
    else:
        probes.append(NotConfigured("postgres", "postgres", "DATABASE_URL not set",
                                    configs["postgres"], required=True))
    probes.append(PoolProbe(pools, configs["postgres_pool"]))
    probes.append(
        S3Probe(
            settings.s3_bucket,
            settings.s3_endpoint_url,
            settings.aws_region,
            configs["s3"],
            canary_key=f"{settings.s3_canary_prefix}/{settings.instance}",
        )
    )
    if settings.mailgun_api_key is not None and settings.mailgun_domain:
        probes.append(
            MailgunProbe(
                settings.mailgun_api_key.get_secret_value(),
                settings.mailgun_domain,
                settings.mailgun_api_base or DEFAULT_API_BASE,
                configs["mailgun"],
            )
        )
    else:
        probes.append(NotConfigured("mailgun", "mailgun",
                                    "MAILGUN_API_KEY / MAILGUN_DOMAIN not set", configs["mailgun"]))
    if settings.ws_url:
        probes.append(WebSocketProbe(settings.ws_url, configs["websocket"]))
    else:
        probes.append(NotConfigured("websocket", "websocket", "WS_URL not set",
                                    configs["websocket"]))
    probes.append(WsConnectionsProbe(sockets, configs["websocket_connections"]))
    probes.append(NatsProbe(lambda: runtime.client, configs["nats"]))
    # A disabled check keeps reporting, as skipped: it must not linger in the view as "stale".
    return [probe if probe.config.enabled else Disabled(probe) for probe in probes]


def backup_job_router(wake: asyncio.Event) -> NatsRouter:
    """Re-run the backups check as soon as a backup job ends, not up to an interval later."""
    router = NatsRouter()

    @subscribe_raw(router, subjects.JOBS_ALL)
    async def on_job(msg: InboundMessage) -> None:
        try:
            event = JobEvent.model_validate_json(msg.body)
        except ValidationError:
            return  # the worker's events; not ours to judge (the gateway logs bad ones)
        if event.action.startswith("backup.") and event.state in ("succeeded", "failed"):
            wake.set()

    return router


def gauge_router(
    dead_letters: DeadLetters, pools: GaugeBook[PoolGauge], sockets: GaugeBook[WsGauge]
) -> NatsRouter:
    router = NatsRouter()

    @subscribe_raw(router, subjects.INGEST_POOL)
    async def on_pool(msg: InboundMessage) -> None:
        gauge = await dead_letters.decode_message(PoolGauge, "pool", msg)
        if gauge is not None:
            pools.apply(gauge)

    @subscribe_raw(router, subjects.INGEST_WS)
    async def on_ws(msg: InboundMessage) -> None:
        gauge = await dead_letters.decode_message(WsGauge, "ws", msg)
        if gauge is not None:
            sockets.apply(gauge)

    return router


def create_app(settings: HealthSettings | None = None) -> AsgiFastStream:
    settings = settings if isinstance(settings, HealthSettings) else HealthSettings()
    broker = make_broker(settings, service=SERVICE)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    pools: GaugeBook[PoolGauge] = GaugeBook()
    sockets: GaugeBook[WsGauge] = GaugeBook()
    broker.include_router(gauge_router(DeadLetters(broker), pools, sockets))

    async def publish(event: HealthEvent) -> None:
        await broker.publish(event.to_bytes(), subjects.health(event.check))

    backups_done = asyncio.Event()
    broker.include_router(backup_job_router(backups_done))
    for probe in build_probes(settings, runtime, pools, sockets):
        wake = backups_done if probe.check == "backups" else None
        runtime.add_task(
            f"probe.{probe.check}",
            functools.partial(probe_loop, probe, settings.instance, publish, wake),
        )
    return runtime.asgi()
