"""The gateway's status endpoints and auth, through a real gateway process on real NATS."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.gateway.auth import token_hash
from shared import Status, TenantView
from tests.harness import Servers, ServiceProcess, wait_until
from tests.status.conftest import purge_views
from tests.status.views import check, put_views, system_view

ADMIN, ACME, NEWCO = "admin-token-1", "acme-token-1", "newco-token-1"


def auth_toml(*entries: tuple[str, str, str | None]) -> str:
    lines = []
    for token, role, tenant in entries:
        lines += ["[[tokens]]", f'sha256 = "{token_hash(token)}"', f'role = "{role}"']
        if tenant:
            lines.append(f'tenant = "{tenant}"')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def auth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "auth.toml"
    path.write_text(auth_toml((ADMIN, "super-admin", None), (ACME, "tenant", "acme"),
                              (NEWCO, "tenant", "newco")))
    return path


@pytest.fixture(scope="module")
async def gateway(servers: Servers, auth_file: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServiceProcess]:
    await purge_views(servers.nats.url)
    await put_views(
        servers.nats.url,
        system_view(check("postgres", Status.PASS),
                    check("s3", Status.WARN, critical=False, output="<script>alert(1)</script>"),
                    tenants={"acme": Status.PASS, "slowco": Status.FAIL, "bravo": Status.WARN}),
        [TenantView(tenant_id="acme", status=Status.PASS, metrics={"p95_ms": 12.0}),
         TenantView(tenant_id="slowco", status=Status.FAIL, reasons=["error rate 7%"])],
    )
    env = servers.env(OPS_AUTH=str(auth_file))
    proc = ServiceProcess("gateway", env, tmp_path_factory.mktemp("logs")).start()
    proc.wait_http("/readyz", timeout_s=15)
    yield proc
    proc.stop()
    await purge_views(servers.nats.url)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def test_no_credentials_is_401_with_challenges(gateway: ServiceProcess) -> None:
    for path in ("/super-admin/status", "/api/tenants/acme/health", "/super-admin/status/stream"):
        response = gateway.get(path)
        assert response.status_code == 401, path
        challenge = response.headers["www-authenticate"]
        assert "Basic" in challenge and "Bearer" in challenge


@pytest.mark.parametrize("headers", [
    {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Bearer"},
    {"Authorization": "Token abc"},
])
def test_malformed_credentials_are_401(gateway: ServiceProcess, headers: dict[str, str]) -> None:
    assert gateway.get("/super-admin/status", headers=headers).status_code == 401


def test_wrong_token_or_role_is_403(gateway: ServiceProcess) -> None:
    assert gateway.get("/super-admin/status", headers=bearer("nope")).status_code == 403
    assert gateway.get("/super-admin/status", headers=bearer(ACME)).status_code == 403
    assert gateway.get("/super-admin/status", headers=basic("x", "nope")).status_code == 403


def test_super_admin_json_report(gateway: ServiceProcess) -> None:
    response = gateway.get("/super-admin/status", headers=bearer(ADMIN))
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    report = response.json()
    assert report["status"] == "warn"
    assert [c["check"] for c in report["components"]] == ["s3", "postgres"]  # worst first
    assert [t["tenant_id"] for t in report["tenants"]] == ["slowco", "bravo", "acme"]
    assert report["database"]["status"] == "pass" and report["database"]["latency_ms"] == 1.5
    assert report["view_age_s"] is not None and report["last_backup"] is None


@pytest.mark.parametrize("headers", [basic("admin", ADMIN), basic(ADMIN, "")])
def test_basic_auth_carries_the_token(gateway: ServiceProcess, headers: dict[str, str]) -> None:
    assert gateway.get("/super-admin/status", headers=headers).status_code == 200


def test_html_page_for_browsers_escapes_data(gateway: ServiceProcess) -> None:
    response = gateway.get("/super-admin/status",
                           headers={**bearer(ADMIN), "Accept": "text/html,*/*;q=0.8"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "EventSource(\"/super-admin/status/stream\")" in page
    assert "<script>alert(1)</script>" not in page
    assert "\\u003cscript\\u003ealert(1)" in page


def test_tenant_health_rules(gateway: ServiceProcess) -> None:
    ok = gateway.get("/api/tenants/acme/health", headers=bearer(ACME))
    assert ok.status_code == 200 and ok.json()["tenant_id"] == "acme"
    assert ok.json()["metrics"] == {"p95_ms": 12.0}
    assert gateway.get("/api/tenants/slowco/health", headers=bearer(ACME)).status_code == 403
    assert gateway.get("/api/tenants/ghost/health", headers=bearer(ACME)).status_code == 403
    assert gateway.get("/api/tenants/newco/health", headers=bearer(NEWCO)).status_code == 404
    admin = gateway.get("/api/tenants/slowco/health", headers=bearer(ADMIN))
    assert admin.status_code == 200 and admin.json()["reasons"] == ["error rate 7%"]
    assert gateway.get("/api/tenants/ghost/health", headers=bearer(ADMIN)).status_code == 404
    assert gateway.get("/api/tenants/..%2Fx/health", headers=bearer(ADMIN)).status_code == 404


def test_public_health_has_no_internals(gateway: ServiceProcess) -> None:
    response = gateway.get("/api/health")
    assert response.status_code == 200 and response.json()["status"] == "warn"
    assert response.headers["content-type"].startswith("application/health+json")
    assert "max-age" in response.headers["cache-control"]
    body = response.text
    for secret in ("health-secret-host-1", "alert(1)", "fine", "nats://", "postgresql://"):
        assert secret not in body
    assert set(response.json()["checks"]) == {
        "postgres:responseTime", "s3:responseTime", "opsplane:statusAge"}
    head = httpx.head(gateway.base_url + "/api/health", timeout=5)
    assert head.status_code == 200 and head.content == b""
    # The body carries the view's age, so its length may differ by a digit from the GET's.
    assert abs(int(head.headers["content-length"]) - len(response.content)) <= 8
    assert head.headers["content-type"] == response.headers["content-type"]


def test_auth_file_is_reloaded_when_it_changes(gateway: ServiceProcess, auth_file: Path) -> None:
    original = auth_file.read_text()
    try:
        auth_file.write_text(original + auth_toml(("rotated-token", "super-admin", None)))
        wait_until(lambda: gateway.get("/super-admin/status", headers=bearer("rotated-token"))
                   .status_code == 200, timeout_s=6, message="the new token accepted")
        auth_file.write_text("this is [not toml")  # a broken file keeps the previous tokens
        # Reloads are checked on requests: keep asking until the broken file was read and refused,
        # and the previous tokens must keep working throughout.
        def refused_and_still_served() -> bool:
            assert gateway.get("/super-admin/status", headers=bearer(ADMIN)).status_code == 200
            return "auth.reload_failed" in gateway.log_path.read_text()

        wait_until(refused_and_still_served, timeout_s=6, interval_s=0.2,
                   message="the broken file read and refused")
    finally:
        auth_file.write_text(original)


async def test_stream_pushes_a_change(gateway: ServiceProcess, servers: Servers) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client, \
            client.stream("GET", "/super-admin/status/stream", headers=bearer(ADMIN)) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        first = await next_event(lines)
        assert first["status"] == "warn"
        await put_views(servers.nats.url, system_view(
            check("postgres", Status.FAIL, output="connection refused"),
            check("s3", Status.WARN, critical=False),
            tenants={"acme": Status.PASS, "slowco": Status.FAIL, "bravo": Status.WARN}))
        changed = await next_event(lines)
        while changed["status"] != "fail":
            changed = await next_event(lines)
        assert changed["components"][0]["check"] == "postgres"
    # Put the module's view back for the tests that follow.
    await put_views(servers.nats.url, system_view(
        check("postgres", Status.PASS),
        check("s3", Status.WARN, critical=False, output="<script>alert(1)</script>"),
        tenants={"acme": Status.PASS, "slowco": Status.FAIL, "bravo": Status.WARN}))


async def next_event(lines: AsyncIterator[str]) -> dict[str, object]:
    async for line in lines:
        if line.startswith("data: "):
            return dict(json.loads(line[len("data: "):]))
    raise AssertionError("stream ended")


def test_a_broken_auth_file_stops_start_up(servers: Servers, tmp_path: Path,
                                           logdir: Path) -> None:
    bad = tmp_path / "auth.toml"
    bad.write_text('[[tokens]]\nsha256 = "abc"\nrole = "root"\n')
    proc = ServiceProcess("gateway", servers.env(OPS_AUTH=str(bad)), logdir).start(wait=None)
    assert proc.proc is not None
    code = proc.proc.wait(timeout=30)
    assert code != 0 and "OPS_AUTH" in proc.log_tail(80)

