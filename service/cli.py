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
    """Apply the database migrations (alembic upgrade head), and copy version folders of an older
    release found in the data dir into the blob store."""
    from service.db import upgrade

    settings = load_settings(data_dir)
    upgrade(settings.database_url)
    console.print(f"[green]database at head[/green] ({_redact(settings.database_url)})")
    import_checkpoints(settings)


def import_checkpoints(settings: Settings) -> int:
    """With database blobs: copy the version folders that file blobs (every release before them)
    left in ``<data dir>/brains`` into the database (``service.versions.import_folders``: versions
    with a row whose blobs are missing; idempotent). The number copied."""
    if settings.blob_backend == "files" or not settings.checkpoint_dir.is_dir():
        return 0
    from service.blobs import make_blob_store
    from service.db import Database
    from service.versions import import_folders

    db = Database(settings)
    try:
        copied = import_folders(db, make_blob_store(settings.blob_backend, root=settings.checkpoint_dir, db=db),
                                settings.checkpoint_dir)
    finally:
        db.dispose()
    if copied:
        console.print(f"copied {copied} version folders from {settings.checkpoint_dir} into the database "
                      "(the folders are no longer read and may be deleted)")
    return copied


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
    import_checkpoints(settings)
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
