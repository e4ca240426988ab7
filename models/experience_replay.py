"""Strategy "replay": experience replay (ER) from the learner's own episodic memory.

The learner keeps ``memory_size`` past samples, chosen by a selection ``policy`` from
``models.replay`` ("reservoir": a uniform sample of the whole stream; "class_balanced": equal
shares per class). Every observed batch is trained on together with an equally sized random batch
from the memory (drawn before the batch itself is offered to it), so old classes keep appearing in
the loss. ``sleep`` rehearses about ``sleep_share * budget`` samples drawn from the memory and the
given replay.

Why half the service's budget by default: the wake already rehearses the memory at every step, so
the sleep only tops it up. Half the budget kept accuracy at or above Avalanche's Replay in every
scenario for less time than the full budget (docs/bench/network-strategies.md).

CLM's replay defects are avoided: samples really enter the buffer (its ``add`` had its arguments
reversed) and replay really reaches the loss (its ``replay_training`` was never called). The memory
is tensors in the state dict, and its randomness is reseeded from the state (``SampleMemory``), so
a reloaded learner replays exactly what the original would have.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from models.learner import Replay, Stats
from models.network import Epochs, Hidden, LearningRate, NetworkLearner, SleepShare
from models.registry import register
from models.sample_memory import SampleMemory


@register
class ExperienceReplay(NetworkLearner):
    name = "replay"
    settings = ("class", "task", "domain")
    state_prefixes = ("memory.",)

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        seed: int = 0,
        hidden: Hidden = 400,
        lr: LearningRate = 1e-3,
        epochs_per_batch: Epochs = 1,
        memory_size: Annotated[int, Field(ge=1, le=1_000_000)] = 500,
        policy: Literal["reservoir", "class_balanced"] = "reservoir",
        sleep_share: SleepShare = 0.5,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed, hidden=hidden,
                         lr=lr, epochs_per_batch=epochs_per_batch)
        self.memory = SampleMemory(capacity=memory_size, input_dim=input_dim, policy=policy,
                                   seed=seed)
        self.sleep_share = sleep_share

    def training_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.memory) == 0:
            return x, y
        old_x, old_y = self.memory.sample(len(y))
        return torch.cat([x, old_x]), torch.cat([y, old_y])

    def remember(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.memory.add(x, y)

    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        return self.rehearse_memories([self.memory], replay, round(self.sleep_share * budget))

    def stored_samples(self) -> int:
        return len(self.memory)

    def grown_bytes(self, tasks: int) -> int:
        return super().grown_bytes(tasks) + self.memory.full_bytes()

    def extra_state(self) -> dict[str, torch.Tensor]:
        return self.memory.state("memory")

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.memory.load(state, "memory", self.device)
