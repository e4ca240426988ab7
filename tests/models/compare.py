"""Run a network strategy and fine-tuning (the same MLP) on the synthetic class-incremental stream."""

from __future__ import annotations

from models import create
from tests.models.synthetic import class_incremental


def stream(name: str, seed: int = 0, **params) -> dict:
    learner = create(name, input_dim=20, num_classes=10, seed=seed, params=params)
    return class_incremental(learner, seed=seed)


def finetune(seed: int = 0, hidden: int = 400) -> dict:
    return stream("finetune", seed=seed, hidden=hidden)
