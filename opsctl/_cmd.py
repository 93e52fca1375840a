"""``opsctl cmd``: sign a maintenance command, publish it, follow the job until it ends.

Exit codes: 0 succeeded (or sent, with ``--no-follow``), 1 failed / rejected / cancelled,
2 bad input (nothing published), 3 timed out following (the job id is printed), 4 NATS
unreachable or JetStream not set up.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoServersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy
from nats.js.errors import NoStreamResponseError, NotFoundError
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from shared import (
    DESTRUCTIVE_ACTIONS,
    CommandRejected,
    ConfigError,
    DatabaseError,
    JobEvent,
    Settings,
    Target,
    connect,
    parse_params,
    scrub,
    sign_command,
    subjects,
)

from ._local_auth import local_key_path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_BROKER = 0, 1, 2, 3, 4
TERMINAL = frozenset({"succeeded", "failed", "rejected", "cancelled"})
_INT = re.compile(r"^-?[0-9]+$")


class UsageError(Exception):
    """Bad input: reported, exit 2, nothing published."""


@dataclass
class CmdRequest:
    action: str
    pairs: list[str] = field(default_factory=list)
    params_json: str | None = None
    key: Path | None = None  # None: OPS_SIGNING_KEY, else the local stack's key (opsctl up)
    kid: str | None = None
    issuer: str | None = None
    audience: str | None = None
    target_db: str | None = None
    target: str | None = None  # "SYSTEM_IDENTIFIER:DATABASE", when the signer can't reach it
    lifetime_s: int = 300
    follow: bool = True
    timeout_s: float | None = None
    workdir: Path = Path(".opsplane")  # a local `opsctl up`'s: its key, NATS and database


def signing_key(request: CmdRequest) -> Path:
    """``--key``, else ``OPS_SIGNING_KEY``, else the key ``opsctl up`` made for its local stack."""
    if request.key is not None:
        return request.key
    if os.environ.get("OPS_SIGNING_KEY"):
        return Path(os.environ["OPS_SIGNING_KEY"])
    local = local_key_path(request.workdir)
    if local.exists():
        return local
    raise UsageError(
        "no signing key: pass --key FILE (create one with `opsctl keys new KID`) or set "
        f"OPS_SIGNING_KEY; a local `opsctl up` keeps one in {local}"
    )


def local_stack_settings(settings: Settings, workdir: Path) -> Settings:
    """Point at the running local stack's NATS and PostgreSQL when the env names none."""
    try:
        state = json.loads((workdir / "state.json").read_text())
    except (OSError, ValueError):
        return settings
    if not isinstance(state, dict) or not state.get("running"):
        return settings
    components = state.get("components") or {}
    update: dict[str, Any] = {}
    nats_url = (components.get("nats") or {}).get("url")
    if "NATS_URL" not in os.environ and isinstance(nats_url, str) and nats_url:
        update["nats_url"] = nats_url
    pg_url = (components.get("postgres") or {}).get("url")
    if "DATABASE_URL" not in os.environ and isinstance(pg_url, str) and "***" not in pg_url:
        update["database_url"] = SecretStr(pg_url)  # embedded: no password to have scrubbed
    return settings.model_copy(update=update) if update else settings


def parse_value(text: str) -> Any:
    """``true``/``false`` -> bool, an integer -> int, anything else stays a string."""
    if text in ("true", "false"):
        return text == "true"
    if _INT.match(text):
        return int(text)
    return text


