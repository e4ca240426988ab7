"""Strategy "joint": training on everything seen so far, the upper bound of the benchmarks.

It is experience replay whose memory keeps every sample (up to ``max_samples``; beyond that a
uniform reservoir sample of the stream): each observed batch is trained on together with an equally
sized random batch of everything seen before, and ``sleep`` rehearses about ``budget`` more samples
of everything (plus the given replay). With enough sleep it approaches i.i.d. training on the union
of all tasks, which no continual strategy should beat.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from models.experience_replay import ExperienceReplay
from models.network import Epochs, Hidden, LearningRate
from models.registry import register


@register
class Joint(ExperienceReplay):
    name = "joint"
    settings = ("class", "task", "domain")

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        seed: int = 0,
        hidden: Hidden = 400,
        lr: LearningRate = 1e-3,
        epochs_per_batch: Epochs = 1,
        max_samples: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed, hidden=hidden,
                         lr=lr, epochs_per_batch=epochs_per_batch, memory_size=max_samples)
