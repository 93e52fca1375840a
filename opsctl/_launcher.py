"""``opsctl up``: the whole stack on this machine as separate child processes.

Servers first (NATS, PostgreSQL, S3: each external when its env var is set, else embedded under
the workdir), then the ops migrations (and the demo data with ``--demo``), then the demo app and
every service as ``python -m opsctl run <name>``. The supervisor restarts what dies; Ctrl-C or
SIGTERM stops services first, then servers. ``<workdir>/state.json`` says where everything is.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

from rich.console import Console

from shared import configure_logging, scrub

from ._dbsetup import load_demo_data, migrate_database
from ._embedded import HOST, NatsServer, PostgresServer, S3Server, create_bucket
from ._launcher_view import Component, StackView, since_launch
from ._local_auth import local_admin_token, local_keyring
from ._procs import free_port
from ._runner import EXTRA_PROCESSES, SERVICES
from ._supervisor import Policy, ServiceProcess, Supervisor

DEMO_APP = "demo-app"


class Shutdown(Exception):
    """Raised by the signal handler while starting up, to stop at once."""


def available_services() -> list[str]:
    """Services whose ``services/<name>/main.py`` exists (found, not imported: a broken one
    must crash-loop visibly in its own log, not stop ``up``)."""
    found = []
    for name in SERVICES:
        try:
            if importlib.util.find_spec(f"services.{name}.main") is not None:
                found.append(name)
        except ImportError:
            continue
    return found


class Launcher:
    def __init__(
        self,
        workdir: Path,
        *,
        demo: bool = False,
        services: list[str] | None = None,
        console: Console | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.workdir = workdir.resolve()
        self.logs = self.workdir / "logs"
        self.demo = demo
        self.services = available_services() if services is None else services
        self.view = StackView(self.workdir, console or Console(), demo=demo)
        self.sup = Supervisor(self.view.report, policy, on_change=self._write_state)
        self.view.supervisor = self.sup
        self.env: dict[str, str] = {
            k: v for k, v in os.environ.items() if k not in ("OPS_SERVICE_PORT", "OPS_INSTANCE")
        }
        self.env["PYTHONUNBUFFERED"] = "1"  # logs reach the files as they happen
        self._stopping = False
        self._starting = True

    # ---- the whole run -----------------------------------------------------------------
    def run(self) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        if lock is None:
            return 1
        previous = {
            s: signal.signal(s, self._on_signal)
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        code = 0
        try:
            self._start_nats()
            self._start_postgres()
            self._start_s3()
            self._start_processes()
            self._starting = False
            self.view.print_table()
            self._supervise()
        except Shutdown:
            pass
        except Exception as exc:
            self.view.report("error", f"start-up failed: {scrub(str(exc)) or type(exc).__name__}")
            code = 1
        finally:
            self._starting = False
            self._stopping = True
            self.view.report("info", "stopping services, then servers")
            self.sup.stop_all()
            self.view.stopped()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            lock.close()
        return code

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        if self._stopping:
            return  # already stopping: every child has a stop timeout, so this ends
        self._stopping = True
        self.view.report("info", f"received {signal.Signals(signum).name}")
        if self._starting:
            raise Shutdown

    def _lock(self) -> IO[Any] | None:
        """One ``up`` per workdir: two would fight over the same Postgres data directory."""
        handle = open(self.workdir / "opsctl.lock", "a+")  # noqa: SIM115 - held until exit
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            self.view.report("error", f"another `opsctl up` is running in {self.workdir}")
            return None
        return handle

    def _supervise(self) -> None:
        while not self._stopping:
            self.sup.poll()
            self.sup.settle()
            self.view.poll_health()
            time.sleep(0.25)

    def _write_state(self) -> None:
        self.view.write_state()

    # ---- servers -----------------------------------------------------------------------
    def _start_nats(self) -> None:
        url = os.environ.get("NATS_URL")
        if url:
            self.view.add(Component("nats", "server", scrub(url), note="external (NATS_URL)"))
        else:
            nats = NatsServer(workdir=self.workdir, log_dir=self.logs)
            self.sup.start(self.sup.add(nats, "server"))
            url = nats.url
            note = "JetStream" if nats.port == 4222 else "JetStream; 4222 was taken"
            self.view.add(
                Component(
                    "nats",
                    "server",
                    url,
                    nats.port,
                    nats.log_path,
                    note,
                    extra=f"monitor http://{HOST}:{nats.monitor_port}",
                )
            )
        self.env["NATS_URL"] = url

    def _start_postgres(self) -> None:
        dsn = os.environ.get("DATABASE_URL")
        if dsn:
            self.view.add(
                Component("postgres", "server", scrub(dsn), note="external (DATABASE_URL)")
            )
        else:
            pg = PostgresServer(workdir=self.workdir, log_dir=self.logs)
            self.sup.start(self.sup.add(pg, "server"))
            dsn = pg.url
            self.view.add(
                Component(
                    "postgres",
                    "server",
                    dsn,
                    pg.port,
                    pg.log_path,
                    f"data {self.workdir / 'pgdata'}",
                )
            )
        self.env["DATABASE_URL"] = dsn
        self._prepare_database(dsn)

    def _prepare_database(self, dsn: str) -> None:
        try:
            applied = asyncio.run(migrate_database(dsn))
            self.view.report("info", f"ops migrations: {applied or 'up to date'}")
        except Exception as exc:  # services report a broken database; `up` goes on
            self.view.report("error", f"ops migrations failed: {scrub(str(exc))}")
        if self.demo:
            try:
                counts = asyncio.run(load_demo_data(dsn))
                self.view.report(
                    "info", "demo data: " + ", ".join(f"{t} {n}" for t, n in counts.items())
                )
            except Exception as exc:
                self.view.report("error", f"loading the demo schema failed: {scrub(str(exc))}")

    def _start_s3(self) -> None:
        bucket = os.environ.get("S3_BUCKET") or "opsplane-backups"
        region = os.environ.get("AWS_REGION") or "us-east-1"
        url = os.environ.get("S3_ENDPOINT_URL")
        if url:
            self.view.add(Component("s3", "server", url, note=f"external; bucket {bucket}"))
            try:
                create_bucket(url, bucket, region)
            except Exception as exc:  # credentials may not allow it; the s3 check will tell
                self.view.report("warn", f"could not ensure bucket {bucket}: {exc}")
        else:
            # moto accepts any credentials; never hand real ones to a local fake.
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                os.environ[key] = self.env[key] = "testing"
            s3 = S3Server(workdir=self.workdir, log_dir=self.logs)
            # moto keeps buckets in memory: re-create after every (re)start.
            self.sup.start(
                self.sup.add(s3, "server", lambda: create_bucket(s3.url, bucket, region))
            )
            url = s3.url
            self.view.add(
                Component("s3", "server", url, s3.port, s3.log_path, f"moto; bucket {bucket}")
            )
        self.env.update(S3_ENDPOINT_URL=url, S3_BUCKET=bucket, AWS_REGION=region)

    # ---- processes ---------------------------------------------------------------------
    def _start_processes(self) -> None:
        if not self.env.get("OPS_AUTH"):
            auth_path, token_path = local_admin_token(self.workdir)
            self.env["OPS_AUTH"] = str(auth_path)
            self.view.admin_token_path = token_path
        if not self.env.get("OPS_KEYRING"):
            keyring_path, key_path = local_keyring(self.workdir)
            self.env["OPS_KEYRING"] = str(keyring_path)
            self.view.signing_key_path = key_path
        names = ([DEMO_APP] if self.demo else []) + self.services
        ports = {name: self._port_for(name) for name in names}
        if self.demo:
            self.env["WS_URL"] = f"ws://{HOST}:{ports[DEMO_APP]}/ws"
        for name in names:
            port = ports[name]
            env = {**self.env, "OPS_INSTANCE": f"{name}-0"}
            if name == "gateway":
                env.update(OPS_GATEWAY_HOST=HOST, OPS_GATEWAY_PORT=str(port))
            else:
                env.update(OPS_SERVICE_HOST=HOST, OPS_SERVICE_PORT=str(port))
            if name == DEMO_APP and self.view.signing_key_path is not None and "maintenance" in (
                self.services
            ):  # the demo asks for a first backup with the local key (demo/first_backup.py)
                env["DEMO_SIGNING_KEY"] = str(self.view.signing_key_path)
            child = ServiceProcess(
                name,
                [sys.executable, "-m", "opsctl", "run", name],
                env,
                self.logs / f"{name}.log",
                port,
            )
            self.sup.start(self.sup.add(child, "service"))
            self.view.add(
                Component(
                    name,
                    "service",
                    self._url_of(name, port),
                    port,
                    child.log_path,
                    self._port_note(name, port),
                )
            )

    def _port_for(self, name: str) -> int:
        if name == "gateway":
            return free_port(int(os.environ.get("OPS_GATEWAY_PORT") or SERVICES["gateway"]))
        return free_port(SERVICES.get(name) or EXTRA_PROCESSES[name])

    def _url_of(self, name: str, port: int) -> str:
        if name == DEMO_APP:
            return f"ws://{HOST}:{port}/ws"
        base = f"http://{HOST}:{port}"
        if name == "gateway":
            self.view.gateway_url = base
            return f"{base}/api/health"
        return f"{base}/readyz"

    @staticmethod
    def _port_note(name: str, port: int) -> str:
        wanted = (
            int(os.environ.get("OPS_GATEWAY_PORT") or 8080)
            if name == "gateway"
            else SERVICES.get(name) or EXTRA_PROCESSES[name]
        )
        return "" if port == wanted else f"{wanted} was taken"


def up(workdir: Path, *, demo: bool, services: list[str] | None) -> int:
    since_launch()  # pin the fallback clock as early as possible
    # The shared library logs through structlog; here only its warnings belong on the console.
    configure_logging("opsctl", level="WARNING", fmt="console")
    console = Console()
    if not console.is_terminal:  # piped or logged: don't fold the table into 80 columns
        console = Console(width=160)
    return Launcher(workdir, demo=demo, services=services, console=console).run()
