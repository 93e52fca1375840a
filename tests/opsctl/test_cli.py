"""``opsctl migrate``, ``opsctl streams check`` and ``opsctl status`` as real commands."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import nats
import pytest

from opsctl._embedded import NatsServer
from opsctl._procs import free_port
from shared import ensure_jetstream
from tests.opsctl.conftest import opsctl

TOKEN = "s3cret-super-admin"



async def test_migrate_applies_then_reports_up_to_date(fresh_database: str) -> None:
    first = await asyncio.to_thread(opsctl, "migrate", DATABASE_URL=fresh_database)
    assert first.returncode == 0, first.stderr
    assert "applied" in first.stdout
    second = await asyncio.to_thread(opsctl, "migrate", DATABASE_URL=fresh_database)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM ops.schema_migrations") >= 1
    finally:
        await conn.close()


async def test_streams_check_reports_missing_streams_then_a_match(tmp_path: Path) -> None:
    server = NatsServer(workdir=tmp_path)
    server.start()
    try:
        before = await asyncio.to_thread(opsctl, "streams", "check", NATS_URL=server.url)
        assert before.returncode == 1, before.stdout + before.stderr
        assert "missing" in before.stdout
        nc = await nats.connect(server.url)
        try:
            await ensure_jetstream(nc.jetstream())
        finally:
            await nc.close()
        after = await asyncio.to_thread(opsctl, "streams", "check", NATS_URL=server.url)
        assert after.returncode == 0, after.stdout + after.stderr
        assert "match" in after.stdout
    finally:
        server.stop()


def test_streams_check_without_nats_exits_2() -> None:
    result = opsctl("streams", "check", NATS_URL=f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "cannot connect" in result.stdout


HEALTH = {
    "status": "fail",
    "checks": {
        "postgres:responseTime": [
            {"status": "fail", "observedValue": 5000, "observedUnit": "ms", "output": "timeout"}
        ],
        "s3:responseTime": [{"status": "pass", "observedValue": 3.2, "observedUnit": "ms"}],
    },
}
SUPER = {
    "status": "fail",
    "services": {"health": {"status": "pass", "instances": 1}, "gateway": {"status": "pass"}},
    "tenants": [{"tenant": "umbrella", "status": "warn", "error_ratio": 0.05}],
}


class _Gateway(BaseHTTPRequestHandler):
    """A stand-in gateway answering the two documents above (the real one is tested e2e)."""

    def do_GET(self) -> None:
        if self.path == "/api/health":
            self._send(503, HEALTH)
        elif self.path == "/super-admin/status":
            ok = self.headers.get("Authorization") == f"Bearer {TOKEN}"
            self._send(200 if ok else 403, SUPER if ok else {"detail": "forbidden"})
        else:
            self._send(404, {})

    def _send(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture()
def gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_status_prints_checks_and_exits_1_on_fail(gateway: str) -> None:
    result = opsctl("status", "--url", gateway)
    assert result.returncode == 1
    assert "postgres:responseTime" in result.stdout
    assert "5000 ms" in result.stdout
    assert "s3:responseTime" in result.stdout


def test_status_with_a_token_shows_the_super_admin_view(gateway: str) -> None:
    result = opsctl("status", "--url", gateway, "--token", TOKEN)
    assert "umbrella" in result.stdout
    assert "gateway" in result.stdout
    assert TOKEN not in result.stdout
    refused = opsctl("status", "--url", gateway, "--token", "wrong")
    assert refused.returncode == 2
    assert "403" in refused.stdout


def test_status_unreachable_exits_2() -> None:
    result = opsctl("status", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "unreachable" in result.stdout


def test_jobs_without_a_token_or_gateway_says_so(tmp_path: Path) -> None:
    no_token = opsctl("jobs", "--workdir", str(tmp_path))
    assert no_token.returncode == 2 and "super-admin token is needed" in no_token.stdout
    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = opsctl("jobs", "--url", dead, "--token", "t")
    assert unreachable.returncode == 2 and "unreachable" in unreachable.stdout
