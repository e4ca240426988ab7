"""Synthetic clustered data for the end-to-end tests: one Gaussian cluster per label in a small
vector space, well separated, so a working brain classifies held-out points almost perfectly and a
broken one (forgotten, never learned, restarted from scratch) visibly does not."""

from __future__ import annotations

import zlib

import numpy as np

DIM = 20
SMALL_PARAMS = {"layers": [{"hidden": 256, "k": 16}]}  # strategy "plastic": small enough for a CPU test


class Clusters:
    """Cluster centres per label, drawn once from ``seed``; samples drawn from their own seeds."""

    def __init__(self, labels: list[str | int], *, seed: int = 0, dim: int = DIM, noise: float = 0.3) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.noise = noise
        self.centres = {_key(label): rng.normal(0.0, 1.0, dim) for label in labels}
        self.labels = list(labels)

    def points(self, label: str | int, n: int, *, seed: int) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(_key(label).encode())])
        return self.centres[_key(label)] + rng.normal(0.0, self.noise, (n, self.dim))

    def samples(self, labels: list[str | int], n: int, *, seed: int, ids: str | None = None) -> list[dict]:
        """``n`` labelled samples per label, interleaved, as the API's ``samples`` list."""
        per_label = [self.points(label, n, seed=seed) for label in labels]
        out = []
        for i in range(n):
            for label, xs in zip(labels, per_label):
                sample = {"x": [float(v) for v in xs[i]], "label": label}
                if ids is not None:
                    sample["id"] = f"{ids}-{_key(label)}-{i}"
                out.append(sample)
        return out

    def inputs(self, labels: list[str | int], n: int, *, seed: int) -> tuple[list[dict], list[str | int]]:
        """Held-out ``inputs`` for predict, and their true labels."""
        samples = self.samples(labels, n, seed=seed)
        return [{"x": s["x"]} for s in samples], [s["label"] for s in samples]


def _key(label: str | int) -> str:
    return f"{type(label).__name__}:{label}"  # "1" and 1 are different labels


def accuracy(predictions: list[dict], truth: list[str | int]) -> float:
    # type-exact comparison: the label 1 is not the label "1"
    hits = sum(int(type(p["label"]) is type(t) and p["label"] == t) for p, t in zip(predictions, truth))
    return hits / len(truth)
