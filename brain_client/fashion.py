"""Split Fashion-MNIST for ``brain demo``, read from Debian's ``dataset-fashion-mnist`` (nothing
is downloaded): the idx reader and the class-incremental split, task i holding classes (2i, 2i+1).

It lives in the client so that the demo runs from a client-only install; the benchmarks
(``bench.data``) read Fashion-MNIST through it too.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """A gzipped idx file of unsigned bytes (the MNIST format): magic, dimension sizes, data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


@lru_cache(maxsize=4)
def fashion_mnist(split: str = "train", root: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """``(x [N, 784] float32 in [0, 1], y [N] int64)``; split is "train" or "test". Read once per
    process (a benchmark builds a scenario per seed); the arrays are read-only, index them."""
    prefix = "train" if split == "train" else "t10k"
    images, labels = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists():
        raise FileNotFoundError(f"{images} is missing: install the Debian package dataset-fashion-mnist")
    x = read_idx(images).reshape(-1, 784).astype(np.float32) / 255.0
    y = read_idx(labels).astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@dataclass(frozen=True)
class Task:
    name: str
    classes: tuple[int, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    # Training images held out of the stream: never learned, they choose settings and measure sleeps.
    x_val: np.ndarray = field(default_factory=lambda: np.zeros((0, 784), np.float32))
    y_val: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def split_tasks(
    classes_per_task: int = 2, n_tasks: int = 5, *, train_per_task: int | None = None,
    test_per_task: int | None = None, seed: int = 0, root: Path = FASHION_DIR,
) -> list[Task]:
    """Split Fashion-MNIST: task i holds classes (2i, 2i+1); train shuffled with ``seed``."""
    xtr, ytr = fashion_mnist("train", root)
    xte, yte = fashion_mnist("test", root)
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(n_tasks):
        classes = tuple(range(i * classes_per_task, (i + 1) * classes_per_task))
        tr = np.flatnonzero(np.isin(ytr, classes))
        tr = rng.permutation(tr)[:train_per_task]
        te = np.flatnonzero(np.isin(yte, classes))[:test_per_task]
        tasks.append(Task(f"task{i + 1}", classes, xtr[tr], ytr[tr], xte[te], yte[te]))
    return tasks
