"""Small synthetic continual-learning data for the model tests: Gaussian class clusters."""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch

from models.learner import Learner, Replay
from models.metrics import cl_metrics
from models.replay import ReservoirPolicy


def clusters(
    *,
    num_classes: int = 10,
    dim: int = 20,
    per_class: int = 300,
    spread: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and test splits (``x [N, dim]``, ``y [N]``) of one Gaussian cluster per class."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=gen)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(num_classes).repeat_interleave(n)
        x = means[y] + spread * torch.randn(len(y), dim, generator=gen)
        return x, y

    return (*split(per_class), *split(per_class // 2))


def accuracy(learner: Learner, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((learner.predict(x).argmax(dim=1) == y).float().mean())


def task_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    task: int,
    classes_per_task: int,
    batch: int,
    gen: torch.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The samples of task ``task`` (its ``classes_per_task`` classes), shuffled, in batches."""
    in_task = (y // classes_per_task) == task
    order = torch.randperm(int(in_task.sum()), generator=gen)
    x, y = x[in_task][order], y[in_task][order]
    for start in range(0, len(y), batch):
        yield x[start : start + batch], y[start : start + batch]


def class_incremental(
    learner: Learner,
    *,
    tasks: int = 5,
    classes_per_task: int = 2,
    batch: int = 32,
    sleep: bool = True,
    replay_size: int = 60,
    seed: int = 0,
) -> dict:
    """Learn the classes task by task, one pass, sleeping after each; return ``cl_metrics``."""
    num_classes = tasks * classes_per_task
    x_train, y_train, x_test, y_test = clusters(num_classes=num_classes, seed=seed)
    policy, rng = ReservoirPolicy(), random.Random(seed)
    buffer_x: list[torch.Tensor] = []
    buffer_y: list[int] = []
    seen = 0
    gen = torch.Generator().manual_seed(seed)
    matrix = []
    for task in range(tasks):
        for xb, yb in task_batches(x_train, y_train, task, classes_per_task, batch, gen):
            learner.observe(xb, yb, task=f"t{task}")
            for xi, yi in zip(xb, yb.tolist()):
                slot = policy.slot_for(
                    label=yi, seen=seen, capacity=replay_size, slot_labels=buffer_y, rng=rng
                )
                seen += 1
                if slot == len(buffer_y):
                    buffer_x.append(xi)
                    buffer_y.append(yi)
                elif slot is not None:
                    buffer_x[slot], buffer_y[slot] = xi, yi
        if sleep:
            learner.sleep(Replay(torch.stack(buffer_x), torch.tensor(buffer_y)), budget=replay_size)
        matrix.append([
            accuracy(learner, x_test[in_test], y_test[in_test])
            for in_test in ((y_test // classes_per_task) == t for t in range(tasks))
        ])
    chance = [1.0 / classes_per_task] * tasks
    return cl_metrics(matrix, list(range(tasks)), chance)


def task_incremental(
    learner: Learner,
    *,
    tasks: int = 5,
    classes_per_task: int = 2,
    batch: int = 32,
    spread: float = 1.0,
    seed: int = 0,
) -> dict:
    """Learn the classes task by task, one pass, sleeping after each; test each task with the mask
    of its own classes (task-incremental: the task is known at test time); return ``cl_metrics``."""
    num_classes = tasks * classes_per_task
    x_train, y_train, x_test, y_test = clusters(num_classes=num_classes, spread=spread, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    masks = [torch.arange(num_classes) // classes_per_task == t for t in range(tasks)]
    matrix = []
    for task in range(tasks):
        for xb, yb in task_batches(x_train, y_train, task, classes_per_task, batch, gen):
            learner.observe(xb, yb, task=f"t{task}")
        learner.sleep(Replay(x_train[:0], y_train[:0]), budget=len(y_train))
        row = []
        for t, mask in enumerate(masks):
            in_test = (y_test // classes_per_task) == t
            guess = learner.predict(x_test[in_test], mask=mask).argmax(dim=1)
            row.append(float((guess == y_test[in_test]).float().mean()))
        matrix.append(row)
    return cl_metrics(matrix, list(range(tasks)), [1.0 / classes_per_task] * tasks)
