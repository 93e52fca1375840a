"""opsctl: run, start and operate opsplane."""

from __future__ import annotations

import typer

from ._runner import EXTRA_PROCESSES, SERVICES, run_service

app = typer.Typer(help="opsplane's command line.", no_args_is_help=True, add_completion=False)


@app.callback()
def _root() -> None:
    """opsplane's command line."""


@app.command()
def run(service: str = typer.Argument(..., help="health, metrics, aggregator, gateway, maintenance")) -> None:
    """Run one service in the foreground (what a container runs)."""
    if service not in SERVICES and service not in EXTRA_PROCESSES:
        known = ", ".join([*SERVICES, *EXTRA_PROCESSES])
        typer.echo(f"unknown service {service!r}; known: {known}", err=True)
        raise typer.Exit(2)
    run_service(service)


def main() -> None:
    app()
