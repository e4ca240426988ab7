"""Strategy "lwf": learning without forgetting (Li & Hoiem, 2016), by knowledge distillation.

At each task boundary (the ``task`` argument changes) the current network is frozen as the
teacher, together with the set of classes seen so far. Training then adds ``alpha * T^2 *
KL(teacher || student)`` between the temperature-``T`` softmaxes over those old classes, computed
on the current batch: the new model must keep answering like the old one among the old classes
while it learns the new ones. No samples are stored.

The distillation term carries Hinton's ``T^2`` factor, so ``alpha`` = 0.25 at ``T`` = 2 weighs it
as Avalanche's ``alpha`` = 1 (which omits the factor). A much larger ``alpha`` lets the
distillation toward the previous permutation's model drown the new one on Permuted Fashion-MNIST
(figures: docs/bench/network-strategies.md).

CLM's LwF did nothing unless the model had a ``get_last_input()`` method; here the teacher and the
distillation run on every step after the first boundary (``Stats`` and the tests check that the
term is nonzero), and the teacher travels in the state dict.
"""

from __future__ import annotations

import copy
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from models.network import Epochs, Hidden, LearningRate, NetworkLearner
from models.registry import register
from models.sizing import parameter_bytes
from models.torch_state import load_network_state, network_state


@register
class LwF(NetworkLearner):
    name = "lwf"
    settings = ("class", "task", "domain")
    state_prefixes = ("teacher.", "lwf.")

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        seed: int = 0,
        hidden: Hidden = 400,
        lr: LearningRate = 1e-3,
        epochs_per_batch: Epochs = 1,
        alpha: Annotated[float, Field(ge=0.0, le=1e6)] = 0.25,
        temperature: Annotated[float, Field(gt=0.0, le=100.0)] = 2.0,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed, hidden=hidden,
                         lr=lr, epochs_per_batch=epochs_per_batch)
        self.alpha, self.temperature = alpha, temperature
        self.seen = torch.zeros(num_classes, dtype=torch.bool)
        self.old_classes = torch.zeros(num_classes, dtype=torch.bool)
        self.teacher: nn.Module | None = None

    def end_task(self) -> None:
        self.teacher = copy.deepcopy(self.net).requires_grad_(False)
        self.old_classes = self.seen.clone()

    def remember(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.seen[y] = True

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return nn.functional.cross_entropy(logits, y) + self.alpha * self.distillation(x, logits)

    def distillation(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.teacher is None or not bool(self.old_classes.any()):
            return torch.zeros((), device=self.device)
        with torch.no_grad():
            target = torch.softmax(self.teacher(x)[:, self.old_classes] / self.temperature, dim=1)
        log_student = torch.log_softmax(logits[:, self.old_classes] / self.temperature, dim=1)
        kl = nn.functional.kl_div(log_student, target, reduction="batchmean")
        return kl * self.temperature**2

    def grown_bytes(self, tasks: int) -> int:
        """Adam's moments and the teacher, a copy of the network."""
        return super().grown_bytes(tasks) + parameter_bytes(self.net)

    def extra_state(self) -> dict[str, torch.Tensor]:
        teacher = network_state(self.teacher, None, prefix="teacher") if self.teacher else {}
        return {**teacher, "lwf.seen": self.seen.clone(), "lwf.old_classes": self.old_classes.clone()}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.seen = state["lwf.seen"].to(self.device).clone()
        self.old_classes = state["lwf.old_classes"].to(self.device).clone()
        self.teacher = None
        if any(k.startswith("teacher.") for k in state):
            self.teacher = copy.deepcopy(self.net).requires_grad_(False)
            load_network_state(self.teacher, None, state, self.device, prefix="teacher")
