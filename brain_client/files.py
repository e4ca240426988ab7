"""Labelled samples from files, for ``brain learn`` and ``brain predict``.

- ``.csv``: one sample a row of numbers; the label is the column named ``--label-column`` (default
  ``label``) when the header has one, else the last column. A header row is detected (a first row
  that is not all numbers). ``brain predict`` reads the same files, with or without a label column.
- ``.npz``: arrays ``x`` (``[N, ...]``) and ``y`` (``[N]``), as ``numpy.savez`` writes them; loaded
  with ``allow_pickle=False``, so an object array is refused rather than unpickled.
- a folder: one sub-folder per label holding PNG/JPEG files (``cats/1.png`` is a "cats"); the image
  bytes are sent as they are, for image brains.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass
class Samples:
    inputs: Any  # a float array [N, ...] or a list of image bytes
    labels: list[str | int] | None  # None: the file has no labels (predict)

    def __len__(self) -> int:
        return len(self.inputs)


def _label(value: str) -> str | int:
    value = value.strip()
    try:
        return int(value)
    except ValueError:
        return value


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


def read_csv(path: Path, label_column: str | None = "label", labelled: bool = True) -> Samples:
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows:
        raise ValueError(f"{path} holds no rows")
    header = None if all(_is_number(v) for v in rows[0]) else [h.strip() for h in rows.pop(0)]
    at: int | None = None
    if header is not None and label_column in header:
        at = header.index(label_column)
    elif labelled:
        at = len(rows[0]) - 1
    labels = [_label(row[at]) for row in rows] if at is not None else None
    try:
        x = np.array([[float(v) for i, v in enumerate(row) if i != at] for row in rows], dtype=np.float32)
    except ValueError as exc:
        raise ValueError(f"{path}: every column but the label must be a number ({exc})") from None
    return Samples(x, labels)


def read_npz(path: Path) -> Samples:
    with np.load(path, allow_pickle=False) as data:
        if "x" not in data:
            raise ValueError(f"{path} has no array 'x' (found: {', '.join(data.files)})")
        x = np.asarray(data["x"], dtype=np.float32)
        labels = [v.item() for v in data["y"]] if "y" in data else None
    if labels is not None and len(labels) != len(x):
        raise ValueError(f"{path}: {len(x)} inputs but {len(labels)} labels")
    return Samples(x, labels)


def read_folder(path: Path) -> Samples:
    inputs, labels = [], []
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                inputs.append(file.read_bytes())
                labels.append(_label(folder.name))
    if not inputs:
        raise ValueError(f"{path} has no label folders of PNG/JPEG images")
    return Samples(inputs, labels)


def read(path: Path, *, label_column: str | None = "label", labelled: bool = True) -> Samples:
    """The samples of ``path`` by its kind (see the module docstring)."""
    if path.is_dir():
        return read_folder(path)
    if path.suffix.lower() == ".npz":
        return read_npz(path)
    if path.suffix.lower() == ".csv":
        return read_csv(path, label_column, labelled)
    raise ValueError(f"{path}: expected a .csv or .npz file or a folder of label folders")
