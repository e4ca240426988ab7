"""Real data shipped by packages (nothing downloads): Fashion-MNIST from Debian's
``dataset-fashion-mnist``, and the class-incremental splits the benchmarks use."""

from __future__ import annotations

import gzip
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _idx(path: Path) -> np.ndarray:
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
    x = _idx(images).reshape(-1, 784).astype(np.float32) / 255.0
    y = _idx(labels).astype(np.int64)
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


def hold_out(y: np.ndarray, pool: np.ndarray, *, fraction: float, cap: int | None,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split the indices ``pool`` (into ``y``) into ``(rest, held)``, class-stratified: ``held``
    takes ``fraction`` of each class's samples (rounded), all classes together at most ``cap``
    (shared out in proportion). Both in a random order drawn from ``rng``."""
    pool = np.asarray(pool)
    classes, counts = np.unique(y[pool], return_counts=True)
    want = np.round(counts * fraction).astype(int)
    if cap is not None and want.sum() > cap:
        want = np.floor(counts * cap / counts.sum()).astype(int)
    rest, held = [], []
    for c, n in zip(classes, want):
        members = rng.permutation(pool[y[pool] == c])
        held.append(members[:n])
        rest.append(members[n:])
    return rng.permutation(np.concatenate(rest)), rng.permutation(np.concatenate(held))


def split_tasks(
    classes_per_task: int = 2, n_tasks: int = 5, *, train_per_task: int | None = None,
    test_per_task: int | None = None, seed: int = 0,
) -> list[Task]:
    """Split Fashion-MNIST: task i holds classes (2i, 2i+1); train shuffled with ``seed``."""
    xtr, ytr = fashion_mnist("train")
    xte, yte = fashion_mnist("test")
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(n_tasks):
        classes = tuple(range(i * classes_per_task, (i + 1) * classes_per_task))
        tr = np.flatnonzero(np.isin(ytr, classes))
        tr = rng.permutation(tr)[:train_per_task]
        te = np.flatnonzero(np.isin(yte, classes))[:test_per_task]
        tasks.append(Task(f"task{i + 1}", classes, xtr[tr], ytr[tr], xte[te], yte[te]))
    return tasks


# -- text: fortunes labelled by topic (Debian's ``fortunes``) --------------------------------------
FORTUNES_DIR = Path("/usr/share/games/fortunes")


def _overstrike(text: str) -> str:
    """Drop terminal overstriking (``_\\bI`` underlines I, ``____\\b\\b\\b\\bonly`` underlines a word):
    each backspace erases the character before it, which leaves the printed text."""
    while "\b" in text:
        stripped = re.sub(r"[^\n\x08]\x08", "", text)
        if stripped == text:  # a backspace with nothing before it
            stripped = text.replace("\b", "")
        text = stripped
    return text


@lru_cache(maxsize=8)
def fortunes(topics: tuple[str, ...], root: Path = FORTUNES_DIR) -> tuple[tuple[str, ...], np.ndarray]:
    """``(texts, y)``: the entries of the fortune files ``topics`` (entries are separated by lines
    holding ``%``), whitespace collapsed, ``y[i]`` the index in ``topics`` of ``texts[i]``'s file.
    Entries found in more than one of the files, or twice in one, are dropped, so a text has one
    label and can fall in only one split."""
    per_topic = []
    for topic in topics:
        path = root / topic
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: install the Debian package fortunes")
        raw = _overstrike(path.read_text(encoding="utf-8", errors="replace"))
        entries = (" ".join(e.split()) for e in re.split(r"^%$", raw, flags=re.M))
        per_topic.append([e for e in entries if e])
    counts = Counter(e for entries in per_topic for e in entries)
    texts, y = [], []
    for label, entries in enumerate(per_topic):
        for e in entries:
            if counts[e] == 1:
                texts.append(e)
                y.append(label)
    y_arr = np.array(y, dtype=np.int64)
    y_arr.setflags(write=False)
    return tuple(texts), y_arr
