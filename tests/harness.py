"""The test harness: real servers and real service processes on free loopback ports.

- ``Servers``: nats-server (JetStream), PostgreSQL (pgserver's binaries, or ``DATABASE_URL``)
  and S3 (moto server mode), each stoppable and restartable on the same port for fault tests.
- ``ServiceProcess``: ``python -m opsctl run <service>`` as a real child process, with its log
  kept for the failure message.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from opsctl._embedded import NatsServer, PostgresServer, S3Server, create_bucket
from opsctl._procs import free_port, spawn, stop

REPO = Path(__file__).resolve().parent.parent
BUCKET = "opsplane-backups"


def runtime_dir() -> str:
    """A private XDG_RUNTIME_DIR (platformdirs warns, and warnings are errors, without one)."""
    path = tempfile.mkdtemp(prefix="opsplane-xdg-")
    os.chmod(path, 0o700)
    return path


def no_schedule() -> str:
    """An ``OPS_SCHEDULE`` with no entries: a worker under test runs only what the test sends,
    never a built-in nightly backup because the suite happens to run at 02:00 UTC."""
    path = Path(tempfile.mkdtemp(prefix="opsplane-schedule-")) / "schedule.toml"
    path.write_text("jobs = []\n")
    return str(path)


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout_s: float,
    interval_s: float = 0.1,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``message`` after a while."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        time.sleep(interval_s)
    raise AssertionError(
        f"timed out after {timeout_s}s waiting for {message} (last error: {last_error!r})"
    )


async def eventually(
    predicate: Callable[[], Any], *, timeout_s: float, message: str = "condition"
) -> Any:
    """``wait_until`` for async tests: polls without blocking the event loop."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        await asyncio.sleep(0.01)


@dataclass
class Servers:
    workdir: Path
    nats: NatsServer = field(init=False)
    postgres: PostgresServer | None = field(init=False, default=None)
    s3: S3Server = field(init=False)
    external_database_url: str | None = None

    def __post_init__(self) -> None:
        self.nats = NatsServer(workdir=self.workdir)
        if not self.external_database_url:
            self.postgres = PostgresServer(workdir=self.workdir)
        self.s3 = S3Server(workdir=self.workdir)

    def start(self) -> Servers:
        self.nats.start()
        if self.postgres is not None:
            self.postgres.start()
        self.s3.start()
        create_bucket(self.s3.url, BUCKET)
        return self

    def stop(self) -> None:
        for server in (self.s3, self.postgres, self.nats):
            if server is not None:
                server.stop()

    @property
    def database_url(self) -> str:
        if self.postgres is not None:
            return self.postgres.url
        assert self.external_database_url
        return self.external_database_url

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "NATS_URL": self.nats.url,
            "DATABASE_URL": self.database_url,
            "S3_ENDPOINT_URL": self.s3.url,
            "S3_BUCKET": BUCKET,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "OPS_SCHEDULE": no_schedule(),
        }
        env.update(extra)
        return env


@dataclass
class ServiceProcess:
    service: str
    env: dict[str, str]
    logdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.logdir / f"{self.service}-{self.port}.log"

    def start(self, *, wait: str | None = "/livez", timeout_s: float = 30.0) -> ServiceProcess:
        self.port = self.port or free_port()
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("OPS_", "NATS_", "DATABASE_"))
        }
        env.update(
            {
                "XDG_RUNTIME_DIR": runtime_dir(),
                "OPS_SERVICE_PORT": str(self.port),
                "OPS_GATEWAY_PORT": str(self.port),
            }
        )
        env.update(self.env)
        self.proc = spawn(
            [sys.executable, "-m", "opsctl", "run", self.service],
            env=env,
            log_path=self.log_path,
            cwd=REPO,
        )
        if wait:
            self.wait_http(wait, timeout_s=timeout_s)
        return self

    def wait_http(self, path: str, *, timeout_s: float = 30.0, status: int = 200) -> httpx.Response:
        def ready() -> httpx.Response | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.service} exited {self.proc.returncode}:\n{self.log_tail()}"
                )
            response = httpx.get(self.base_url + path, timeout=1.0)
            return response if response.status_code == status else None

        try:
            return wait_until(
                ready, timeout_s=timeout_s, message=f"{self.service} {path} -> {status}"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.service} log ---\n{self.log_tail()}") from None

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=kwargs.pop("timeout", 5.0), **kwargs)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        code = stop(self.proc, sig=sig, timeout_s=15)
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(sig=signal.SIGKILL)


@contextmanager
def services(
    names: list[str], env: dict[str, str], logdir: Path, wait: dict[str, str] | None = None
) -> Iterator[dict[str, ServiceProcess]]:
    """Start ``names`` as processes; stop them all on exit, whatever happened."""
    started: dict[str, ServiceProcess] = {}
    try:
        for name in names:
            path = (wait or {}).get(name, "/livez")
            started[name] = ServiceProcess(name, env, logdir).start(wait=path)
        yield started
    finally:
        for proc in started.values():
            proc.stop()
