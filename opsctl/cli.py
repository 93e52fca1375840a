"""opsctl: run, start and operate opsplane."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.console import Console

from ._runner import EXTRA_PROCESSES, SERVICES, run_service

app = typer.Typer(help="opsplane's command line.", no_args_is_help=True, add_completion=False)


@app.callback()
def _root() -> None:
    """opsplane's command line."""


@app.command()
def run(
    service: str = typer.Argument(..., help="health, metrics, aggregator, gateway, maintenance"),
) -> None:
    """Run one service in the foreground (what a container runs)."""
    if service not in SERVICES and service not in EXTRA_PROCESSES:
        known = ", ".join([*SERVICES, *EXTRA_PROCESSES])
        typer.echo(f"unknown service {service!r}; known: {known}", err=True)
        raise typer.Exit(2)
    run_service(service)


@app.command()
def up(
    demo: bool = typer.Option(False, "--demo", help="Also run the simulated app with 5 tenants."),
    workdir: Path = typer.Option(Path(".opsplane"), help="Data, logs and state of this stack."),
    services: str | None = typer.Option(
        None, help="Comma-separated services to run (default: every available one; '' for none)."
    ),
) -> None:
    """Start the whole stack (servers, services, demo app) until Ctrl-C."""
    from ._launcher import available_services
    from ._launcher import up as run_up

    chosen = None
    if services is not None:
        chosen = [s.strip() for s in services.split(",") if s.strip()]
        unknown = sorted(set(chosen) - set(available_services()))
        if unknown:
            typer.echo(f"not available: {', '.join(unknown)}", err=True)
            raise typer.Exit(2)
    raise typer.Exit(run_up(workdir, demo=demo, services=chosen))


@app.command()
def status(
    url: str | None = typer.Option(None, help="Gateway base URL (default: the running `up`'s)."),
    token: str | None = typer.Option(
        None, envvar="OPS_TOKEN", help="Super-admin token: also show /super-admin/status."
    ),
    workdir: Path = typer.Option(Path(".opsplane"), help="Where `opsctl up` keeps its state."),
) -> None:
    """Show the health checks (exit 0 pass/warn, 1 fail, 2 unreachable)."""
    from ._admin import gateway_url, show_status
    from ._local_auth import read_local_token

    token = token or (None if url else read_local_token(workdir))
    raise typer.Exit(show_status(gateway_url(url, workdir), token, Console()))


@app.command()
def jobs(
    job_id: str | None = typer.Argument(None, help="One job: its events and result."),
    state: str | None = typer.Option(None, help="queued, running, succeeded, failed, ..."),
    action: str | None = typer.Option(None, help="An action, or a family such as backup.*"),
    limit: int = typer.Option(50, min=1, max=500),
    url: str | None = typer.Option(None, help="Gateway base URL (default: the running `up`'s)."),
    token: str | None = typer.Option(None, envvar="OPS_TOKEN", help="Super-admin token."),
    workdir: Path = typer.Option(Path(".opsplane"), help="Where `opsctl up` keeps its state."),
) -> None:
    """Maintenance jobs, newest first, or one job's history (exit 1: no such job, 2: refused)."""
    from ._admin import gateway_url
    from ._jobs import list_jobs, show_job
    from ._local_auth import read_local_token

    base = gateway_url(url, workdir)
    token = token or (None if url else read_local_token(workdir))
    console = Console(soft_wrap=True)
    if job_id:
        raise typer.Exit(show_job(base, token, job_id, console))
    raise typer.Exit(list_jobs(base, token, state=state, action=action, limit=limit,
                               console=console))


@app.command()
def migrate() -> None:
    """Apply the ops schema migrations to DATABASE_URL."""
    from ._admin import migrate as run_migrate

    raise typer.Exit(asyncio.run(run_migrate(Console())))


streams = typer.Typer(help="JetStream streams.", no_args_is_help=True)
app.add_typer(streams, name="streams")


@streams.command("check")
def streams_check() -> None:
    """Report drift between declared and actual streams (exit 1 on drift)."""
    from ._admin import streams_check as run_check

    raise typer.Exit(asyncio.run(run_check(Console())))


keys = typer.Typer(help="Signing keys for maintenance commands.", no_args_is_help=True)
app.add_typer(keys, name="keys")


@keys.command("new")
def keys_new(
    kid: str = typer.Argument(..., help="Key id (the JWT header kid), e.g. ops-alice."),
    directory: Path = typer.Option(Path("."), "--dir", help="Where to write KID.pem/.pub.pem."),
    actions: list[str] = typer.Option(
        ["*"], "--actions", help="Action patterns this key may issue (repeat): backup.*, db.report"
    ),
) -> None:
    """Create an Ed25519 key pair and print its keyring entry."""
    from ._keys import new_key

    raise typer.Exit(new_key(kid, directory, actions, Console(soft_wrap=True)))


@app.command(context_settings={"allow_interspersed_args": True})
def cmd(
    action: str = typer.Argument(..., help="backup.create, db.report, purge.app_data, ..."),
    params: list[str] = typer.Argument(None, help="key=value (true/false, integers, strings)."),
    params_json: str | None = typer.Option(None, "--params", help="JSON object, merged over."),
    key: Path | None = typer.Option(
        None,
        "--key",
        help="Private key PEM (`opsctl keys new`); default OPS_SIGNING_KEY, else the local "
        "stack's (<workdir>/keys/local.pem).",
    ),
    kid: str | None = typer.Option(None, "--kid", help="Key id (default: the key file's name)."),
    issuer: str | None = typer.Option(None, "--issuer", help="iss claim (default: user@host)."),
    audience: str | None = typer.Option(
        None, "--audience", help="aud claim (default: OPS_DEPLOYMENT)."
    ),
    target_db: str | None = typer.Option(
        None, "--target-db", help="DSN of the database a destructive action is for (DATABASE_URL)."
    ),
    target: str | None = typer.Option(
        None, "--target", help="SYSTEM_IDENTIFIER:DATABASE instead of --target-db."
    ),
    lifetime: int = typer.Option(300, "--lifetime", min=1, max=900, help="Seconds until exp."),
    no_follow: bool = typer.Option(False, "--no-follow", help="Send, print the job id, exit."),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.1, help="Stop following after this many seconds (exit 3)."
    ),
    workdir: Path = typer.Option(
        Path(".opsplane"), help="A local `opsctl up`'s: its key, NATS and database by default."
    ),
) -> None:
    """Sign a maintenance command, send it and follow the job until it ends.

    Exit: 0 succeeded, 1 failed/rejected/cancelled, 2 bad input, 3 timeout, 4 no NATS.
    """
    from ._cmd import CmdRequest, run_cmd

    request = CmdRequest(
        action=action,
        pairs=list(params or []),
        params_json=params_json,
        key=key,
        kid=kid,
        issuer=issuer,
        audience=audience,
        target_db=target_db,
        target=target,
        lifetime_s=lifetime,
        follow=not no_follow,
        timeout_s=timeout,
        workdir=workdir,
    )
    try:
        code = asyncio.run(run_cmd(request, Console(), Console(stderr=True, soft_wrap=True)))
    except KeyboardInterrupt:
        typer.echo("\nstopped following; the job keeps running (see ops.jobs.<job id>)", err=True)
        code = 130
    raise typer.Exit(code)


def main() -> None:
    app()
