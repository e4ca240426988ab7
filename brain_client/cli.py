"""The ``brain`` commands that talk to a running service through the client library:
``brains list|create|delete``, ``learn``, ``predict``, ``sleep``, ``jobs``, ``demo``.

Where the service is: ``--url`` (or ``BRAIN_URL``, default http://127.0.0.1:8000); its key:
``--key`` (or ``BRAIN_API_KEY``). ``brain_cli`` mounts these next to serve/worker/beat; alone
(a client-only install) they are the ``brain-client`` command (``app`` below).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from brain_client import files
from brain_client.client import Client
from brain_client.errors import BrainAPIError, JobFailed

out = Console()
err = Console(stderr=True)

Url = Annotated[str, typer.Option("--url", envvar="BRAIN_URL", help="The service (BRAIN_URL).")]
Key = Annotated[str | None, typer.Option("--key", envvar="BRAIN_API_KEY", help="API key (BRAIN_API_KEY).")]
DEFAULT_URL = "http://127.0.0.1:8000"


def connect(url: str, key: str | None) -> Client:
    return Client(url, api_key=key)


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _guarded(fn):
    """Service and file errors become one red line and exit status 1, not a traceback."""
    import functools

    import httpx

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrainAPIError as exc:
            raise fail(f"{exc.status}: {exc.detail}") from None
        except JobFailed as exc:
            raise fail(str(exc)) from None
        except httpx.TransportError as exc:
            raise fail(f"cannot reach the service: {exc}") from None
        except (ValueError, OSError) as exc:
            raise fail(str(exc)) from None

    return wrapper


brains_app = typer.Typer(help="List, create and delete brains.", no_args_is_help=True)


@brains_app.command("list")
@_guarded
def brains_list(url: Url = DEFAULT_URL, key: Key = None) -> None:
    """Every brain the key may read."""
    with connect(url, key) as client:
        table = Table("name", "strategy", "input", "labels", "version", "learned", "pending")
        for b in client.brains():
            table.add_row(b.name, b.strategy, f"{b.input.kind} {b.input.shape}", str(len(b.labels)),
                          str(b.current_version), str(b.samples_learned), str(b.samples_pending))
        out.print(table)


@brains_app.command("create")
@_guarded
def brains_create(
    name: str,
    shape: Annotated[str, typer.Option(help="Input shape, e.g. 784 or 28,28.")],
    kind: Annotated[str, typer.Option(help="vector, image or text.")] = "vector",
    strategy: Annotated[str | None, typer.Option(help="A registered strategy (default: the service's best).")] = None,
    params: Annotated[str | None, typer.Option(help="The strategy's hyperparameters as JSON.")] = None,
    max_labels: Annotated[int | None, typer.Option(help="Most distinct labels it will learn.")] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    options: dict[str, Any] = {"strategy": strategy, "max_labels": max_labels}
    if params:
        options["params"] = json.loads(params)
    with connect(url, key) as client:
        b = client.create_brain(name, kind=kind, shape=[int(d) for d in shape.split(",")],
                                **{k: v for k, v in options.items() if v is not None})
    out.print(f"created brain [bold]{b.name}[/bold] ({b.strategy}, {b.input.kind} {b.input.shape})")


@brains_app.command("delete")
@_guarded
def brains_delete(name: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
                  url: Url = DEFAULT_URL, key: Key = None) -> None:
    if not yes:
        typer.confirm(f"delete brain {name!r} and everything it learned?", abort=True)
    with connect(url, key) as client:
        client.brain(name).delete()
    out.print(f"deleted brain {name}")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err)


@_guarded
def learn(
    brain: str,
    file: Annotated[Path, typer.Argument(help=".csv, .npz, or a folder of label folders of images.")],
    task: Annotated[str, typer.Option(help="The task these samples belong to.")],
    label_column: Annotated[str, typer.Option(help="CSV column holding the label.")] = "label",
    chunk: Annotated[int, typer.Option(help="Samples per request.")] = 256,
    wait: Annotated[bool, typer.Option(help="Return once everything is learned.")] = True,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Stream a file of labelled samples into a brain, with a progress bar."""
    samples = files.read(file, label_column=label_column)
    if samples.labels is None:
        raise ValueError(f"{file} has no labels (an .npz needs 'y'; a CSV a label column)")
    total = len(samples)
    with connect(url, key) as client, _progress() as bar:
        target = client.brain(brain)
        sending = bar.add_task(f"learning {file.name} into {brain}", total=total)
        accepted = duplicates = 0
        version = None
        for start in range(0, total, chunk):
            end = min(total, start + chunk)
            got = target.learn(samples.inputs[start:end], samples.labels[start:end], task=task,
                               wait=wait and end == total)
            accepted, duplicates, version = accepted + got.accepted, duplicates + got.duplicates, got.version
            bar.update(sending, completed=end)
    tail = f", learned into version {version}" if wait else " (learning in the background)"
    out.print(f"{accepted} samples accepted, {duplicates} duplicates{tail}")


