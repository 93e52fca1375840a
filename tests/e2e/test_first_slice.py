"""The first slice through real processes: probe → NATS → aggregator → KV → gateway → HTTP.

Stop PostgreSQL: ``/api/health`` turns ``fail``/503 within seconds while the gateway keeps
answering fast; start it again: back to ``pass`` with nothing restarted.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.harness import Servers, ServiceProcess, services, wait_until

FAST = {"OPS_PROBE_INTERVAL": "0.5", "OPS_HEARTBEAT_INTERVAL": "0.5"}


def health(gateway: ServiceProcess) -> httpx.Response:
    return gateway.get("/api/health", timeout=2.0)


def postgres_status(gateway: ServiceProcess) -> tuple[int, str, str | None]:
    response = health(gateway)
    body = response.json()
    check = body["checks"].get("postgres:responseTime", [{}])[0].get("status")
    return response.status_code, body["status"], check


def test_postgres_outage_turns_health_fail_and_recovers(
    private_servers: Servers, logdir: Path
) -> None:
    env = private_servers.env(**FAST)
    with services(["health", "aggregator", "gateway"], env, logdir) as procs:
        gateway = procs["gateway"]
        wait_until(
            lambda: postgres_status(gateway) == (200, "pass", "pass"),
            timeout_s=20,
            message="pass with a postgres check",
        )
        response = health(gateway)
        assert response.headers["content-type"].startswith("application/health+json")
        assert "max-age" in response.headers["cache-control"]
        assert gateway.get("/readyz").status_code == 200

        assert private_servers.postgres is not None
        private_servers.postgres.stop()
        stopped_at = time.monotonic()
        wait_until(
            lambda: postgres_status(gateway) == (503, "fail", "fail"),
            timeout_s=10,
            interval_s=0.05,
            message="fail after postgres stopped",
        )
        assert time.monotonic() - stopped_at < 5.0
        # The gateway answers from memory: fast even while the database is down.
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            assert health(gateway).status_code == 503
            timings.append(time.perf_counter() - started)
        assert max(timings) < 0.25, timings

        private_servers.postgres.start()
        wait_until(
            lambda: postgres_status(gateway) == (200, "pass", "pass"),
            timeout_s=15,
            message="pass again after postgres restarted",
        )
        for proc in procs.values():
            assert proc.proc is not None and proc.proc.poll() is None, f"{proc.service} restarted"


def test_every_service_serves_livez_and_a_real_readyz(servers: Servers, logdir: Path) -> None:
    env = servers.env(**FAST)
    with services(["health", "aggregator"], env, logdir) as procs:
        for proc in procs.values():
            assert proc.get("/livez").status_code == 200
            ready = proc.wait_http("/readyz", timeout_s=10)
            assert "rtt" in ready.json()["checks"]["nats"]
            metrics = proc.get("/metrics")
            assert metrics.status_code == 200
            assert "python_gc_objects_collected_total" in metrics.text


def test_services_survive_a_nats_restart(private_servers: Servers, logdir: Path) -> None:
    env = private_servers.env(**FAST)
    with services(["health", "aggregator", "gateway"], env, logdir) as procs:
        gateway, health_svc = procs["gateway"], procs["health"]
        wait_until(lambda: postgres_status(gateway)[1] == "pass", timeout_s=20, message="pass")
        private_servers.nats.stop()
        # Readiness is a real round trip: it must notice the broker is gone.
        wait_until(
            lambda: health_svc.get("/readyz").status_code == 503,
            timeout_s=10,
            message="health not ready without NATS",
        )
        assert health_svc.get("/livez").status_code == 200  # alive: no restart wanted
        private_servers.nats.start()
        wait_until(
            lambda: health_svc.get("/readyz").status_code == 200,
            timeout_s=20,
            message="health ready after NATS came back",
        )
        # Fresh results flow again end to end (a new view, not the cached one).
        before = health(gateway).json()["checks"]["postgres:responseTime"][0]["time"]
        wait_until(
            lambda: health(gateway).json()["checks"]["postgres:responseTime"][0]["time"] != before,
            timeout_s=20,
            message="a new postgres result after the NATS restart",
        )
        assert postgres_status(gateway)[:2] == (200, "pass")
