"""The client's Fashion-MNIST reader and split (brain_client.fashion) on small idx files written
here, so they are tested without the Debian package."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from brain_client.fashion import fashion_mnist, read_idx, split_tasks


def _write_idx(path: Path, data: np.ndarray) -> None:
    header = bytes([0, 0, 8, data.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + data.astype(np.uint8).tobytes())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for prefix, per_class in (("train", 6), ("t10k", 3)):
        labels = np.repeat(np.arange(10), per_class)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (len(labels), 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path


def test_the_idx_reader_gives_back_what_was_written(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", data)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), data)


def test_split_tasks_two_classes_each_scaled_and_bounded(root: Path) -> None:
    tasks = split_tasks(train_per_task=5, test_per_task=4, seed=1, root=root)
    assert [t.name for t in tasks] == [f"task{i}" for i in range(1, 6)]
    for i, task in enumerate(tasks):
        assert task.classes == (2 * i, 2 * i + 1)
        assert set(task.y_train) <= set(task.classes) and set(task.y_test) == set(task.classes)
        assert task.x_train.shape == (5, 784) and task.x_test.shape == (4, 784)
        assert task.x_train.dtype == np.float32 and 0 <= task.x_train.min() and task.x_train.max() <= 1
    x, _ = fashion_mnist("train", root)
    assert not x.flags.writeable


def test_a_missing_dataset_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fashion_mnist("test", tmp_path)
