"""Session-wide real servers, started once: nats-server, PostgreSQL, moto S3.

Tests that stop or restart a server use ``private_servers`` (their own set), so a fault test
never disturbs the others. ``DATABASE_URL`` in the environment points the shared set at an
external PostgreSQL instead of an embedded one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Servers, runtime_dir

os.environ.setdefault("XDG_RUNTIME_DIR", runtime_dir())
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str, package: str) -> str:
    """The path of Debian tool ``name``; skip locally when missing, but never under CI=true."""
    path = shutil.which(name)
    if path:
        return path
    if IN_CI:
        pytest.fail(
            f"{name} is required under CI=true (apt package {package}); .ci/run installs it"
        )
    pytest.skip(f"{name} not installed (apt-get install {package}); CI installs it")


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    workdir = tmp_path_factory.mktemp("servers")
    started = Servers(workdir, external_database_url=os.environ.get("DATABASE_URL")).start()
    yield started
    started.stop()


@pytest.fixture()
def private_servers(tmp_path: Path) -> Iterator[Servers]:
    """A set of servers of this test's own, safe to stop and restart."""
    started = Servers(tmp_path / "servers").start()
    yield started
    started.stop()


@pytest.fixture()
def logdir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def nats_url(servers: Servers) -> str:
    return servers.nats.url


@pytest.fixture(scope="session")
def database_url(servers: Servers) -> str:
    return servers.database_url


@pytest.fixture(scope="session")
def s3_url(servers: Servers) -> str:
    return servers.s3.url


@pytest.fixture()
def service_env(servers: Servers) -> Callable[..., dict[str, str]]:
    def build(**extra: str) -> dict[str, str]:
        return servers.env(**extra)

    return build
