"""``opsctl up`` as a real subprocess with embedded servers: start, restart, stop, no orphan."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import Callable

import asyncpg
import boto3
import httpx
import nats
import pytest
import websockets

from opsctl._launcher import available_services
from shared import Settings
from tests.harness import Servers
from tests.opsctl.conftest import UpProcess, assert_no_survivors

ACTIVE_TIMERS_SQL = Settings.model_fields["active_timers_sql"].default
SERVERS = ["nats", "postgres", "s3"]


async def ws_ping(url: str) -> str:
    async with websockets.connect(url, open_timeout=3) as ws:
        await ws.send("ping")
        return str(await asyncio.wait_for(ws.recv(), timeout=3))


async def wait_ws(url: str, timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            assert await ws_ping(url) == "pong"
            return
        except (OSError, websockets.exceptions.WebSocketException, TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


def bucket_exists(endpoint: str) -> bool:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.head_bucket(Bucket="opsplane-backups")
    return True


def restarted(up: UpProcess, name: str, old_pid: int) -> bool:
    component = up.component(name)
    return (
        component.get("state") == "running"
        and component.get("restarts", 0) >= 1
        and component.get("pid") not in (None, old_pid)
    )


async def test_up_starts_the_stack_and_sigterm_leaves_no_orphan(
    launch_up: Callable[..., UpProcess],
) -> None:
    up = launch_up("--demo", "--services", "")
    state = up.wait_running([*SERVERS, "demo-app"])
    components = state["components"]

    # state.json says "running" as each child starts; the table is printed once all have.
    up.wait(lambda: "Ctrl-C" in up.output(), timeout_s=10, message="the table of the stack")
    output = up.output()
    for name in [*SERVERS, "demo-app", "Ctrl-C"]:
        assert name in output
    nc = await nats.connect(components["nats"]["url"], allow_reconnect=False)
    await nc.flush(timeout=2)
    await nc.close()
    conn = await asyncpg.connect(components["postgres"]["url"])
    try:
        assert await conn.fetchval("SELECT max(version) FROM ops.schema_migrations") >= 1
        tenants = {r["tenant_id"] for r in await conn.fetch(ACTIVE_TIMERS_SQL)}
        assert {"acme", "globex", "initech", "umbrella", "hooli"} <= tenants
    finally:
        await conn.close()
    assert bucket_exists(components["s3"]["url"])
    await wait_ws(components["demo-app"]["url"])

    # A second `up` on the same workdir is refused (it would share the Postgres data dir).
    second = launch_up("--services", "", workdir=up.workdir)
    assert second.wait_exit(20) == 1
    assert "another `opsctl up`" in second.output()

    children = up.descendants()
    assert len(children) >= 4  # 3 servers + demo app, plus postgres's own processes
    groups = {os.getpgid(child.pid) for child in children} | {up.proc.pid}
    up.signal(signal.SIGTERM)
    assert up.wait_exit(30) == 0
    assert_no_survivors(children, groups)
    assert up.state()["running"] is False
    assert "stopping services, then servers" in up.output()
    # Stopped by the launcher, cleanly: uvicorn's graceful shutdown, postgres's fast shutdown
    # (SIGINT) rather than the SIGTERM that PR_SET_PDEATHSIG would have sent.
    logs = up.workdir / "logs"
    assert "Application shutdown complete" in (logs / "demo-app.log").read_text()
    assert "received fast shutdown request" in (logs / "postgres.log").read_text()


async def test_killed_children_are_restarted(launch_up: Callable[..., UpProcess]) -> None:
    up = launch_up("--demo", "--services", "")
    state = up.wait_running([*SERVERS, "demo-app"])
    components = state["components"]
    await wait_ws(components["demo-app"]["url"])

    for name in ("demo-app", "s3", "postgres"):
        old_pid = components[name]["pid"]
        os.kill(old_pid, signal.SIGKILL)
        up.wait(lambda n=name, p=old_pid: restarted(up, n, p), timeout_s=25, message=name)
        # Same address as before: what the services were told keeps working.
        assert up.component(name)["url"] == components[name]["url"]

    await wait_ws(components["demo-app"]["url"])
    assert bucket_exists(components["s3"]["url"])  # moto lost it; re-created after restart
    conn = await asyncpg.connect(components["postgres"]["url"])
    try:
        assert await conn.fetchval("SELECT count(*) FROM tenants") == 5  # data kept
    finally:
        await conn.close()
    up.wait(lambda: "s3 restarted" in up.output(), timeout_s=10, message="the restart reported")
    assert "demo-app exited with code -9" in up.output()

    children = up.descendants()
    groups = {os.getpgid(child.pid) for child in children} | {up.proc.pid}
    up.signal(signal.SIGINT)
    assert up.wait_exit(30) == 0
    assert_no_survivors(children, groups)


async def test_up_uses_external_servers_when_configured(
    launch_up: Callable[..., UpProcess], servers: Servers, fresh_database: str
) -> None:
    up = launch_up(
        "--demo",
        "--services",
        "",
        NATS_URL=servers.nats.url,
        DATABASE_URL=fresh_database,
        S3_ENDPOINT_URL=servers.s3.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    state = up.wait_running(["demo-app"])
    for name in SERVERS:
        assert state["components"][name]["state"] == "external"
        assert state["components"][name]["pid"] is None
    # Only the demo app (and its own children, if any) run under this launcher.
    commands = [" ".join(p.cmdline()) for p in up.descendants()]
    assert commands
    assert all("demo-app" in command for command in commands)
    conn = await asyncpg.connect(fresh_database)
    try:
        assert len(await conn.fetch(ACTIVE_TIMERS_SQL)) == 5
    finally:
        await conn.close()
    up.signal(signal.SIGTERM)
    assert up.wait_exit(30) == 0


@pytest.mark.e2e
async def test_full_stack_answers_health_with_a_postgres_check(
    launch_up: Callable[..., UpProcess],
) -> None:
    assert {"health", "aggregator", "gateway"} <= set(available_services())
    up = launch_up("--demo")
    state = up.wait(
        lambda: up.state().get("health_ready_s"),
        timeout_s=30,
        message="/api/health with a postgres check",
    )
    assert isinstance(state, float)
    gateway = up.state()["gateway_url"]
    body = httpx.get(f"{gateway}/api/health", timeout=2).json()
    assert any(key.startswith("postgres:") for key in body["checks"])
    assert f"status page: {gateway}" in up.output()
    # A local stack gets a super-admin token of its own: the status page works out of the box.
    token_file = up.workdir / "admin-token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    token = token_file.read_text().strip()
    assert token not in (up.workdir / "auth.toml").read_text()  # only its hash is stored
    assert httpx.get(f"{gateway}/super-admin/status", timeout=2).status_code == 401
    admin = httpx.get(f"{gateway}/super-admin/status", auth=("ops", token), timeout=2)
    assert admin.status_code == 200 and admin.json()["status"] in {"pass", "warn", "fail"}

    status = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "opsctl", "status", "--workdir", str(up.workdir)],
        stdout=asyncio.subprocess.PIPE,
        env=up.env,
    )
    stdout, _ = await status.communicate()
    assert status.returncode == 0, stdout.decode()
    assert "postgres:responseTime" in stdout.decode()
    assert "/super-admin/status: HTTP" not in stdout.decode()  # the local token was used

    # ... and a signing key: a maintenance command runs with no flag, no env (NATS and the
    # database of the running stack come from its state.json).
    key_file = up.workdir / "keys" / "local.pem"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert "BEGIN PRIVATE KEY" not in (up.workdir / "keyring.toml").read_text()
    report = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "opsctl", "cmd", "db.report", "--workdir", str(up.workdir),
          "--timeout", "60"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=up.env,
    )
    out, err = await report.communicate()
    assert report.returncode == 0, (out + err).decode()
    assert json.loads(out)["database"]["size_bytes"] > 0
    [job_id] = set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                              err.decode()))

    # `opsctl jobs` lists it (through the gateway, with the local token) and shows its story.
    async def opsctl_jobs(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "opsctl", "jobs", *args, "--workdir", str(up.workdir),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=up.env)
        shown, _ = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, shown.decode()

    code, listed = await opsctl_jobs("--action", "db.*")
    assert code == 0 and job_id in listed and "succeeded" in listed, listed
    code, story = await opsctl_jobs(job_id)
    assert code == 0, story
    assert f"{job_id} db.report: succeeded" in story
    events = story.split("events", 1)[1]
    assert events.index("queued") < events.index("running") < events.index("succeeded")
    assert '"size_bytes"' in story  # the result
    code, missing = await opsctl_jobs(str(uuid.uuid4()))
    assert code == 1 and "no such job" in missing

    # The demo asked for a first backup with the local key: a real pg_dump landed in S3.
    def first_backup() -> dict[str, object] | None:
        listed = httpx.get(f"{gateway}/api/jobs", params={"action": "backup.create"},
                           auth=("ops", token), timeout=2).json()["jobs"]
        done = [j for j in listed if j["state"] in {"succeeded", "failed", "rejected"}]
        return done[0] if done else None
    backup = up.wait(first_backup, timeout_s=60, message="the demo's first backup")
    assert backup["state"] == "succeeded", backup
    assert isinstance(backup["result"], dict) and backup["result"]["label"] == "demo-start"
    # ... and the backups check sees it at once (re-run on the job's end, not in 5 minutes).
    up.wait(lambda: httpx.get(f"{gateway}/api/health", timeout=2).json()["checks"]
            ["backups:age"][0]["status"] == "pass", timeout_s=20, message="backups check pass")

    children = up.descendants()
    groups = {os.getpgid(child.pid) for child in children} | {up.proc.pid}
    up.signal(signal.SIGTERM)
    assert up.wait_exit(30) == 0
    assert_no_survivors(children, groups)
