"""Strategy "joint": training on everything seen so far, the upper bound of the benchmarks.

It is experience replay whose memory keeps every sample (up to ``max_samples``; beyond that a
uniform reservoir sample of the stream): each observed batch is trained on together with an equally
sized random batch of everything seen before, and ``sleep`` rehearses at least one pass over
everything it holds (more when ``budget`` asks for more), plus the given replay. After a sleep it has
had i.i.d. training on the union of all tasks, which no continual strategy should beat.

A sleep rehearses the largest of three counts: the service's budget; everything held plus the
replay, one pass (with the budget alone, joint fell short of Avalanche's one-epoch JointTraining);
and ``min_sleep_samples``, which gives a small memory several passes (one pass over a few thousand
samples was too few steps to undo five tasks learned in sequence). Figures and commands:
docs/bench/network-strategies.md.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from models.experience_replay import ExperienceReplay
from models.learner import Replay, Stats
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
        min_sleep_samples: Annotated[int, Field(
            ge=0, le=10_000_000, description="a sleep rehearses at least this many samples: several "
            "passes when everything held is fewer")] = 10_000,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed, hidden=hidden,
                         lr=lr, epochs_per_batch=epochs_per_batch, memory_size=max_samples,
                         sleep_share=1.0)
        self.min_sleep_samples = min_sleep_samples

    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        return super().sleep(replay, max(budget, len(self.memory) + len(replay), self.min_sleep_samples))
