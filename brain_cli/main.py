"""Builds the ``brain`` typer app (the console script ``brain = brain_cli.main:app``)."""

from __future__ import annotations

import typer

import bench.cli
import brain_client.cli
import service.cli
import workers.cli


def create_app() -> typer.Typer:
    """Every command of ``brain``: the server's, the workers', the benchmarks', then the client's."""
    app = typer.Typer(help="plastic-brain: a continual-learning service.", no_args_is_help=True)
    for register in (service.cli.register, workers.cli.register, bench.cli.register, brain_client.cli.register):
        register(app)
    return app


app = create_app()
