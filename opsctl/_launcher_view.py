"""What ``opsctl up`` shows and records: the table of components, events, ``state.json``."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from rich.table import Table

from shared import scrub

if TYPE_CHECKING:
    from ._supervisor import Supervisor

_STYLES = {"info": "green", "warn": "yellow", "error": "bold red"}
_FALLBACK_T0 = time.monotonic()


def since_launch() -> float:
    """Seconds since this process was started (from /proc, so interpreter start-up counts)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _FALLBACK_T0


@dataclass
class Component:
    name: str
    kind: str  # "server" | "service"
    url: str
    port: int | None = None
    log: Path | None = None
    note: str = ""
    extra: str = ""


class StackView:
    def __init__(self, workdir: Path, console: Console, *, demo: bool) -> None:
        self.workdir = workdir
        self.console = console
        self.demo = demo
        self.components: dict[str, Component] = {}
        self.supervisor: Supervisor | None = None
        self.gateway_url: str | None = None
        self.admin_token_path: Path | None = None
        self.signing_key_path: Path | None = None
        self.health_ready_s: float | None = None
        self.health_status: str | None = None
        self.running = True
        self._next_probe = 0.0
        self._event_log = workdir / "logs" / "opsctl.log"

    def add(self, component: Component) -> None:
        self.components[component.name] = component
        self.write_state()

    def report(self, level: str, message: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        self.console.print(
            f"[dim]{stamp}[/dim] [{_STYLES.get(level, 'white')}]{level:5}[/] {message}",
            highlight=False,
            markup=True,
        )
        try:
            with self._event_log.open("a") as out:
                out.write(f"{datetime.now(UTC).isoformat()} {level} {message}\n")
        except OSError:
            pass

    def print_table(self) -> None:
        table = Table(title="opsplane is up", title_justify="left", header_style="bold")
        for column in ("component", "where", "pid", "log", "note"):
            table.add_column(column, overflow="fold")
        states = self._states()
        for c in self.components.values():
            where = c.url + (f"\n{c.extra}" if c.extra else "")
            log = (
                str(c.log.relative_to(Path.cwd()))
                if c.log and c.log.is_relative_to(Path.cwd())
                else str(c.log or "")
            )
            table.add_row(c.name, where, str(states.get(c.name, {}).get("pid") or "-"), log, c.note)
        self.console.print(table)
        if self.gateway_url:
            note = self.components["gateway"].note
            taken = f" ([yellow]{note}[/yellow])" if note else ""
            self.console.print(
                f"status page: [bold link={self.gateway_url}]{self.gateway_url}[/]{taken}"
                f"   health: {self.gateway_url}/api/health"
            )
            if self.admin_token_path is not None:
                self.console.print(
                    f"super-admin token: {self.admin_token_path} (browser: any user name, the "
                    "token as password; `opsctl status` reads it)"
                )
        else:
            self.console.print(
                "[yellow]no gateway running (not selected, or not written yet): "
                "no status page[/yellow]"
            )
        if self.signing_key_path is not None:
            self.console.print(
                f"signing key: {self.signing_key_path} (kid local, every action; "
                "`opsctl cmd db.report` uses it)"
            )
        self.console.print(f"state: {self.workdir / 'state.json'}   Ctrl-C stops everything")

    def poll_health(self) -> None:
        """Until /api/health first answers with a postgres check: the cold-start time."""
        if self.gateway_url is None or self.health_ready_s is not None:
            return
        now = time.monotonic()
        if now < self._next_probe:
            return
        self._next_probe = now + 0.25
        try:
            body = httpx.get(f"{self.gateway_url}/api/health", timeout=0.5).json()
        except (httpx.HTTPError, ValueError):
            return
        checks = body.get("checks") if isinstance(body, dict) else None
        if isinstance(checks, dict) and any(key.startswith("postgres") for key in checks):
            self.health_ready_s = round(since_launch(), 2)
            self.health_status = str(body.get("status"))
            self.report(
                "info",
                f"/api/health answers ({self.health_status}) with a postgres check, "
                f"{self.health_ready_s:.1f} s after launch",
            )
            self.write_state()

    def stopped(self) -> None:
        self.running = False
        self.write_state()
        self.report("info", "stopped")

    def _states(self) -> dict[str, dict[str, Any]]:
        if self.supervisor is None:
            return {}
        return {
            e.child.name: {
                "pid": e.pid,
                "state": e.state,
                "restarts": e.restarts,
                "last_exit": e.last_exit,
            }
            for e in self.supervisor.entries
        }

    def write_state(self) -> None:
        """Atomically: tests, ``opsctl status`` and humans read it while we run."""
        states = self._states()
        components = {
            c.name: {
                "kind": c.kind,
                "url": scrub(c.url),
                "port": c.port,
                "log": str(c.log) if c.log else None,
                "note": c.note,
                **states.get(c.name, {"pid": None, "state": "external"}),
            }
            for c in self.components.values()
        }
        state = {
            "pid": os.getpid(),
            "running": self.running,
            "demo": self.demo,
            "gateway_url": self.gateway_url,
            "health_ready_s": self.health_ready_s,
            "health_status": self.health_status,
            "components": components,
        }
        path = self.workdir / "state.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)
