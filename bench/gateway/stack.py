"""Shared set-up of the gateway benchmarks: a nats-server, a realistic view, real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import nats

from opsctl._embedded import NatsServer
from opsctl._procs import free_port, spawn, stop
from shared import (
    CheckView,
    InstanceView,
    ServiceView,
    Status,
    SystemView,
    ensure_jetstream,
    open_status_bucket,
    utcnow,
)

REPO = Path(__file__).resolve().parents[2]
CHECKS = ("postgres", "postgres_connections", "postgres_pool", "s3", "mailgun", "websocket",
          "websocket_connections", "nats", "backups")


def realistic_view() -> SystemView:
    now = utcnow()
    checks = {
        name: CheckView(check=name, component=name.split("_")[0], measurement="responseTime"
                        if "_" not in name else name.split("_")[1], component_type="datastore",
                        reported=Status.PASS, status=Status.PASS, observed_value=1.25,
                        observed_unit="ms", latency_ms=2.5, output="SELECT 1 in 1.2 ms",
                        time=now, critical=name == "postgres", instance="health-1")
        for name in CHECKS
    }
    services = {
        name: ServiceView(name=name, status=Status.PASS, instances=[
            InstanceView(instance=f"{name}-1", version="0.1.0", started_at=now, last_seen=now,
                         alive=True)])
        for name in ("health", "aggregator", "gateway", "metrics")
    }
    return SystemView(status=Status.PASS, generated_at=now, checks=checks, services=services)


async def put_view(url: str, view: SystemView) -> None:
    client = await nats.connect(url)
    js = client.jetstream()
    await ensure_jetstream(js)
    await (await open_status_bucket(js)).put("system", view.to_bytes())
    await client.close()


@contextmanager
def nats_server() -> Iterator[NatsServer]:
    with tempfile.TemporaryDirectory(prefix="opsplane-bench-") as tmp:
        server = NatsServer(workdir=Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def env_for(nats_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPS_", "NATS_"))}
    xdg = tempfile.mkdtemp(prefix="opsplane-xdg-")
    os.chmod(xdg, 0o700)
    env.update({"NATS_URL": nats_url, "XDG_RUNTIME_DIR": xdg, "OPS_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path, ready_url: str
            ) -> Iterator[subprocess.Popen[bytes]]:
    proc = spawn(args, env=env, log_path=log, cwd=REPO)
    try:
        deadline = 30.0
        while deadline > 0:
            if proc.poll() is not None:
                raise RuntimeError(f"{args} exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(ready_url, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
            deadline -= 0.1
        else:
            raise RuntimeError(f"{args} not ready: {log.read_text()[-2000:]}")
        yield proc
    finally:
        stop(proc, timeout_s=10)


def service(name: str, env: dict[str, str], logdir: Path) -> tuple[list[str], dict[str, str], int]:
    port = free_port()
    args = [sys.executable, "-m", "opsctl", "run", name]
    return args, {**env, "OPS_SERVICE_PORT": str(port), "OPS_GATEWAY_PORT": str(port)}, port


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
