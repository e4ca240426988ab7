"""The workers' commands of ``brain``: ``worker`` (a Celery worker for wake, sleep and
meta-train jobs) and ``beat`` (Celery beat, the sleep-policy schedule)."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli import DataDir, load_settings


def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume.")] = "wake,sleep,schedule",
    concurrency: Annotated[int, typer.Option(help="Jobs run at once.")] = 1,
    data_dir: DataDir = None,
) -> None:
    """Run a Celery worker for wake and sleep jobs (needs BRAIN_REDIS_URL)."""
    from workers.celery_app import create_celery

    celery = create_celery(load_settings(data_dir))
    celery.worker_main(["worker", "-Q", queues, "-c", str(concurrency), "--loglevel", "INFO", "-n", "brain@%h"])


def beat(data_dir: DataDir = None) -> None:
    """Run Celery beat: checks every brain's sleep policy on a schedule (one per deployment)."""
    from workers.celery_app import create_celery

    celery = create_celery(load_settings(data_dir))
    # the in-memory scheduler: the schedule is one interval, nothing worth a (pickled) shelve file
    celery.start(["beat", "--loglevel", "INFO", "--scheduler", "celery.beat:Scheduler"])


def register(app: typer.Typer) -> None:
    """Add ``worker`` and ``beat`` to the ``brain`` command."""
    app.command()(worker)
    app.command()(beat)
