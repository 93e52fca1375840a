"""Fixtures for opsctl's tests: ``opsctl up`` as a real subprocess, fresh databases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import psutil
import pytest

from opsctl._procs import free_port, spawn, stop
from tests.harness import REPO, no_schedule, runtime_dir, wait_until

# Variables that would make `up` use external servers (tests want it to embed its own).
_EXTERNAL = ("NATS_URL", "DATABASE_URL", "S3_ENDPOINT_URL", "S3_BUCKET", "WS_URL")


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _EXTERNAL and not k.startswith(("OPS_", "AWS_", "DEMO_"))
    }
    env.update(XDG_RUNTIME_DIR=runtime_dir(), COLUMNS="200", OPS_GATEWAY_PORT=str(free_port()),
               OPS_SCHEDULE=no_schedule())
    env.update(extra)
    return env



def opsctl(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m opsctl ARGS`` in a clean env (plus ``env``), output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "opsctl", *args],
        env=clean_env(**env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

@dataclass
class UpProcess:
    """One ``python -m opsctl up`` and what it says about itself (stdout, state.json)."""

    workdir: Path
    proc: subprocess.Popen[bytes]
    out: Path
    env: dict[str, str] = field(repr=False)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.workdir / "state.json").read_text()))
        except (OSError, ValueError):
            return {}

    def component(self, name: str) -> dict[str, Any]:
        return dict(self.state().get("components", {}).get(name, {}))

    def wait_running(self, names: list[str], timeout_s: float = 25.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"opsctl up exited {self.proc.returncode}:\n{self.output()}")
            state = self.state()
            components = state.get("components", {})
            if all(components.get(n, {}).get("state") == "running" for n in names):
                return state
            return None

        try:
            return dict(wait_until(ready, timeout_s=timeout_s, message=f"{names} running"))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- opsctl up output ---\n{self.output()}") from None

    def wait(self, predicate: Callable[[], Any], *, timeout_s: float, message: str) -> Any:
        """``wait_until`` with this launcher's output in the failure message."""
        try:
            return wait_until(predicate, timeout_s=timeout_s, message=message)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- opsctl up output ---\n{self.output()}") from None

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)  # the launcher alone, as a terminal's Ctrl-C or k8s would

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"opsctl up still running:\n{self.output()}") from None


@pytest.fixture()
def launch_up(tmp_path: Path) -> Iterator[Callable[..., UpProcess]]:
    started: list[UpProcess] = []

    def launch(*args: str, workdir: Path | None = None, **env: str) -> UpProcess:
        workdir = workdir or tmp_path / f"stack{len(started)}"
        out = tmp_path / f"up{len(started)}.out"
        full_env = clean_env(**env)
        command = [sys.executable, "-m", "opsctl", "up", "--workdir", str(workdir), *args]
        # spawn(): its own process group and PDEATHSIG, so a failed test leaves nothing behind.
        up = UpProcess(workdir, spawn(command, env=full_env, log_path=out, cwd=REPO), out, full_env)
        started.append(up)
        return up

    yield launch
    for up in started:
        if up.proc.poll() is None:
            up.signal(signal.SIGTERM)
            try:
                up.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop(up.proc, sig=signal.SIGKILL)


def survivors(processes: list[psutil.Process], groups: set[int]) -> list[str]:
    """Processes from ``processes`` still alive, or any process in one of ``groups``."""
    alive: list[str] = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {process.name()}")
        except psutil.NoSuchProcess:
            continue
    for process in psutil.process_iter(["pid", "name"]):
        try:
            if os.getpgid(process.pid) in groups and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {process.info['name']} (group)")
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return sorted(set(alive))


def assert_no_survivors(
    processes: list[psutil.Process], groups: set[int], timeout_s: float = 3.0
) -> None:
    """Every process is gone; a SIGKILL is delivered asynchronously, so allow it a moment."""
    left: list[str] = []

    def none_left() -> bool:
        left[:] = survivors(processes, groups)
        return not left

    try:
        wait_until(none_left, timeout_s=timeout_s, interval_s=0.05, message="no survivors")
    except AssertionError:
        raise AssertionError(f"processes survived the stop: {left}") from None


@pytest.fixture()
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """A new, empty database on the session's PostgreSQL (demo tables never leak to others)."""
    name = f"opsctl_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield urlsplit(database_url)._replace(path=f"/{name}").geturl()
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
