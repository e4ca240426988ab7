"""The MLP every network strategy shares, so that finetune, replay, EWC, LwF, GEM, A-GEM and joint
training compare fairly: ``input -> hidden -> hidden -> num_classes`` with ReLU, initialised from
the seed alone, trained by Adam.

``NetworkLearner.observe`` is the one skeleton: validate the batch, notice a task boundary (the
``task`` argument changes), build the training batch (``training_batch``), take
``epochs_per_batch`` optimisation steps, each ``loss`` -> backward -> ``adjust_gradients`` ->
Adam step, then ``remember`` the batch. Strategies override only those hooks. Their extra state
goes through ``extra_state`` / ``load_extra_state`` under the key prefixes they declare; the
network and its Adam state travel via ``models.torch_state``.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import nn

from models.learner import Learner, Replay, Stats
from models.optim import adam
from models.sample_memory import SampleMemory
from models.sizing import parameter_bytes
from models.torch_state import load_network_state, network_state

Hidden = Annotated[int, Field(ge=1, le=65536)]
LearningRate = Annotated[float, Field(gt=0.0, le=1.0)]
Epochs = Annotated[int, Field(ge=1, le=100)]
#: The share of the service's sleep budget that a strategy with an episodic memory rehearses.
SleepShare = Annotated[float, Field(ge=0.0, le=1.0, description="the share of the service's sleep "
                                    "budget rehearsed from the episodic memory and the replay")]


def text_tensor(text: str | None) -> torch.Tensor:
    return torch.tensor(list((text or "").encode()), dtype=torch.uint8)


def tensor_text(tensor: torch.Tensor) -> str | None:
    return bytes(tensor.tolist()).decode() or None


def build_mlp(input_dim: int, hidden: int, num_classes: int, seed: int) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(input_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )


class NetworkLearner(Learner):
    #: Key prefixes of the strategy's own state entries, besides the network's.
    state_prefixes: ClassVar[tuple[str, ...]] = ()
    #: Mini-batch size of rehearsal during ``sleep``. 128 (the wake batch) rather than 32: the same
    #: accuracy for a quarter of the steps (docs/bench/network-strategies.md).
    sleep_batch: ClassVar[int] = 128

    def __init__(self, *, input_dim: int, num_classes: int, seed: int = 0, hidden: Hidden = 400,
                 lr: LearningRate = 1e-3, epochs_per_batch: Epochs = 1) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed)
        self.epochs_per_batch = epochs_per_batch
        self.net = build_mlp(input_dim, hidden, num_classes, seed)
        self.optimizer = adam(self.net.parameters(), lr=lr)
        self.task: str | None = None  # the task of the latest batch that named one

    # -- the skeleton -----------------------------------------------------------------------------
    def observe(self, x: torch.Tensor, y: torch.Tensor, task: str | None = None) -> Stats:
        x, y = self._inputs(x), self._labels(y, x.shape[0])
        if x.shape[0] == 0:
            return Stats()
        if task is not None and task != self.task:
            if self.task is not None:
                self.end_task()
            self.task = task
        bx, by = self.training_batch(x, y)
        for _ in range(self.epochs_per_batch):
            loss = self.step(bx, by)
        self.remember(x, y)
        return Stats(samples=int(x.shape[0]), loss=loss)

    def step(self, x: torch.Tensor, y: torch.Tensor, *, adjust: bool = True) -> float:
        """One Adam step on ``(x, y)``; ``adjust=False`` skips ``adjust_gradients``."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x, y)
        loss.backward()
        if adjust:
            self.adjust_gradients(x, y)
        self.optimizer.step()
        return float(loss.detach())

    # -- hooks ------------------------------------------------------------------------------------
    def end_task(self) -> None:
        """The task changed: the batches since the previous boundary were one task."""

    def training_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(x), y)

    def adjust_gradients(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Change ``.grad`` of the parameters before the optimiser step (GEM's projection)."""

    def remember(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Keep what the strategy needs of an observed batch."""

    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        return Stats()

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {}

    def grown_bytes(self, tasks: int) -> int:
        """Adam's two moments per weight, made at the first step."""
        return 2 * parameter_bytes(self.net)

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load the entries under ``state_prefixes`` (``state`` holds only those), on ``device``."""

    # -- shared tools -----------------------------------------------------------------------------
    def rehearse(self, x: torch.Tensor, y: torch.Tensor, budget: int, gen: torch.Generator) -> Stats:
        """Train on random mini-batches of ``(x, y)`` until about ``budget`` samples were used.

        Plain steps: no ``adjust_gradients``. The rehearsed samples stand for every task at once,
        so GEM's constraints (one task's step must not raise another's loss) do not apply, and
        skipping them makes a rehearsal step cost one forward and backward pass, not one per task."""
        if len(y) == 0 or budget <= 0:
            return Stats()
        losses = []
        for _ in range(math.ceil(budget / self.sleep_batch)):
            index = torch.randperm(len(y), generator=gen)[: self.sleep_batch].to(y.device)
            losses.append(self.step(x[index], y[index], adjust=False))
        return Stats(samples=budget, loss=sum(losses) / len(losses))

    def rehearse_memories(self, memories: list[SampleMemory], replay: Replay, budget: int) -> Stats:
        """Sleep of the strategies with episodic memories: ``rehearse`` on everything the memories
        hold together with the service's ``replay``, drawing with the last memory's generator."""
        x = torch.cat([m.x for m in memories] + [self._inputs(replay.x)])
        y = torch.cat([m.y for m in memories] + [self._labels(replay.y, len(replay))])
        gen = memories[-1].generator() if memories else torch.Generator().manual_seed(self.seed)
        return self.rehearse(x, y, budget, gen)

    def gradient(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The flat gradient of the cross-entropy on ``(x, y)``; ``.grad`` is left as it was."""
        params = [p for p in self.net.parameters()]
        grads = torch.autograd.grad(nn.functional.cross_entropy(self.net(x), y), params)
        return torch.cat([g.reshape(-1) for g in grads])

    def flat_grad(self) -> torch.Tensor:
        return torch.cat([p.grad.reshape(-1) for p in self.net.parameters()])

    def set_flat_grad(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self.net.parameters():
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    # -- inference --------------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._inputs(x))

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**network_state(self.net, self.optimizer), "task": text_tensor(self.task),
                **self.extra_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = ("net.", "optim.net.", *self.state_prefixes)
        unexpected = [k for k in state if k != "task" and not k.startswith(own)]
        if unexpected:
            raise ValueError(f"unexpected state entries {unexpected[:3]}")
        load_network_state(self.net, self.optimizer, state, self.device)
        self.task = tensor_text(state["task"]) if "task" in state else None
        self.load_extra_state({k: v for k, v in state.items() if k.startswith(self.state_prefixes)})

    def to(self, device: torch.device | str) -> NetworkLearner:
        state = self.state_dict()
        super().to(device)
        self.load_state_dict(state)  # puts the network, Adam and the extra state on ``device``
        return self
