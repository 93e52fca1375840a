"""``opsctl jobs``: maintenance jobs from the gateway's ``/api/jobs`` (super-admin token)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

_STATE_STYLE = {
    "succeeded": "green", "running": "cyan", "queued": "cyan",
    "failed": "bold red", "rejected": "bold red", "cancelled": "yellow",
}


def _state(value: Any) -> str:
    text = escape(str(value))
    style = _STATE_STYLE.get(str(value))
    return f"[{style}]{text}[/]" if style else text


def _progress(event: dict[str, Any]) -> str:
    progress = event.get("progress") or {}
    done, total = progress.get("done", 0), progress.get("total")
    if not total:
        return ""
    return f"{done}/{total} {progress.get('unit', '')}".strip()


class _Refused(Exception):
    """Printed already; ``code`` is the exit code."""

    def __init__(self, code: int) -> None:
        self.code = code


def _get(base: str, path: str, token: str | None, params: dict[str, Any],
         console: Console) -> dict[str, Any]:
    if not token:
        console.print("[bold red]a super-admin token is needed:[/] --token or OPS_TOKEN "
                      "(a local `opsctl up` keeps one in .opsplane/admin-token)")
        raise _Refused(2)
    try:
        response = httpx.get(f"{base}{path}", params=params, timeout=10,
                             headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        console.print(f"[bold red]{escape(base + path)} unreachable:[/] {escape(str(exc))}")
        raise _Refused(2) from None
    if response.status_code == 404:
        console.print(f"[bold red]no such job:[/] {escape(path.rsplit('/', 1)[-1])}")
        raise _Refused(1)
    if response.status_code != 200:
        detail = escape(response.text[:300])
        console.print(f"[bold red]{escape(path)}: HTTP {response.status_code}[/] {detail}")
        raise _Refused(2)
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        console.print(f"[bold red]{escape(path)}: not JSON[/]")
        raise _Refused(2) from None
    return body


def list_jobs(base: str, token: str | None, *, state: str | None, action: str | None,
              limit: int, console: Console) -> int:
    """A table of jobs, newest first. Exit: 0 listed, 2 unreachable/refused/bad input."""
    params = {k: v for k, v in {"state": state, "action": action, "limit": limit}.items() if v}
    try:
        body = _get(base, "/api/jobs", token, params, console)
    except _Refused as refused:
        return refused.code
    table = Table(title=f"jobs ({body.get('count', 0)})", title_justify="left")
    for column in ("job id", "action", "state", "progress", "time", "message / error"):
        table.add_column(column, overflow="fold")
    for job in body.get("jobs", []):
        table.add_row(escape(str(job.get("job_id"))), escape(str(job.get("action"))),
                      _state(job.get("state")), _progress(job), str(job.get("time", "")),
                      escape(str(job.get("error") or job.get("message") or "")))
    console.print(table)
    if not body.get("complete", True):
        console.print("[yellow]the gateway has not caught up with job events yet[/]")
    return 0


def show_job(base: str, token: str | None, job_id: str, console: Console) -> int:
    """One job's history and result. Exit: 0 found, 1 no such job, 2 unreachable/refused."""
    try:
        body = _get(base, f"/api/jobs/{job_id}", token, {}, console)
    except _Refused as refused:
        return refused.code
    job = body["job"]
    console.print(f"[bold]{escape(job['job_id'])}[/] {escape(job['action'])}: "
                  f"{_state(job['state'])}")
    table = Table(title="events", title_justify="left")
    for column in ("time", "state", "progress", "message / error"):
        table.add_column(column, overflow="fold")
    for event in body.get("events", []):
        table.add_row(str(event.get("time", "")), _state(event.get("state")), _progress(event),
                      escape(str(event.get("error") or event.get("message") or "")))
    console.print(table)
    if job.get("result") is not None:
        console.print_json(json.dumps(job["result"]))
    return 0

