"""Generated requests against the gateway's own OpenAPI document: never a 5xx.

Schemathesis reads ``/openapi.json`` from a real gateway process and sends what it generates
(random tenant ids, headers, credentials), once without credentials and once as a super-admin.
The event stream is left out: with a valid token it streams for minutes by design.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from services.gateway.auth import token_hash
from shared import Status, TenantView
from tests.harness import Servers, ServiceProcess
from tests.status.conftest import purge_views
from tests.status.views import check, put_views, system_view

ADMIN = "fuzz-admin-token"


@pytest.fixture(scope="module")
async def fuzz_gateway(servers: Servers, tmp_path_factory: pytest.TempPathFactory
                       ) -> AsyncIterator[ServiceProcess]:
    await purge_views(servers.nats.url)
    await put_views(servers.nats.url,
                    system_view(check("postgres", Status.PASS), tenants={"acme": Status.WARN}),
                    [TenantView(tenant_id="acme", status=Status.WARN)])
    folder = tmp_path_factory.mktemp("fuzz")
    auth = folder / "auth.toml"
    auth.write_text(f'[[tokens]]\nsha256 = "{token_hash(ADMIN)}"\nrole = "super-admin"\n'
                    f'[[tokens]]\nsha256 = "{token_hash("acme")}"\nrole = "tenant"\n'
                    'tenant = "acme"\n')
    proc = ServiceProcess("gateway", servers.env(OPS_AUTH=str(auth)), Path(folder)).start()
    proc.wait_http("/readyz", timeout_s=15)
    yield proc
    proc.stop()
    await purge_views(servers.nats.url)


@pytest.fixture(scope="module")
def gateway_schema(fuzz_gateway: ServiceProcess) -> Any:
    schema = schemathesis.openapi.from_url(fuzz_gateway.base_url + "/openapi.json")
    return schema.exclude(path="/super-admin/status/stream")


FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def fuzz(schema: Any, headers: dict[str, str]) -> list[str]:
    """Run every operation's generated cases; returns the operations exercised."""
    exercised = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @FUZZ
        def run(case: Any) -> None:
            response = case.call(headers={**(case.headers or {}), **headers}, timeout=5)
            case.validate_response(response, checks=[not_a_server_error])
            if headers:
                assert response.status_code != 401, (case.path, case.headers)

        run()
        exercised.append(f"{operation.method.upper()} {operation.path}")
    return exercised


def test_no_server_error_without_credentials(gateway_schema: Any) -> None:
    exercised = fuzz(gateway_schema, {})
    assert "GET /api/tenants/{tenant_id}/health" in exercised and "GET /api/health" in exercised


def test_no_server_error_as_super_admin(gateway_schema: Any) -> None:
    assert len(fuzz(gateway_schema, {"Authorization": f"Bearer {ADMIN}"})) >= 5
