"""The ``brain`` command: serve the API, run a Celery worker or beat, apply migrations, run the
benchmarks; and, through
``brain_client.cli``, talk to a running service (brains, learn, predict, sleep, job, demo)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from service import datadir
from service.observability import configure_logging
from service.settings import Settings

app = typer.Typer(help="plastic-brain: a continual-learning service.", no_args_is_help=True)
console = Console(stderr=True)


def _settings(data_dir: Path | None) -> Settings:
    if data_dir is not None:
        os.environ["BRAIN_DATA_DIR"] = str(data_dir)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="State folder (BRAIN_DATA_DIR).")]


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply the database migrations (alembic upgrade head)."""
    from service.db import upgrade

    settings = _settings(data_dir)
    upgrade(settings.database_url)
    console.print(f"[green]database at head[/green] ({_redact(settings.database_url)})")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: DataDir = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Apply migrations, then serve the HTTP API (docs at /docs)."""
    import uvicorn

    from service.db import upgrade

    settings = _settings(data_dir)
    if workers > 1 and not settings.uses_celery:
        raise typer.BadParameter("several API workers need the full stack (in-process jobs live in one process)")
    if not settings.uses_celery:  # the embedded default: this process owns the data dir until it exits
        try:
            datadir.claim(settings.data_dir)
        except datadir.DataDirBusy as exc:
            console.print(f"[bold red]error:[/bold red] {exc}")
            raise typer.Exit(1) from None
    upgrade(settings.database_url)
    mode = "full stack (Postgres/Redis/Celery)" if settings.uses_celery else "embedded (in-process jobs)"
    console.print(f"[bold]plastic-brain[/bold] on http://{host}:{port} — {mode}, data in {settings.data_dir}")
    json_logs = {"log_config": None, "access_log": False} if settings.log_format == "json" else {}
    uvicorn.run(  # JSON logs: uvicorn logs through ours, and the app writes the access lines
        "service.app:create_app", factory=True, host=host, port=port, workers=workers,
        log_level=settings.log_level.lower(), **json_logs,
    )


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume.")] = "wake,sleep,schedule",
    concurrency: Annotated[int, typer.Option(help="Jobs run at once.")] = 1,
    data_dir: DataDir = None,
) -> None:
    """Run a Celery worker for wake and sleep jobs (needs BRAIN_REDIS_URL)."""
    from workers.celery_app import create_celery

    celery = create_celery(_settings(data_dir))
    celery.worker_main(["worker", "-Q", queues, "-c", str(concurrency), "--loglevel", "INFO", "-n", "brain@%h"])


@app.command()
def beat(data_dir: DataDir = None) -> None:
    """Run Celery beat: checks every brain's sleep policy on a schedule (one per deployment)."""
    from workers.celery_app import create_celery

    celery = create_celery(_settings(data_dir))
    # the in-memory scheduler: the schedule is one interval, nothing worth a (pickled) shelve file
    celery.start(["beat", "--loglevel", "INFO", "--scheduler", "celery.beat:Scheduler"])


BENCHMARKS = {
    "quality": "bench.quality", "serve": "bench.serve", "soak": "bench.soak", "stream": "bench.stream",
    "panic": "bench.panic", "history": "bench.history.__main__", "ridge": "bench.ridge", "eyes": "bench.eyes",
    "text": "bench.text",
}


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def bench(
    ctx: typer.Context,
    which: Annotated[str, typer.Argument(help=f"One of: {', '.join(BENCHMARKS)}.")],
) -> None:
    """Run a benchmark with its own options, e.g. `brain bench serve --quick` or `brain bench
    quality --avalanche` (`brain bench serve --help` lists them; docs/benchmarks.md explains them)."""
    import importlib

    if which not in BENCHMARKS:
        raise typer.BadParameter(f"no benchmark {which!r}; choose one of {', '.join(BENCHMARKS)}", param_hint="WHICH")
    raise typer.Exit(importlib.import_module(BENCHMARKS[which]).main(list(ctx.args)) or 0)


def _redact(url: str | None) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True) if url else ""


def _client_commands() -> None:
    from brain_client.cli import register

    register(app)


_client_commands()  # brains, learn, predict, sleep, job, demo: brain_client.cli

if __name__ == "__main__":
    app()
