"""``opsctl run <service>``: run one service in the foreground (what a container runs)."""

from __future__ import annotations

import importlib
from typing import Any

import uvicorn

from shared import Settings, configure_logging

# service name -> default port of its /livez, /readyz, /metrics (the gateway uses its own).
SERVICES: dict[str, int] = {
    "health": 8091,
    "metrics": 8092,
    "aggregator": 8093,
    "maintenance": 8094,
    "gateway": 8080,
}
EXTRA_PROCESSES: dict[str, int] = {"demo-app": 8095}


def available() -> list[str]:
    out = []
    for name in SERVICES:
        try:
            importlib.import_module(f"services.{name}.main")
        except ModuleNotFoundError:
            continue
        out.append(name)
    return out


def load_app(name: str) -> Any:
    """The service's ASGI app; each service reads its own settings class from the env."""
    module = importlib.import_module(f"services.{name}.main")
    return module.create_app()


def bind_address(name: str, settings: Settings) -> tuple[str, int]:
    if name == "gateway":
        return settings.gateway_host, settings.gateway_port
    return settings.service_host, settings.service_port or SERVICES.get(name) or EXTRA_PROCESSES[
        name
    ]


def run_service(name: str) -> None:
    settings = Settings()
    configure_logging(
        name, instance=settings.instance, level=settings.log_level, fmt=settings.log_format
    )
    if name == "demo-app":
        from .demo.app import create_app as create_demo_app

        app = create_demo_app(settings)
    else:
        app = load_app(name)
    host, port = bind_address(name, settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep our structlog JSON lines
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
