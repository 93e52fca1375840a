"""The aggregator: builds the status views from events and keeps them in KV ``ops_status``.

Subscribes: ``ops.health.*``, ``ops.heartbeat.*.*``.
Publishes: KV ``ops_status`` key ``system`` (compare-and-set), rejected input on ``ops.dlq.*``.
State: the latest result per check and heartbeat per instance (``SystemState``), in memory;
rebuilt within one probe interval after a restart.
"""

from __future__ import annotations

import asyncio

from faststream.asgi import AsgiFastStream
from pydantic import Field

from shared import (
    SYSTEM_KEY,
    DeadLetters,
    ServiceRuntime,
    Settings,
    get_logger,
    make_broker,
    utcnow,
)

from .handlers import Deps, build_router
from .state import SystemState
from .writer import ViewWriter

SERVICE = "aggregator"
log = get_logger(__name__)


class AggregatorSettings(Settings):
    tick_s: float = Field(default=0.25, alias="OPS_AGGREGATOR_TICK")
    expected_services: str = Field(
        default="health,aggregator,gateway", alias="OPS_EXPECTED_SERVICES"
    )


def create_app(settings: AggregatorSettings | None = None) -> AsgiFastStream:
    settings = settings or AggregatorSettings()
    broker = make_broker(settings, service=SERVICE)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    expected = frozenset(s.strip() for s in settings.expected_services.split(",") if s.strip())
    state = SystemState(expected_services=expected)
    broker.include_router(build_router(Deps(state, DeadLetters(broker))))
    writer: dict[str, ViewWriter] = {}

    async def open_bucket() -> None:
        writer["system"] = ViewWriter(await runtime.status_bucket())

    async def write_views() -> None:
        while True:
            view = state.system_view(utcnow())
            fingerprint = view.model_dump_json(exclude={"generated_at"}).encode()
            if writer["system"].due(SYSTEM_KEY, fingerprint):
                try:
                    await writer["system"].write(SYSTEM_KEY, view.to_bytes(), fingerprint)
                except Exception as exc:  # NATS down: the next tick tries again
                    log.warning("view.write_failed", error=str(exc))
            await asyncio.sleep(settings.tick_s)

    runtime.on_startup(open_bucket)
    runtime.add_task("views", write_views)
    return runtime.asgi()
