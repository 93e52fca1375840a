"""End to end through real processes: probes → aggregator → KV → gateway, with real faults.

Stop S3 → the s3 check fails and the system warns (or fails, once S3 is configured critical);
stop the Mailgun fake → warn; kill the health service → shown down; restart → recovers.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from websockets.sync.server import serve as ws_serve

from opsctl._embedded import create_bucket
from opsctl._procs import free_port, spawn, stop, wait_for_port
from services.gateway.auth import token_hash
from shared import (
    HealthEvent,
    Status,
    StatusChange,
    SystemView,
    open_status_bucket,
    publish_pool_gauge,
    publish_ws_gauge,
)
from tests.harness import BUCKET, REPO, Servers, ServiceProcess, services, wait_until

FAST = {"OPS_PROBE_INTERVAL": "0.5", "OPS_HEARTBEAT_INTERVAL": "0.5", "OPS_VIEW_REFRESH": "0.5"}
ADMIN = "e2e-admin-token"
MAILGUN_KEY, MAILGUN_DOMAIN = "key-e2e", "mg.e2e.test"


class MailgunProcess:
    """The fake Mailgun as its own process, so it can be stopped like a real outage."""

    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        self.logdir = logdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MailgunProcess:
        self.proc = spawn([sys.executable, "-m", "tests.status.fakes", "--port", str(self.port),
                           "--key", MAILGUN_KEY, "--domain", MAILGUN_DOMAIN],
                          log_path=self.logdir / "mailgun.log", cwd=REPO)
        wait_for_port("127.0.0.1", self.port, timeout_s=10, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout_s=5)
            self.proc = None


@pytest.fixture()
def ws_url() -> Iterator[str]:
    """A real WebSocket endpoint (echo), standing in for the app's."""

    def echo(ws: Any) -> None:
        for message in ws:
            ws.send(message)

    with ws_serve(echo, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/ws"
        server.shutdown()
    thread.join(timeout=5)


async def publish_gauges(nats_url: str) -> None:
    client = await nats.connect(nats_url)
    await publish_pool_gauge(client, node="app-1", in_use=3, max_size=20)
    await publish_pool_gauge(client, node="app-2", in_use=5, max_size=20)
    await publish_ws_gauge(client, node="app-1", connections=42)
    await client.flush()
    await client.close()


@pytest.fixture()
def mailgun(logdir: Path) -> Iterator[MailgunProcess]:
    fake = MailgunProcess(logdir).start()
    yield fake
    fake.stop()


def stack_env(servers: Servers, mailgun: MailgunProcess, tmp_path: Path, **extra: str
              ) -> dict[str, str]:
    auth = tmp_path / "auth.toml"
    auth.write_text(f'[[tokens]]\nsha256 = "{token_hash(ADMIN)}"\nrole = "super-admin"\n')
    return servers.env(**FAST, OPS_AUTH=str(auth), MAILGUN_API_BASE=mailgun.url,
                       MAILGUN_API_KEY=MAILGUN_KEY, MAILGUN_DOMAIN=MAILGUN_DOMAIN, **extra)


def report(gateway: ServiceProcess) -> dict[str, Any]:
    response = gateway.get("/super-admin/status", headers={"Authorization": f"Bearer {ADMIN}"})
    response.raise_for_status()
    return dict(response.json())


def health(gateway: ServiceProcess) -> tuple[int, str, dict[str, str]]:
    response = gateway.get("/api/health", timeout=2.0)
    body = response.json()
    checks = {key: entries[0]["status"] for key, entries in body["checks"].items()}
    return response.status_code, body["status"], checks


def until(gateway: ServiceProcess, want: tuple[int, str], checks: dict[str, str],
          message: str, timeout_s: float = 15) -> None:
    def ok() -> bool:
        code, status, got = health(gateway)
        return (code, status) == want and all(got.get(k) == v for k, v in checks.items())

    try:
        wait_until(ok, timeout_s=timeout_s, message=message)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast: {health(gateway)}") from None


def test_dependency_outages_through_real_processes(
    private_servers: Servers, mailgun: MailgunProcess, ws_url: str, logdir: Path, tmp_path: Path
) -> None:
    env = stack_env(private_servers, mailgun, tmp_path, WS_URL=ws_url)
    with services(["health", "aggregator", "gateway"], env, logdir) as procs:
        gateway = procs["gateway"]
        until(gateway, (200, "pass"), {"s3:responseTime": "pass", "mailgun:responseTime": "pass",
                                       "postgres:connections": "pass", "nats:responseTime": "pass",
                                       "postgres:responseTime": "pass"}, "all pass")
        first = report(gateway)
        assert {s["name"]: s["status"] for s in first["services"]} == {
            "aggregator": "pass", "gateway": "pass", "health": "pass"}
        skipped = {c["check"] for c in first["components"] if c["skipped"]}
        assert {"backups", "postgres_pool", "websocket_connections"} <= skipped
        assert "websocket" not in skipped
        # The app's gauges arrive over NATS: pool use and open connections become checks.
        asyncio.run(publish_gauges(private_servers.nats.url))
        def components() -> dict[str, dict[str, Any]]:
            return {c["check"]: c for c in report(gateway)["components"]}

        wait_until(lambda: not any(components()[c]["skipped"] for c in
                                   ("postgres_pool", "websocket_connections")),
                   timeout_s=10, message="gauge checks reported")
        until(gateway, (200, "pass"), {"postgres:poolUtilization": "pass",
                                       "websocket:connections": "pass",
                                       "websocket:responseTime": "pass"}, "gauges pass")
        shown = components()
        assert shown["postgres_pool"]["observed_value"] == 20.0  # 8 of 40
        assert shown["websocket_connections"]["observed_value"] == 42.0
        assert report(gateway)["database"]["pool_pct"] == 20.0

        # S3 down: non-critical by default, so the system warns (200) and says why.
        private_servers.s3.stop()
        until(gateway, (200, "warn"), {"s3:responseTime": "warn"}, "warn with S3 down")
        s3 = next(c for c in report(gateway)["components"] if c["check"] == "s3")
        assert s3["reported"] == "fail" and "connect" in s3["output"].lower()
        private_servers.s3.start()
        create_bucket(private_servers.s3.url, BUCKET)  # moto keeps nothing across a restart
        until(gateway, (200, "pass"), {"s3:responseTime": "pass"}, "pass with S3 back")

        # Mailgun fake down: warn; back: pass.
        mailgun.stop()
        until(gateway, (200, "warn"), {"mailgun:responseTime": "warn"}, "warn, Mailgun down")
        mailgun.start()
        until(gateway, (200, "pass"), {"mailgun:responseTime": "pass"}, "pass, Mailgun back")

        # Kill the health service: shown down (and its checks go stale: the system fails).
        procs["health"].kill()
        wait_until(lambda: next(s for s in report(gateway)["services"]
                                if s["name"] == "health")["status"] == "fail",
                   timeout_s=10, message="health shown down")
        dead = next(s for s in report(gateway)["services"] if s["name"] == "health")
        assert [i["alive"] for i in dead["instances"]] == [False]
        until(gateway, (503, "fail"), {}, "fail once the probes' results are stale")

        # Restart it, now with S3 configured critical: recovers, then an S3 outage fails.
        probes = tmp_path / "probes.toml"
        probes.write_text("[s3]\ncritical = true\ntimeout_s = 1\n")
        procs["health"] = ServiceProcess("health", {**env, "OPS_PROBES": str(probes)},
                                         logdir).start()
        until(gateway, (200, "pass"), {"s3:responseTime": "pass"}, "pass after the restart")
        services_now = {s["name"]: s for s in report(gateway)["services"]}
        assert services_now["health"]["status"] == "pass"  # the dead one was replaced
        private_servers.s3.stop()
        until(gateway, (503, "fail"), {"s3:responseTime": "fail"}, "fail: S3 is critical now")


async def test_two_aggregator_replicas_never_clobber_each_other(
    fresh_views: Servers, logdir: Path
) -> None:
    env = fresh_views.env(**FAST, OPS_AGGREGATOR_TICK="0.02",
                          OPS_EXPECTED_SERVICES="aggregator")
    replicas = [ServiceProcess("aggregator", env, logdir) for _ in range(2)]
    try:
        for replica in replicas:
            replica.start()
        await race_two_replicas(fresh_views.nats.url)
        counts = [metric(r, "opsplane_view_writes_total") for r in replicas]
        conflicts = sum(metric(r, "opsplane_view_conflicts_total") for r in replicas)
        assert all(c > 0 for c in counts) and conflicts > 0, (counts, conflicts)
    finally:
        for replica in replicas:
            replica.stop()


def metric(proc: ServiceProcess, name: str) -> float:
    for line in proc.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported by {proc.service}")


async def race_two_replicas(nats_url: str) -> None:
    client = await nats.connect(nats_url)
    kv = await open_status_bucket(client.jetstream())
    seen: list[float] = []
    changes: list[StatusChange] = []

    async def on_change(msg: Any) -> None:
        change = StatusChange.model_validate_json(msg.data)
        if change.kind == "check" and change.name == "synthetic":
            changes.append(change)

    await client.subscribe("ops.status.check.synthetic", cb=on_change)
    watcher = await kv.watch("system")

    async def watch() -> None:
        while True:
            entry = await watcher.updates(timeout=5)
            if entry is None or entry.value is None:
                continue
            view = SystemView.model_validate_json(entry.value)
            synthetic = view.checks.get("synthetic")
            if synthetic is not None and synthetic.observed_value is not None:
                seen.append(synthetic.observed_value)
            if view.services.get("aggregator") and len(view.services["aggregator"].instances) == 2:
                seen.append(-1.0)  # marker: the view knows both replicas

    watching = asyncio.create_task(watch())
    for i in range(300):
        status = Status.WARN if (i // 25) % 2 else Status.PASS
        event = HealthEvent(check="synthetic", component="synthetic", status=status,
                            observed_value=float(i), critical=False, instance="t",
                            interval_s=30)
        await client.publish("ops.health.synthetic", event.to_bytes())
        await asyncio.sleep(0.005)
    await client.flush()
    deadline = asyncio.get_running_loop().time() + 10
    # Until the last event is in a view and the second replica's heartbeat has been folded.
    while ((not seen or max(seen) < 299 or -1.0 not in seen)
           and asyncio.get_running_loop().time() < deadline):
        await asyncio.sleep(0.05)
    watching.cancel()
    await client.close()

    values = [v for v in seen if v >= 0]
    assert -1.0 in seen, "the view never listed both aggregator replicas"
    assert values and values[-1] == 299.0, values[-10:]
    regressions = [(a, b) for a, b in itertools.pairwise(values) if b < a]
    assert not regressions, f"a replica took back newer news: {regressions[:5]}"
    # Transitions form one chain: each starts where the previous ended (no duplicates).
    assert len(changes) >= 2
    for before, after in itertools.pairwise(changes):
        assert after.previous == before.status, [(c.previous, c.status) for c in changes]
    assert len({c.revision for c in changes}) == len(changes)


def test_a_broken_probes_file_stops_the_health_service(
    servers: Servers, tmp_path: Path, logdir: Path
) -> None:
    probes = tmp_path / "probes.toml"
    probes.write_text("[postgress]\ncritical = false\n")
    proc = ServiceProcess("health", servers.env(OPS_PROBES=str(probes)), logdir).start(wait=None)
    assert proc.proc is not None
    assert proc.proc.wait(timeout=30) != 0
    assert "unknown check [postgress]" in proc.log_tail(80)
