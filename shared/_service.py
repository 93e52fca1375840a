"""What every opsplane service shares at run time.

``ServiceRuntime`` wraps a FastStream broker into an ASGI app (``AsgiFastStream``) with:
- ``GET /livez``: the process answers (no dependency checks, so a broker outage never gets a
  healthy pod killed);
- ``GET /readyz``: a real PING/PONG round trip with NATS plus the service's own checks;
- ``GET /metrics``: this process's Prometheus metrics;
- a heartbeat on ``ops.heartbeat.<service>.<instance>`` every ``OPS_HEARTBEAT_INTERVAL``;
- JetStream resources declared at start-up; NATS connect retried until it succeeds.
Background loops (probes, collectors, view writers) are registered with ``add_task`` and are
cancelled on shutdown.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.js.kv import KeyValue
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ._broker import connect_with_retry, round_trip
from ._errors import BrokerError
from ._jetstream import ensure_jetstream, open_status_bucket
from ._logging import get_logger
from ._models import Heartbeat, utcnow
from ._settings import Settings
from ._subjects import heartbeat
from ._version import VERSION

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[tuple[bool, str]]]
TaskFactory = Callable[[], Coroutine[Any, Any, None]]


class ServiceRuntime:
    def __init__(
        self,
        name: str,
        settings: Settings,
        broker: NatsBroker,
        *,
        declare_jetstream: bool = True,
    ) -> None:
        self.name = name
        self.settings = settings
        self.broker = broker
        self.started_at = utcnow()
        self._declare_jetstream = declare_jetstream
        self._task_factories: list[tuple[str, TaskFactory]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._readiness: list[tuple[str, ReadinessCheck]] = []
        self._startup: list[Callable[[], Awaitable[None]]] = []
        self._shutdown: list[Callable[[], Awaitable[None]]] = []
        self.add_task("heartbeat", self._heartbeat_loop)

    def connection(self) -> Client | None:
        """The nats-py client once connected, else None (FastStream keeps it private)."""
        return self.broker._connection

    def connected(self) -> bool:
        client = self.connection()
        return client is not None and client.is_connected

    @property
    def client(self) -> Client:
        """The nats-py client (after start-up)."""
        client = self.connection()
        if client is None:
            raise BrokerError("broker is not connected yet")
        return client

    async def status_bucket(self) -> KeyValue:
        return await open_status_bucket(self.client.jetstream())

    # ---- registration ------------------------------------------------------------------

    def add_task(self, name: str, factory: TaskFactory) -> None:
        """Run ``factory()`` as a background task once the broker is up."""
        self._task_factories.append((name, factory))

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        self._readiness.append((name, check))

    def on_startup(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` after NATS is connected, before subscribers start."""
        self._startup.append(hook)

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._shutdown.append(hook)

    # ---- lifecycle ---------------------------------------------------------------------

    async def _before_broker_start(self) -> None:
        client = await connect_with_retry(self.broker)
        if self._declare_jetstream:
            await ensure_jetstream(client.jetstream(), replicas=self.settings.js_replicas)
        for hook in self._startup:
            await hook()

    async def _after_broker_start(self) -> None:
        for name, factory in self._task_factories:
            task = asyncio.create_task(self._supervised(name, factory), name=f"{self.name}.{name}")
            self._tasks.append(task)
        log.info("service.started", version=VERSION)

    async def _before_broker_stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for hook in reversed(self._shutdown):
            try:
                await hook()
            except Exception as exc:
                log.warning("service.shutdown_hook_failed", error=str(exc))
        log.info("service.stopping")

    async def start(self) -> None:
        """Start outside FastStream's ASGI app (the gateway runs it in FastAPI's lifespan)."""
        await self._before_broker_start()
        await self.broker.start()
        await self._after_broker_start()

    async def stop(self) -> None:
        await self._before_broker_stop()
        await self.broker.stop()

    async def _supervised(self, name: str, factory: TaskFactory) -> None:
        """Run a background loop; if it crashes, log and restart it after a pause."""
        while True:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("service.task_crashed", task=name)
                await asyncio.sleep(1.0)

    async def _heartbeat_loop(self) -> None:
        subject = heartbeat(self.name, self.settings.instance)
        while True:
            beat = Heartbeat(
                service=self.name,
                instance=self.settings.instance,
                version=VERSION,
                started_at=self.started_at,
                interval_s=self.settings.heartbeat_interval_s,
            )
            try:
                await self.broker.publish(beat.to_bytes(), subject)
            except Exception as exc:
                log.warning("heartbeat.failed", error=str(exc))
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    # ---- probes --------------------------------------------------------------------------

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        details: dict[str, str] = {}
        rtt = await round_trip(self.connection(), timeout_s=1.0)
        ready = rtt is not None
        details["nats"] = f"rtt {rtt * 1000:.1f} ms" if rtt is not None else "no round trip"
        for name, check in self._readiness:
            try:
                ok, detail = await asyncio.wait_for(check(), timeout=2.0)
            except Exception as exc:
                ok, detail = False, f"check failed: {type(exc).__name__}"
            ready = ready and ok
            details[name] = detail
        return ready, details

    def asgi(self, extra_routes: list[tuple[str, Any]] | None = None) -> AsgiFastStream:
        runtime = self

        @get(include_in_schema=False)
        async def livez(scope: Any) -> AsgiResponse:
            return _json({"status": "alive", "service": runtime.name}, 200)

        @get(include_in_schema=False)
        async def readyz(scope: Any) -> AsgiResponse:
            ready, details = await runtime.readiness()
            body = {"status": "ready" if ready else "not ready", "checks": details}
            return _json(body, 200 if ready else 503)

        @get(include_in_schema=False)
        async def metrics(scope: Any) -> AsgiResponse:
            return AsgiResponse(
                generate_latest(REGISTRY), 200, {"content-type": CONTENT_TYPE_LATEST}
            )

        return AsgiFastStream(
            self.broker,
            asgi_routes=[
                ("/livez", livez),
                ("/readyz", readyz),
                ("/metrics", metrics),
                *list(extra_routes or []),
            ],
            on_startup=[self._before_broker_start],
            after_startup=[self._after_broker_start],
            on_shutdown=[self._before_broker_stop],
            logger=None,
        )


def _json(body: dict[str, Any], status: int) -> AsgiResponse:
    return AsgiResponse(json.dumps(body).encode(), status, {"content-type": "application/json"})