def build_params(pairs: list[str], params_json: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"expected key=value, got {pair!r}")
        params[name] = parse_value(value)
    if params_json:
        try:
            extra = json.loads(params_json)
        except ValueError as exc:
            raise UsageError(f"--params is not JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise UsageError("--params must be a JSON object")
        params.update(extra)
    return params


def default_issuer() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "opsctl"
    return f"{user}@{socket.gethostname()}"


async def read_target(dsn: str) -> Target:
    """The ``target`` claim of the database ``dsn`` points at."""
    async with connect(dsn, application_name="opsctl") as conn:
        row = await conn.fetchrow(
            "SELECT system_identifier::text AS sid, current_database() AS db "
            "FROM pg_control_system()"
        )
    assert row is not None
    return Target(system_identifier=row["sid"], database=row["db"])


async def _target(request: CmdRequest, settings: Settings) -> Target | None:
    if request.action not in DESTRUCTIVE_ACTIONS:
        return None
    if request.target:
        sid, _, database = request.target.partition(":")
        try:
            return Target(system_identifier=sid, database=database)
        except ValidationError:
            raise UsageError("--target is SYSTEM_IDENTIFIER:DATABASE (digits, a name)") from None
    dsn = request.target_db or (
        settings.database_url.get_secret_value() if settings.database_url else None
    )
    if not dsn:
        raise UsageError(
            f"{request.action} is destructive: pass --target-db DSN (or set DATABASE_URL) of "
            "the database it is meant for, or --target SYSTEM_IDENTIFIER:DATABASE"
        )
    try:
        return await read_target(dsn)
    except DatabaseError as exc:
        raise UsageError(f"cannot read the target database ({scrub(dsn)}): {exc}") from None


async def prepare(request: CmdRequest, settings: Settings) -> tuple[str, str]:
    """Validate and sign locally: ``(jti, token)``; ``UsageError`` on any bad input."""
    params = build_params(request.pairs, request.params_json)
    try:
        parse_params(request.action, params)
    except CommandRejected as exc:
        raise UsageError(str(exc)) from None
    key = signing_key(request)
    try:
        pem = key.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the key {key}: {exc.strerror or exc}") from None
    kid = request.kid or key.name.removesuffix(".pem")
    target = await _target(request, settings)
    jti = str(uuid.uuid4())
    try:
        token = sign_command(
            request.action,
            params,
            private_key_pem=pem,
            kid=kid,
            issuer=request.issuer or default_issuer(),
            audience=request.audience or settings.deployment,
            lifetime_s=request.lifetime_s,
            target=target,
            jti=jti,
        )
    except (CommandRejected, ConfigError) as exc:
        message = f"{key}: {exc}" if isinstance(exc, ConfigError) else str(exc)
        raise UsageError(message) from None
    return jti, token


async def _connect(settings: Settings) -> Client:
    errors: list[Exception] = []

    async def remember(exc: Exception) -> None:  # reported once, by the caller
        errors.append(exc)

    try:
        return await asyncio.wait_for(
            nats.connect(
                settings.nats_servers,
                connect_timeout=max(1, int(settings.nats_connect_timeout_s)),
                max_reconnect_attempts=60,  # ride out a short outage while following a long job
                reconnect_time_wait=1,
                error_cb=remember,
            ),
            timeout=settings.nats_connect_timeout_s + 2,
        )
    except TimeoutError:
        if errors:
            raise errors[-1] from None
        raise


class _Display:
    """A progress bar on a terminal; one line per change otherwise (logs, CI, pipes)."""

    def __init__(self, console: Console, action: str) -> None:
        self.console = console
        self.last: tuple[str, str] | None = None
        self.progress: Progress | None = None
        self.task = None
        if console.is_terminal:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[count]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[message]}"),
                console=console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(action, total=None, count="", message="waiting")

    def update(self, event: JobEvent) -> None:
        done, total, unit = event.progress.done, event.progress.total, event.progress.unit
        count = f"{done}/{total} {unit}".strip() if total else (f"{done} {unit}" if done else "")
        if self.progress is not None and self.task is not None:
            self.progress.update(
                self.task,
                completed=done,
                total=total,
                count=count,
                message=escape(f"{event.state}: {event.message}" if event.message else event.state),
            )
            return
        line = (event.state, event.message)
        if line != self.last:
            self.last = line
            text = f"{event.state}" + (f" [{count}]" if count else "")
            line_text = f"{text}: {event.message}" if event.message else text
            self.console.print(line_text, markup=False, highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


async def _follow(
    sub: Any, display: _Display, *, deadline: float | None, unanswered_by: float
) -> JobEvent | None:
    """Events until a terminal one; ``None`` when a deadline passes first."""
    answered = False
    while True:
        limits = [d for d in (deadline, None if answered else unanswered_by) if d is not None]
        wait = min(limits) - time.monotonic() if limits else 3600.0
        if wait <= 0:
            return None
        try:
            msg = await sub.next_msg(timeout=wait)
        except NatsTimeout:
            continue
        try:
            event = JobEvent.model_validate_json(msg.data)
        except ValidationError:
            continue  # not ours to judge; the aggregator reports bad events
        answered = True
        display.update(event)
        if event.state in TERMINAL:
            return event


async def run_cmd(request: CmdRequest, out: Console, err: Console) -> int:
    settings = local_stack_settings(Settings(), request.workdir)
    try:
        jti, token = await prepare(request, settings)
    except UsageError as exc:
        err.print(f"[bold red]not sent:[/] {escape(str(exc))}", highlight=False)
        return EXIT_USAGE
    try:
        nc = await _connect(settings)
    except (TimeoutError, OSError, NoServersError, nats.errors.Error) as exc:
        reason = str(exc) or type(exc).__name__
        err.print(
            f"[bold red]cannot connect to NATS at {escape(scrub(settings.nats_url))}:[/] "
            f"{escape(reason)}; "
            "nothing was sent",
            highlight=False,
        )
        return EXIT_BROKER
    try:
        return await _send_and_follow(nc, request, jti, token, out, err)
    finally:
        await nc.close()


async def _send_and_follow(
    nc: Client, request: CmdRequest, jti: str, token: str, out: Console, err: Console
) -> int:
    js = nc.jetstream()
    sub = None
    started = time.monotonic()
    if request.follow:
        try:  # subscribe first: an event published before we listen is still delivered
            sub = await js.subscribe(
                subjects.job(jti), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
            )
        except (NotFoundError, nats.errors.Error) as exc:
            err.print(
                f"[bold red]cannot follow jobs:[/] {escape(str(exc))}; is JetStream set up "
                "(`opsctl streams check`)? nothing was sent",
                highlight=False,
            )
            return EXIT_BROKER
    try:
        await _publish(js, request.action, jti, token)
    except NoStreamResponseError:
        err.print(
            "[bold red]no stream takes ops.cmd.*:[/] JetStream is not set up "
            "(`opsctl streams check`); nothing was sent",
            highlight=False,
        )
        return EXIT_BROKER
    except (NatsTimeout, nats.errors.Error) as exc:
        reason = str(exc) or type(exc).__name__
        err.print(f"[bold red]publishing failed:[/] {escape(reason)}", highlight=False)
        return EXIT_BROKER
    err.print(f"sent {request.action} as job {jti}", highlight=False)
    if sub is None:
        _print_plain(out, jti)
        return EXIT_OK

    deadline = started + request.timeout_s if request.timeout_s else None
    # A command no worker picked up before it expired can only be rejected: stop waiting then.
    unanswered_by = started + request.lifetime_s + 60
    display = _Display(err, request.action)
    try:
        event = await _follow(sub, display, deadline=deadline, unanswered_by=unanswered_by)
    except ConnectionClosedError:
        display.close()
        err.print(f"[bold red]lost NATS while following job {jti}[/]", highlight=False)
        return EXIT_BROKER
    finally:
        display.close()
        await sub.unsubscribe()
    return _report(event, request, jti, out, err)


async def _publish(js: Any, action: str, jti: str, token: str, attempts: int = 3) -> None:
    """Publish with ``Nats-Msg-Id`` = jti, so a retry after a lost ack is de-duplicated."""
    for attempt in range(attempts):
        try:
            await js.publish(
                subjects.command(action),
                token.encode(),
                headers={"Nats-Msg-Id": jti},
                timeout=5,
            )
            return
        except NatsTimeout:
            if attempt == attempts - 1:
                raise


def _report(
    event: JobEvent | None, request: CmdRequest, jti: str, out: Console, err: Console
) -> int:
    if event is None:
        err.print(
            f"[bold yellow]timed out following job {jti}[/]: it may still run; its events are on "
            f"ops.jobs.{jti}",
            highlight=False,
        )
        return EXIT_TIMEOUT
    if event.state == "succeeded":
        err.print(f"[green]{request.action} succeeded[/] (job {jti})", highlight=False)
        _print_plain(out, json.dumps(event.result or {}, indent=2, default=str))
        return EXIT_OK
    detail = event.error or event.message or "(no reason given)"
    err.print(
        f"[bold red]{request.action} {event.state}:[/] {escape(detail)} (job {jti})",
        highlight=False,
    )
    if event.result:
        _print_plain(out, json.dumps(event.result, indent=2, default=str))
    return EXIT_FAILED


def _print_plain(console: Console, text: str) -> None:
    """Machine-readable output: no markup, no highlighting, never wrapped."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)
