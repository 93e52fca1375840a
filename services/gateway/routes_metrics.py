"""``GET /metrics``: Prometheus exposition of the views and jobs plus this process's own metrics."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .exposition import ViewCollector
from .job_metrics import JobCollector

router = APIRouter()


class ExpositionSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    # Opt-in: per-tenant gauges for the N busiest tenants (tenant ids as labels).
    top_tenants: int = Field(default=0, ge=0, le=1000, alias="OPS_METRICS_TOP_TENANTS")


class _ProcessMetrics:
    """This gateway process's own metrics (the default registry), beside the views'."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


@router.get("/metrics", summary="Prometheus metrics (text exposition format)",
            response_class=Response)
async def metrics(request: Request) -> Response:
    state = request.app.state
    settings = getattr(state, "exposition_settings", None)
    if settings is None:
        settings = state.exposition_settings = ExpositionSettings()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ViewCollector(state.gateway.cache, top_tenants=settings.top_tenants))
    registry.register(JobCollector(state.gateway.jobs))
    registry.register(_ProcessMetrics())
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
