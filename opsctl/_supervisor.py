"""Keeps ``opsctl up``'s children alive: restart with backoff, crash loops reported, ordered stop.

Runs in the launcher's main thread on purpose: ``PR_SET_PDEATHSIG`` fires when the *thread*
that forked a child exits, so children must never be spawned from a short-lived thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from ._procs import spawn, stop

Kind = Literal["server", "service"]
Reporter = Callable[[str, str], None]  # (level: "info" | "warn" | "error", message)


class Process(Protocol):
    """What the supervisor needs of a child: the embedded servers and services both fit."""

    name: str
    proc: subprocess.Popen[bytes] | None

    @property
    def log_path(self) -> Path: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class ServiceProcess:
    """One ``python -m opsctl run <name>`` (or any command) in its own process group."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    stop_timeout_s: float = 15.0  # then SIGKILL (uvicorn's graceful shutdown takes up to 10 s)

    def start(self) -> None:
        self.proc = spawn(self.args, env=self.env, log_path=self.log_path)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout_s=self.stop_timeout_s)


@dataclass
class Policy:
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    # ``loop_threshold`` deaths within ``loop_window_s`` is a crash loop: retry slowly, say so.
    loop_window_s: float = 60.0
    loop_threshold: int = 5
    loop_delay_s: float = 60.0


@dataclass
class Supervised:
    child: Process
    kind: Kind
    after_start: Callable[[], None] | None = None  # e.g. re-create the bucket in a fresh moto
    restarts: int = 0
    deaths: deque[float] = field(default_factory=deque)
    due: float | None = None  # monotonic time of the next start attempt while down
    crash_loop: bool = False
    last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        proc = self.child.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def state(self) -> str:
        if self.pid is not None:
            return "running"
        if self.due is None:
            return "stopped"
        return "crash-loop" if self.crash_loop else "restarting"


class Supervisor:
    def __init__(
        self,
        report: Reporter,
        policy: Policy | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.report = report
        self.policy = policy or Policy()
        self.on_change = on_change or (lambda: None)
        self.entries: list[Supervised] = []

    def add(
        self, child: Process, kind: Kind, after_start: Callable[[], None] | None = None
    ) -> Supervised:
        entry = Supervised(child, kind, after_start)
        self.entries.append(entry)
        return entry

    def get(self, name: str) -> Supervised:
        return next(e for e in self.entries if e.child.name == name)

    def start(self, entry: Supervised) -> None:
        """First start: failures propagate (``up`` cannot go on without its servers)."""
        entry.child.start()
        if entry.after_start is not None:
            entry.after_start()
        self.on_change()

    def poll(self) -> None:
        """One supervision pass: notice deaths, restart what is due."""
        now = time.monotonic()
        for entry in self.entries:
            if (
                entry.due is None
                and entry.child.proc is not None
                and entry.child.proc.poll() is not None
            ):
                self._died(entry, entry.child.proc.returncode, now)
            if entry.due is not None and entry.due <= now:
                self._restart(entry)

    def _died(self, entry: Supervised, code: int | None, now: float) -> None:
        entry.last_exit = code
        entry.deaths.append(now)
        while entry.deaths and entry.deaths[0] < now - self.policy.loop_window_s:
            entry.deaths.popleft()
        recent = len(entry.deaths)
        name = entry.child.name
        if recent >= self.policy.loop_threshold:
            delay = self.policy.loop_delay_s
            if not entry.crash_loop:
                self.report(
                    "error",
                    f"{name} is crash-looping ({recent} exits in "
                    f"{self.policy.loop_window_s:.0f} s, last code {code}); retrying every "
                    f"{delay:.0f} s; see {entry.child.log_path}",
                )
            entry.crash_loop = True
        else:
            delay = min(self.policy.base_delay_s * 2 ** (recent - 1), self.policy.max_delay_s)
            self.report(
                "warn",
                f"{name} exited with code {code}; restarting in {delay:.2g} s "
                f"(log: {entry.child.log_path})",
            )
        entry.due = now + delay
        self.on_change()

    def _restart(self, entry: Supervised) -> None:
        entry.due = None
        name = entry.child.name
        try:
            entry.child.stop()  # reap the dead leader and anything left in its process group
            entry.child.start()
            if entry.after_start is not None:
                entry.after_start()
        except Exception as exc:
            self.report("error", f"{name} failed to start: {exc}")
            code = entry.child.proc.poll() if entry.child.proc is not None else None
            self._died(entry, code, time.monotonic())
            return
        entry.restarts += 1
        self.report("info", f"{name} restarted (pid {entry.pid}, restart #{entry.restarts})")
        self.on_change()

    def settle(self) -> None:
        """Forget old deaths so a child that ran long enough leaves the crash-loop state."""
        now = time.monotonic()
        for entry in self.entries:
            if entry.pid is not None:
                while entry.deaths and entry.deaths[0] < now - self.policy.loop_window_s:
                    entry.deaths.popleft()
                if entry.crash_loop and not entry.deaths:
                    entry.crash_loop = False
                    self.report("info", f"{entry.child.name} is stable again")

    def stop_all(self) -> None:
        """Services first (all signalled at once, then awaited), then servers in reverse order."""
        services = [e for e in self.entries if e.kind == "service"]
        for entry in services:
            _signal_group(entry.child.proc, signal.SIGTERM)
        for entry in services:
            _stop_quietly(entry.child, self.report)
        for entry in reversed([e for e in self.entries if e.kind == "server"]):
            _stop_quietly(entry.child, self.report)


def _signal_group(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def _stop_quietly(child: Process, report: Reporter) -> None:
    try:
        child.stop()
    except Exception as exc:  # keep stopping the others
        report("error", f"stopping {child.name} failed: {exc}")
