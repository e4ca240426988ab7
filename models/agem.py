"""Strategy "agem": averaged gradient episodic memory (Chaudhry et al., 2019).

Like GEM (``models.gem``, whose per-task memories it shares) but with one constraint instead of
one per task: the reference gradient ``g_ref`` is the gradient on a random batch of
``memory_batch`` samples drawn from all previous tasks' memories. When the current gradient ``g``
points against it (``g . g_ref < 0``) it is projected to ``g - (g . g_ref / g_ref . g_ref) g_ref``,
which makes ``g . g_ref = 0`` exactly; no QP is needed. The reference batch is as large as a wake
batch (128, as Avalanche's ``sample_size`` in the benchmark): smaller and larger ones gave the
same accuracy, and a larger one costs more rows in each step's reference gradient
(docs/bench/network-strategies.md). Its sleep is GEM's (a rehearsal of the memories and the
service's replay).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from models.gem import GEM, MemoryPerTask
from models.network import Epochs, Hidden, LearningRate, SleepShare
from models.registry import register
from models.sizing import parameter_bytes, sample_bytes


@register
class AGEM(GEM):
    name = "agem"
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
        memory_per_task: MemoryPerTask = 100,
        memory_batch: Annotated[int, Field(ge=1, le=100_000)] = 128,
        sleep_share: SleepShare = 0.25,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed, hidden=hidden,
                         lr=lr, epochs_per_batch=epochs_per_batch, memory_per_task=memory_per_task,
                         sleep_share=sleep_share)
        self.memory_batch = memory_batch

    def reference_gradients(self) -> torch.Tensor | None:
        """``[1, P]``: the gradient on a random batch of all previous tasks' memories."""
        old = self.previous()
        if not old:
            return None
        x, y = torch.cat([m.x for m in old]), torch.cat([m.y for m in old])
        index = torch.randperm(len(y), generator=old[-1].generator())[: self.memory_batch]
        index = index.to(y.device)
        return self.gradient(x[index], y[index])[None]

    def reference_bytes(self, tasks: int) -> int:
        """One reference gradient, drawn from a copy of the previous tasks' memories."""
        previous = max(tasks - 1, 0)
        copy = previous * self.memory_per_task * sample_bytes(self.input_dim)
        return copy + (parameter_bytes(self.net) if previous else 0)

    def project(self, g: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        ref = refs[0]
        return g - (g @ ref) / (ref @ ref) * ref
