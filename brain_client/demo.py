"""``brain demo``: Split Fashion-MNIST streamed through a running service into two brains, ours
(the default strategy) and a fine-tune brain, with the forgetting shown live.

Five tasks of two classes each (T-shirt/top and Trouser, then Pullover and Dress, ...) arrive one
after the other as a client would send them; after each task both brains sleep and are evaluated
on the held-out images of every task so far (``POST .../evaluate``, which also fills the brains'
accuracy matrices for ``GET .../metrics`` and the dashboard). The fine-tune brain forgets each
task as the next arrives; ours keeps them. Fashion-MNIST comes from the Debian package
``dataset-fashion-mnist`` (nothing is downloaded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import typer
from rich.live import Live
from rich.table import Table

from brain_client.client import Client
from brain_client.errors import NotFound
from brain_client.fashion import FASHION_CLASSES, FASHION_DIR, Task, split_tasks

SHAPE = [28, 28]


@dataclass
class DemoBrain:
    name: str
    title: str
    strategy: str | None  # None: the service's default
    rows: list[list[float]] = field(default_factory=list)  # accuracy on tasks 1..i after task i

    def average(self) -> float | None:
        return float(np.mean(self.rows[-1])) if self.rows else None

    def forgetting(self) -> float | None:
        """Mean over all tasks but the last of (best accuracy ever - final accuracy)."""
        if len(self.rows) < 2:
            return None
        final = self.rows[-1]
        drops = [max(row[t] for row in self.rows if t < len(row)) - final[t] for t in range(len(final) - 1)]
        return float(np.mean(drops))


def load_tasks(train_per_task: int, test_per_task: int, seed: int) -> list[Task]:
    if not FASHION_DIR.exists():
        raise ValueError(f"Fashion-MNIST is not at {FASHION_DIR}: install the Debian package dataset-fashion-mnist")
    return split_tasks(train_per_task=train_per_task, test_per_task=test_per_task, seed=seed)


def run_demo(client: Client, *, tasks: list[Task], prefix: str = "demo", sleep: bool = True,
             on_update: Callable[[list[DemoBrain], str], None] = lambda brains, status: None) -> list[DemoBrain]:
    """Teach ``tasks`` to a fresh default brain and a fresh fine-tune brain; returns their rows."""
    brains = [DemoBrain(f"{prefix}-plastic", "ours", None),
              DemoBrain(f"{prefix}-finetune", "fine-tune", "finetune")]
    for b in brains:
        try:
            client.brain(b.name).delete()
        except NotFound:
            pass
        options = {"strategy": b.strategy} if b.strategy else {}
        client.create_brain(b.name, kind="vector", shape=SHAPE, max_labels=len(FASHION_CLASSES), **options)
    names = lambda y: [FASHION_CLASSES[int(c)] for c in y]
    for i, task in enumerate(tasks):
        classes = " and ".join(FASHION_CLASSES[c] for c in task.classes)
        for b in brains:
            on_update(brains, f"task {i + 1}/{len(tasks)} ({classes}): {b.name} learning {len(task.y_train)} images")
            handle = client.brain(b.name)
            handle.learn(task.x_train, names(task.y_train), task=task.name, wait=True)
            if sleep:
                on_update(brains, f"task {i + 1}/{len(tasks)}: {b.name} sleeping")
                handle.sleep(wait=True)
            on_update(brains, f"task {i + 1}/{len(tasks)}: evaluating {b.name} on every task so far")
            b.rows.append([handle.evaluate(seen.x_test, names(seen.y_test), task=seen.name).accuracy
                           for seen in tasks[: i + 1]])
        on_update(brains, f"after task {i + 1}/{len(tasks)}")
    return brains


def render(brains: list[DemoBrain], n_tasks: int, status: str) -> Table:
    table = Table(title=f"Split Fashion-MNIST, class-incremental: accuracy % per task  [dim]{status}[/dim]")
    table.add_column("brain")
    for t in range(n_tasks):
        table.add_column(f"task {t + 1}", justify="right")
    table.add_column("average", justify="right")
    table.add_column("forgetting", justify="right")
    for b in brains:
        row = b.rows[-1] if b.rows else []
        cells = [_cell(row[t], max((r[t] for r in b.rows if t < len(r)), default=None)) if t < len(row) else ""
                 for t in range(n_tasks)]
        avg, fgt = b.average(), b.forgetting()
        table.add_row(b.title, *cells, "" if avg is None else f"{100 * avg:.1f}",
                      "" if fgt is None else f"{100 * fgt:.1f}")
    return table


def _cell(now: float, best: float | None) -> str:
    text = f"{100 * now:.1f}"
    if best is not None and best - now > 0.2:  # forgotten: red
        return f"[red]{text}[/red]"
    return f"[green]{text}[/green]"


def demo(
    url: Annotated[str, typer.Option("--url", envvar="BRAIN_URL", help="The service (BRAIN_URL).")] = "http://127.0.0.1:8000",
    key: Annotated[str | None, typer.Option("--key", envvar="BRAIN_API_KEY", help="API key (BRAIN_API_KEY).")] = None,
    train_per_task: Annotated[int, typer.Option(help="Training images per task (of 12,000).")] = 2000,
    test_per_task: Annotated[int, typer.Option(help="Held-out images per task (of 2,000).")] = 500,
    prefix: Annotated[str, typer.Option(help="Brain names: PREFIX-plastic and PREFIX-finetune (replaced).")] = "demo",
    sleep: Annotated[bool, typer.Option(help="Let both brains sleep after each task.")] = True,
    seed: Annotated[int, typer.Option(help="Which images, in which order.")] = 0,
) -> None:
    """Stream Split Fashion-MNIST into our brain and a fine-tune brain and watch forgetting live."""
    from brain_client.cli import out

    tasks = load_tasks(train_per_task, test_per_task, seed)
    with Client(url, api_key=key) as client, Live(render([], len(tasks), "starting"), console=out) as live:
        brains = run_demo(client, tasks=tasks, prefix=prefix, sleep=sleep,
                          on_update=lambda bs, status: live.update(render(bs, len(tasks), status)))
        live.update(render(brains, len(tasks), "done"))
    ours, fine = brains
    out.print(f"ours keeps {100 * ours.average():.1f}% on average (forgetting {100 * ours.forgetting():.1f} points); "
              f"fine-tune {100 * fine.average():.1f}% (forgetting {100 * fine.forgetting():.1f} points).")
    out.print(f"Plots: {url.rstrip('/')}/ui  ·  metrics: GET {url.rstrip('/')}/v1/brains/{ours.name}/metrics")
