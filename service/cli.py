"""The service's own commands of ``brain``: ``serve`` (migrate, then the HTTP API) and
``migrate``, with the settings helper that every server-side command shares.

The ``brain`` command itself is composed above the packages it draws on (``brain_cli``): this
module knows nothing of the workers, the client or the benchmarks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from service import datadir
from service.observability import configure_logging
from service.settings import Settings

console = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="State folder (BRAIN_DATA_DIR).")]


def load_settings(data_dir: Path | None) -> Settings:
    """The settings of a server-side command (``--data-dir`` wins over BRAIN_DATA_DIR), with
    logging configured from them."""
    if data_dir is not None:
        os.environ["BRAIN_DATA_DIR"] = str(data_dir)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def migrate(data_dir: DataDir = None) -> None:
    """Apply the database migrations (alembic upgrade head)."""
    from service.db import upgrade

    settings = load_settings(data_dir)
    upgrade(settings.database_url)
    console.print(f"[green]database at head[/green] ({_redact(settings.database_url)})")


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: DataDir = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Apply migrations, then serve the HTTP API (docs at /docs)."""
    import uvicorn

    from service.db import upgrade

    settings = load_settings(data_dir)
    if workers > 1 and not settings.uses_celery:
        raise typer.BadParameter("several API workers need the full stack (an embedded data dir belongs to one API process)")
    if not settings.uses_celery:  # the embedded default: this process owns the data dir until it exits
        try:
            datadir.claim(settings.data_dir)
        except datadir.DataDirBusy as exc:
            console.print(f"[bold red]error:[/bold red] {exc}")
            raise typer.Exit(1) from None
    upgrade(settings.database_url)
    mode = ("full stack (Postgres/Redis/Celery)" if settings.uses_celery
            else f"embedded (jobs: {settings.job_backend})")
    console.print(f"[bold]plastic-brain[/bold] on http://{host}:{port} — {mode}, data in {settings.data_dir}")
    json_logs = {"log_config": None, "access_log": False} if settings.log_format == "json" else {}
    uvicorn.run(  # JSON logs: uvicorn logs through ours, and the app writes the access lines
        "service.app:create_app", factory=True, host=host, port=port, workers=workers,
        log_level=settings.log_level.lower(), **json_logs,
    )


def _redact(url: str | None) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True) if url else ""


def register(app: typer.Typer) -> None:
    """Add ``migrate`` and ``serve`` to the ``brain`` command."""
    app.command()(migrate)
    app.command()(serve)
