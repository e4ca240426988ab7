"""Strategy "finetune": an MLP trained by Adam on whatever it sees, with no protection at all.

It is the lower bound every continual-learning result is compared with: each observed batch gets
``epochs_per_batch`` Adam steps of cross-entropy on that batch, and old classes are forgotten as
new ones arrive. ``sleep`` does nothing. The network is ``input -> hidden -> hidden -> num_classes``
with ReLU.

The optimiser state travels with the weights (``models.torch_state``), so a reloaded learner
continues training exactly as the original would have.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from models.learner import Learner, Replay, Stats
from models.registry import register
from models.torch_state import load_network_state, move_optimizer, network_state


@register
class Finetune(Learner):
    name = "finetune"

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        seed: int = 0,
        hidden: Annotated[int, Field(ge=1, le=65536)] = 400,
        lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3,
        epochs_per_batch: Annotated[int, Field(ge=1, le=100)] = 1,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed)
        self.epochs_per_batch = epochs_per_batch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Linear(input_dim, hidden), nn.ReLU(),
                nn.Linear(hidden, hidden), nn.ReLU(),
                nn.Linear(hidden, num_classes),
            )
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: str | None = None) -> Stats:
        x, y = self._inputs(x), y.to(self.device, torch.int64)
        if y.shape != (x.shape[0],) or bool(((y < 0) | (y >= self.num_classes)).any()):
            raise ValueError(f"y must be [B] class indices in [0, {self.num_classes})")
        if x.shape[0] == 0:
            return Stats()
        for _ in range(self.epochs_per_batch):
            self.optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(self.net(x), y)
            loss.backward()
            self.optimizer.step()
        return Stats(samples=int(x.shape[0]), loss=float(loss.detach()))

    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        return Stats()

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._inputs(x))

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"x must have shape [B, {self.input_dim}], got {list(x.shape)}")
        return x.to(self.device, torch.float32)

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return network_state(self.net, self.optimizer)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        unexpected = [k for k in state if not k.startswith(("net.", "optim.net."))]
        if unexpected:
            raise ValueError(f"unexpected state entries {unexpected[:3]}")
        load_network_state(self.net, self.optimizer, state, self.device)

    def to(self, device: torch.device | str) -> "Finetune":
        super().to(device)
        self.net.to(self.device)
        move_optimizer(self.optimizer, self.device)
        return self
