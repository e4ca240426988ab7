"""bench.eyes: each front end learns, sleeps (choosing its ridge) and is scored on held-out images."""

from __future__ import annotations

from bench.data import fashion_mnist
from bench.eyes import VARIANTS, score
from models.plastic import _FIRST_RIDGE
from models.ridge import GRID


def test_each_front_end_is_scored_on_images_it_never_learned() -> None:
    x, y = fashion_mnist("train")
    train, held = slice(0, 300), slice(300, 600)
    for layers in VARIANTS.values():
        accuracy, ridge, _ = score(layers, x[train], y[train], (x[held], y[held]), seed=0)
        assert 40 < accuracy <= 100  # ten classes: chance is 10
        assert ridge in {*GRID, *_FIRST_RIDGE.values()}  # the sleep's choice: a grid value or the first
    # a brain that learned nothing would be at chance: the score comes from what was learned
    blind, _, _ = score(VARIANTS["one sparse layer, 2,048 units, k 256"], x[train][:20], y[train][:20],
                        (x[held], y[held]), seed=0)
    assert blind < accuracy
