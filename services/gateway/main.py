"""The HTTP gateway: serves health and status to orchestrators, operators and scrapers.

Subscribes: KV ``ops_status`` (watch; every key, into ``ViewCache``); ``ops.jobs.*`` (the
latest event of every job, into ``JobIndex``).
Publishes: ``ops.heartbeat.gateway.<instance>``.
State: the latest views and job states in memory; stateless otherwise, so any number of
replicas can run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI

from shared import VERSION, ServiceRuntime, Settings, make_broker

from . import routes_jobs, routes_metrics, routes_probes, routes_status
from .auth import AuthStore
from .cache import ViewCache
from .fast_health import HealthFastPath, HealthRenderer
from .jobs import JobIndex

SERVICE = "gateway"


@dataclass
class Gateway:
    """What the routes need, on ``app.state.gateway``."""

    settings: Settings
    runtime: ServiceRuntime
    cache: ViewCache = field(default_factory=ViewCache)
    auth: AuthStore = field(default_factory=lambda: AuthStore(None))
    jobs: JobIndex = field(default_factory=JobIndex)
    health: HealthRenderer = field(init=False)

    def __post_init__(self) -> None:
        self.health = HealthRenderer(self.cache, self.settings.deployment)

    def broker_connected(self) -> bool:
        return self.runtime.connected()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    broker = make_broker(settings, service=SERVICE)
    # A broken OPS_AUTH stops start-up here (ConfigError), not at the first request.
    gateway = Gateway(settings, ServiceRuntime(SERVICE, settings, broker),
                      auth=AuthStore(settings.auth_path))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.runtime.start()
        watches = [
            asyncio.create_task(gateway.cache.watch(gateway.runtime.status_bucket)),
            asyncio.create_task(gateway.jobs.watch(lambda: gateway.runtime.client)),
        ]
        try:
            yield
        finally:
            for watch in watches:
                watch.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
            await gateway.runtime.stop()

    app = FastAPI(
        title="opsplane gateway",
        version=VERSION,
        description="Health, status and operations endpoints of opsplane.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.include_router(routes_probes.router)
    app.include_router(routes_metrics.router)
    app.include_router(routes_status.router)
    app.include_router(routes_jobs.router)
    # /api/health answered before routing, from pre-rendered bytes (bench/gateway).
    app.add_middleware(HealthFastPath, renderer=gateway.health)
    return app
