"""The reference brain: a fresh learner of a brain's strategy, params and seed that learns given
samples, and predictions compared with it.

For the default strategy ("plastic", with a code that does not change while it learns: frozen
layers) the readout is the closed-form solution of sums over the samples, so it depends on which
samples were learned and not on their order or batching: the same samples give the same
predictions up to float rounding.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from models.registry import create

BATCH = 128  # samples per observe() call, as the service's wake job


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread meanwhile: these learners are small, and on a busy machine more threads
    only wait for each other (an observe() step took 60 times longer with two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def key(label: str | int) -> str:
    """A label's identity, as the service keys it: 3 and "3" differ."""
    return json.dumps(label)


def order_free(strategy: str, params: dict) -> bool:
    """Whether a brain's predictions depend only on the set of samples it learned."""
    if strategy != "plastic" or params.get("readout", "closed_form") != "closed_form":
        return False
    layers = params.get("layers") or []
    return bool(layers) and all(layer.get("frozen") and layer.get("type", "sparse") == "sparse" for layer in layers)


class Reference:
    """A fresh learner that learns ``(x, label, task)`` samples; its labels are indexed as in
    ``labels`` (the brain's), labels it does not list after them."""

    def __init__(self, *, strategy: str, params: dict, seed: int, num_classes: int, input_dim: int,
                 labels: Sequence[str | int]) -> None:
        self.learner = create(strategy, input_dim=input_dim, num_classes=num_classes, seed=seed, params=params)
        self.labels = list(labels)
        self.index = {key(label): i for i, label in enumerate(self.labels)}
        self.learned: set[int] = set()  # log ids
        self.unplaced = 0  # samples of labels beyond the learner's capacity: not learned

    def _index(self, label: str | int) -> int | None:
        k = key(label)
        if k not in self.index:
            if len(self.index) >= self.learner.num_classes:
                return None
            self.index[k] = len(self.index)
        return self.index[k]

    def learn(self, samples: Sequence[tuple[int, Sequence[float], str | int, str]]) -> None:
        """Learn ``(log id, x, label, task)`` samples in the given order, in batches of one task."""
        rows = [(i, x, self._index(label), task) for i, x, label, task in samples if i not in self.learned]
        self.unplaced += sum(1 for r in rows if r[2] is None)
        rows = [r for r in rows if r[2] is not None]
        start = 0
        while start < len(rows):
            end = start + 1
            while end < len(rows) and end - start < BATCH and rows[end][3] == rows[start][3]:
                end += 1
            chunk = rows[start:end]
            x = torch.tensor(np.asarray([r[1] for r in chunk], dtype=np.float32))
            y = torch.tensor([r[2] for r in chunk], dtype=torch.long)
            self.learner.observe(x, y, chunk[0][3])
            start = end
        self.learned.update(r[0] for r in samples)

    def probs(self, probe: Sequence[Sequence[float]]) -> np.ndarray:
        """Probabilities ``[probe, labels]`` over the brain's labels, as the API's predict (every
        label of the brain competes)."""
        n = len(self.labels)
        if n == 0:
            return np.zeros((len(probe), 0))
        mask = torch.zeros(self.learner.num_classes, dtype=torch.bool)
        mask[:n] = True
        with torch.inference_mode():
            p = self.learner.predict(torch.tensor(np.asarray(probe, dtype=np.float32)), mask)
        return p[:, :n].double().numpy()


def agrees(prediction: dict, probs: np.ndarray, labels: Sequence[str | int], tolerance: float) -> bool:
    """Whether a prediction ``{"label", "confidence"}`` is the reference's: the reference gives its
    label the same probability and no label a higher one (both within ``tolerance``: a tie may go
    either way)."""
    index = {key(label): i for i, label in enumerate(labels)}
    i = index.get(key(prediction["label"]))
    if i is None or len(probs) == 0:
        return False
    return abs(float(probs[i]) - float(prediction["confidence"])) <= tolerance and probs[i] >= probs.max() - tolerance