@_guarded
def predict(
    brain: str,
    file: Annotated[Path | None, typer.Argument(help=".csv or .npz of inputs (a label column is ignored).")] = None,
    x: Annotated[str | None, typer.Option("--x", help="One input as comma-separated numbers.")] = None,
    task: Annotated[str | None, typer.Option(help="Answer among this task's labels only.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Predict the label of each input of FILE (or of --x)."""
    if (file is None) == (x is None):
        raise ValueError("give a FILE or --x, one of them")
    if file is not None:
        inputs = files.read(file, labelled=False).inputs
    else:
        inputs = [[float(v) for v in x.split(",")]]
    with connect(url, key) as client:
        answer = client.brain(brain).predict(inputs, task=task)
    if as_json:
        out.print_json(answer.model_dump_json())
        return
    table = Table("#", "label", "confidence", title=f"{brain}, version {answer.version}")
    for i, p in enumerate(answer.predictions):
        table.add_row(str(i), str(p.label), f"{p.confidence:.3f}")
    out.print(table)


def follow(client: Client, job_id: str, title: str, timeout: float = 3600.0) -> Any:
    """A progress bar driven by the job's own progress and phase, until it ends."""
    with _progress() as bar:
        shown = bar.add_task(title, total=100)

        def update(job: Any) -> None:
            bar.update(shown, completed=round(100 * job.progress),
                       description=f"{title}: {job.phase or job.state}")

        job = client.wait(job_id, timeout=timeout, poll=0.2, on_progress=update)
        bar.update(shown, completed=100, description=f"{title}: {job.state}")
    return job


@_guarded
def sleep(
    brain: str,
    wait: Annotated[bool, typer.Option(help="Follow the job with a progress bar until it ends.")] = False,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Let a brain sleep: consolidate over replay, then publish a new version."""
    with connect(url, key) as client:
        started = client.brain(brain).sleep()
        if not wait:
            out.print(f"sleep job {started.job} {started.state}")
            return
        job = follow(client, started.job, f"sleeping {brain}")
    out.print(f"slept: version {job.result.get('version')} ({json.dumps(job.result)})")


@_guarded
def job(job_id: str, wait: Annotated[bool, typer.Option(help="Follow it until it ends.")] = False,
        url: Url = DEFAULT_URL, key: Key = None) -> None:
    """A job's state, progress and result."""
    with connect(url, key) as client:
        found = follow(client, job_id, f"job {job_id[:8]}") if wait else client.job(job_id)
    out.print_json(found.model_dump_json())


def register(app: typer.Typer) -> None:
    """Add the client commands to the ``brain`` command."""
    from brain_client import demo

    app.add_typer(brains_app, name="brains")
    for command in (learn, predict, sleep, job):
        app.command()(command)
    app.command()(_guarded(demo.demo))


def create_app() -> typer.Typer:
    """The client's commands alone: the ``brain-client`` console script of the client distribution."""
    client_app = typer.Typer(help="plastic-brain's client: talk to a running service.", no_args_is_help=True)
    register(client_app)
    return client_app


app = create_app()
