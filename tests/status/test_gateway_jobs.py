"""``/api/jobs`` through a real gateway process, fed by job events on the real JetStream."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import nats
import pytest

from shared import ACTIONS, JobEvent, Progress, Status, ensure_jetstream, subjects, utcnow
from tests.conftest import require_tool
from tests.harness import Servers, ServiceProcess, eventually
from tests.status.conftest import purge_views
from tests.status.test_gateway_api import ACME, ADMIN, auth_toml, bearer
from tests.status.views import check, put_views, system_view

# Job ids of this module's own (the session stream also holds other tests' jobs).
EARLY, BACKUP, LIVE, LATE = (str(uuid.uuid4()) for _ in range(4))
T0 = utcnow() - timedelta(minutes=5)


def event(job_id: str, action: str, state: str, minute: int, **extra: object) -> JobEvent:
    return JobEvent.model_validate(
        {"job_id": job_id, "action": action, "state": state,
         "time": T0 + timedelta(minutes=minute), **extra}
    )


async def publish(nats_url: str, *payloads: JobEvent | tuple[str, bytes]) -> None:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        await ensure_jetstream(js)
        for payload in payloads:
            if isinstance(payload, JobEvent):
                await js.publish(subjects.job(payload.job_id), payload.model_dump_json().encode())
            else:
                await js.publish(*payload)
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def gateway(servers: Servers,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServiceProcess]:
    # Published before the gateway starts: it must find them in the stream.
    await publish(
        servers.nats.url,
        event(EARLY, "db.report", "queued", 0),
        event(EARLY, "db.report", "running", 1,
              progress=Progress(done=3, total=7, unit="sections")),
        event(EARLY, "db.report", "succeeded", 2, result={"database": {"size_bytes": 1}}),
        event(BACKUP, "backup.create", "queued", 3),
        event(BACKUP, "backup.create", "failed", 4, error="pg_dump exited 1"),
    )
    await put_views(servers.nats.url, system_view(check("postgres", Status.PASS)))  # for /readyz
    auth = tmp_path_factory.mktemp("auth") / "auth.toml"
    auth.write_text(auth_toml((ADMIN, "super-admin", None), (ACME, "tenant", "acme")))
    env = servers.env(OPS_AUTH=str(auth))
    proc = ServiceProcess("gateway", env, tmp_path_factory.mktemp("logs")).start()
    proc.wait_http("/readyz", timeout_s=15)
    yield proc
    proc.stop()
    await purge_views(servers.nats.url)


def jobs(gateway: ServiceProcess, query: str = "") -> dict[str, dict[str, object]]:
    response = gateway.get(f"/api/jobs{query}", headers=bearer(ADMIN))
    assert response.status_code == 200, response.text
    return {j["job_id"]: j for j in response.json()["jobs"]}


def test_jobs_need_a_super_admin(gateway: ServiceProcess) -> None:
    for path in ("/api/jobs", f"/api/jobs/{EARLY}"):
        assert gateway.get(path).status_code == 401
        assert gateway.get(path, headers=bearer(ACME)).status_code == 403
        assert gateway.get(path, headers=bearer("nope")).status_code == 403


async def test_jobs_published_before_start_show_their_latest_state(
    gateway: ServiceProcess,
) -> None:
    def both() -> dict[str, dict[str, object]] | None:
        listed = jobs(gateway)
        return listed if {EARLY, BACKUP} <= set(listed) else None

    seen = await eventually(both, timeout_s=10, message="jobs from the stream")
    assert seen[EARLY]["state"] == "succeeded"
    assert seen[EARLY]["result"] == {"database": {"size_bytes": 1}}
    assert seen[BACKUP]["state"] == "failed" and seen[BACKUP]["error"] == "pg_dump exited 1"
    ordered = [j for j in jobs(gateway) if j in (EARLY, BACKUP)]
    assert ordered == [BACKUP, EARLY]  # newest first


async def test_filters_by_state_and_action_family(gateway: ServiceProcess) -> None:
    await eventually(lambda: BACKUP in jobs(gateway), timeout_s=10, message="backup job")
    failed = jobs(gateway, "?state=failed")
    assert BACKUP in failed and EARLY not in failed
    family = jobs(gateway, "?action=backup.*")
    assert BACKUP in family and all(j["action"].startswith("backup.") for j in family.values())
    assert EARLY in jobs(gateway, "?action=db.report&state=succeeded")
    assert len(jobs(gateway, "?limit=1")) == 1
    for bad in ("?state=exploded", "?limit=0", "?limit=501", "?action=ops.cmd.>"):
        assert gateway.get(f"/api/jobs{bad}", headers=bearer(ADMIN)).status_code == 422, bad


async def test_a_job_changes_live_and_bad_events_are_ignored(
    gateway: ServiceProcess, servers: Servers
) -> None:
    await publish(servers.nats.url, event(LIVE, "db.vacuum", "running", 5))
    await eventually(lambda: jobs(gateway).get(LIVE, {}).get("state") == "running",
                     timeout_s=10, message="running job")
    # Garbage on a job subject, then an older event of the same job: neither changes anything.
    await publish(servers.nats.url, (subjects.job(LIVE), b"{not json"),
                  event(LIVE, "db.vacuum", "queued", 4),
                  event(LIVE, "db.vacuum", "cancelled", 6, message="cancelled by ops-alice"))
    await eventually(lambda: jobs(gateway).get(LIVE, {}).get("state") == "cancelled",
                     timeout_s=10, message="cancelled job")
    assert gateway.get("/readyz").status_code == 200


async def test_one_job_with_its_history(gateway: ServiceProcess) -> None:
    await eventually(lambda: EARLY in jobs(gateway), timeout_s=10, message="early job")
    detail = gateway.get(f"/api/jobs/{EARLY}", headers=bearer(ADMIN))
    assert detail.status_code == 200
    body = detail.json()
    assert body["job"]["state"] == "succeeded"
    assert [e["state"] for e in body["events"]] == ["queued", "running", "succeeded"]
    assert body["events"][1]["progress"] == {"done": 3, "total": 7, "unit": "sections"}


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "a.b", "*", ">", "x" * 65])
def test_unknown_or_unsafe_job_ids_are_404(gateway: ServiceProcess, job_id: str) -> None:
    response = gateway.get(f"/api/jobs/{job_id}", headers=bearer(ADMIN))
    assert response.status_code == 404, (job_id, response.text)


async def test_the_status_report_lists_recent_jobs(
    gateway: ServiceProcess, servers: Servers
) -> None:
    await publish(servers.nats.url, event(LATE, "db.report", "queued", 7))

    def listed() -> list[str] | None:
        report = gateway.get("/super-admin/status", headers=bearer(ADMIN)).json()
        ids = [j["job_id"] for j in report["jobs"]]
        return ids if LATE in ids else None
    ids = await eventually(listed, timeout_s=10, message="recent jobs on the status report")
    assert len(ids) <= 20



async def test_jobs_on_metrics_pass_promtool(gateway: ServiceProcess) -> None:
    promtool = require_tool("promtool", "prometheus")
    await eventually(lambda: EARLY in jobs(gateway), timeout_s=10, message="early job")
    body = gateway.get("/metrics").text
    check = subprocess.run([promtool, "check", "metrics"], input=body.encode(),
                           capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in body.splitlines() if line.startswith("opsplane_job")}
    assert samples['opsplane_jobs{action="db.report",state="succeeded"}'] >= 1
    assert samples['opsplane_jobs{action="backup.create",state="failed"}'] >= 1
    last = samples['opsplane_job_last_success_timestamp_seconds{action="db.report"}']
    assert last >= (T0 + timedelta(minutes=2)).timestamp()
    labels = {k.split('action="', 1)[1].split('"', 1)[0] for k in samples if 'action="' in k}
    assert labels <= {*ACTIONS, "other"}  # bounded, whatever lands on ops.jobs.*
