"""``opsctl status``, ``opsctl migrate``, ``opsctl streams check``: operator one-shots."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
from rich.console import Console
from rich.table import Table

from shared import Settings, check_drift, scrub

from ._dbsetup import migrate_database

_STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def gateway_url(url: str | None, workdir: Path) -> str:
    """``--url``, else the running ``opsctl up``'s gateway (state.json), else the env's."""
    if url:
        return url.rstrip("/")
    try:
        state = json.loads((workdir / "state.json").read_text())
        if state.get("running") and state.get("gateway_url"):
            return str(state["gateway_url"])
    except (OSError, ValueError):
        pass
    settings = Settings()
    return f"http://{settings.gateway_host}:{settings.gateway_port}"


def _age(stamp: Any) -> str:
    """An RFC 3339 time as "12 s ago" (what an operator wants to know of a check)."""
    try:
        then = datetime.fromisoformat(str(stamp))
    except ValueError:
        return str(stamp or "")
    seconds = (datetime.now(UTC) - then).total_seconds()
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _styled(status: Any) -> str:
    text = str(status)
    return f"[{_STATUS_STYLE.get(text, 'white')}]{text}[/]"


def show_status(base: str, token: str | None, console: Console) -> int:
    """Print the health checks (and the super-admin view with a token). Exit code: 0 pass/warn,
    1 fail, 2 unreachable or refused."""
    try:
        response = httpx.get(f"{base}/api/health", timeout=5)
        health = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        console.print(f"[bold red]{base}/api/health unreachable:[/] {exc}")
        return 2
    table = Table(title=f"{base}/api/health: {health.get('status')}", title_justify="left")
    for column in ("check", "status", "observed", "time", "output"):
        table.add_column(column, overflow="fold")
    for key, entries in sorted((health.get("checks") or {}).items()):
        for entry in entries if isinstance(entries, list) else [entries]:
            value = entry.get("observedValue")
            observed = "" if value is None else f"{value} {entry.get('observedUnit', '')}".strip()
            table.add_row(
                key,
                _styled(entry.get("status")),
                observed,
                _age(entry.get("time")),
                str(entry.get("output", "")),
            )
    console.print(table)
    code = 1 if health.get("status") == "fail" else 0
    if token:
        code = max(code, _super_admin(base, token, console))
    return code


def _super_admin(base: str, token: str, console: Console) -> int:
    try:
        response = httpx.get(
            f"{base}/super-admin/status",
            timeout=5,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
    except httpx.HTTPError as exc:
        console.print(f"[bold red]/super-admin/status unreachable:[/] {exc}")
        return 2
    if response.status_code in (401, 403, 404):
        console.print(f"[bold red]/super-admin/status: HTTP {response.status_code}[/]")
        return 2
    try:
        body = response.json()
    except ValueError:
        console.print(f"[bold red]/super-admin/status: not JSON (HTTP {response.status_code})[/]")
        return 2
    _render(console, "super-admin status", body)
    return 0


def _render(console: Console, title: str, value: Any) -> None:
    """Render a JSON document generically: scalars as a key/value table, lists of objects and
    objects of objects as tables of their own."""
    if not isinstance(value, dict):
        console.print(f"[bold]{title}[/]: {value}")
        return
    scalars = Table(title=title, title_justify="left", show_header=False)
    scalars.add_column("key", style="bold")
    scalars.add_column("value", overflow="fold")
    nested: list[tuple[str, Any]] = []
    for key, item in value.items():
        if isinstance(item, dict | list) and item:
            nested.append((key, item))
        else:
            shown = _styled(item) if key == "status" else json.dumps(item, default=str)
            scalars.add_row(key, shown)
    if scalars.row_count:
        console.print(scalars)
    for key, item in nested:
        rows = list(item.values()) if isinstance(item, dict) else item
        if rows and all(isinstance(r, dict) for r in rows):
            names = list(item.keys()) if isinstance(item, dict) else None
            columns = sorted({c for r in rows for c in r if not isinstance(r[c], dict | list)})
            table = Table(title=key, title_justify="left")
            if names is not None:
                table.add_column("name", style="bold")
            for column in columns:
                table.add_column(column, overflow="fold")
            for index, row in enumerate(rows):
                cells = [
                    _styled(row.get(c)) if c == "status" else str(row.get(c, "")) for c in columns
                ]
                table.add_row(*([str(names[index])] if names is not None else []), *cells)
            console.print(table)
        else:
            _render(console, key, item) if isinstance(item, dict) else console.print(
                f"[bold]{key}[/]: {item}"
            )


async def migrate(console: Console) -> int:
    settings = Settings()
    applied = await migrate_database(settings.database_dsn())
    console.print(f"ops migrations applied: {applied}" if applied else "ops schema is up to date")
    return 0


async def streams_check(console: Console) -> int:
    """Compare the declared streams with the server's; exit 1 on drift or a missing stream."""
    settings = Settings()

    async def quiet(_: Exception) -> None:  # the failure is reported below, once
        pass

    try:
        # nats-py never gives up on a server with max_reconnect_attempts=0: use 1, and a deadline.
        nc = await asyncio.wait_for(
            nats.connect(
                settings.nats_servers,
                connect_timeout=3,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=quiet,
            ),
            timeout=10,
        )
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        console.print(
            f"[bold red]cannot connect to NATS at {scrub(settings.nats_url)}:[/] {reason}"
        )
        return 2
    try:
        report = await check_drift(nc.jetstream(), replicas=settings.js_replicas)
    finally:
        await nc.close()
    if not report:
        console.print("[green]streams match their declarations[/green]")
        return 0
    table = Table(title="JetStream drift", title_justify="left")
    for column in ("stream", "field", "declared", "actual"):
        table.add_column(column, overflow="fold")
    for stream, fields in report.items():
        if fields.get("missing"):
            table.add_row(stream, "-", "declared", "[bold red]missing[/]")
            continue
        for name, diff in fields.items():
            table.add_row(stream, name, str(diff["declared"]), f"[yellow]{diff['actual']}[/]")
    console.print(table)
    return 1
