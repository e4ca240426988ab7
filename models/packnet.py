"""Strategy "packnet": one network, packed task by task with weight masks (Mallya & Lazebnik, 2018).

The network is ``input -> hidden -> hidden -> num_classes`` with ReLU, trained by Adam. Every
parameter entry has an owner (``owner.<param>``, ``uint8``): 0 while it is free, ``s + 1`` once
slot ``s`` (one task's stretch of learning, see ``models.task_slots``) has claimed it.

- A task trains only the entries free at its start; the gradients of entries owned by earlier
  tasks are zeroed, and Adam starts afresh each phase, so those entries stay bit-identical.
- At the task boundary (``observe`` with another task, or ``sleep``) the task keeps the
  ``1 - prune_fraction`` largest of the entries it trained (per tensor) and leaves the rest out
  of its subnetwork: they stay free, redrawn at fresh initial values for later tasks (one pass of
  data learns far faster from those than from zeros). It then retrains its kept entries for
  ``retrain_epochs`` on the sleep's replay samples and a store of its ``store_size`` most recent
  samples (at most ``budget`` samples when sleeping), and owns them for good.
- Prediction for a known task (a class ``mask``, whose newest learning slot is used, or
  ``predict_task``) uses only the entries of the slots up to that one; without a mask
  (class-incremental) it uses the entries of every task (and the free ones while a task is open).
- At most 255 tasks (each sleep or task change closes one); more raise ``ValueError``.

This fixes CLM's PackNet, which pruned but never masked a gradient.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from models.learner import Learner, Replay, Stats, _masked_softmax
from models.network import Epochs, Hidden, LearningRate
from models.optim import adam
from models.registry import register
from models.sizing import parameter_bytes, sample_bytes
from models.task_slots import TaskSlots
from models.torch_state import load_network_state, move_optimizer, network_state

MAX_SLOTS = 255  # owners are uint8, 0 meaning free
RETRAIN_BATCH = 32


@register
class PackNet(Learner):
    name = "packnet"
    settings = ("task", "class")

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        seed: int = 0,
        hidden: Hidden = 400,
        lr: LearningRate = 1e-3,
        epochs_per_batch: Epochs = 1,
        prune_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.75,
        retrain_epochs: Annotated[int, Field(ge=0, le=100)] = 2,
        store_size: Annotated[int, Field(ge=1, le=100_000)] = 256,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed)
        self.lr, self.epochs_per_batch = lr, epochs_per_batch
        self.prune_fraction, self.retrain_epochs, self.store_size = (
            prune_fraction,
            retrain_epochs,
            store_size,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Linear(input_dim, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, num_classes),
            )
        self.owner = {
            n: torch.zeros_like(p, dtype=torch.uint8) for n, p in self.net.named_parameters()
        }
        self.slots = TaskSlots(num_classes)
        self.store_x, self.store_y = torch.zeros(0, input_dim), torch.zeros(0, dtype=torch.int64)
        self.optimizer = self._fresh_optimizer()

    def _fresh_optimizer(self) -> torch.optim.Optimizer:
        # Empty moments: an entry whose gradient is always zeroed then gets an update of exactly 0.
        return adam(self.net.parameters(), lr=self.lr)

    # -- learning ---------------------------------------------------------------------------------
    def observe(self, x: torch.Tensor, y: torch.Tensor, task: str | None = None) -> Stats:
        x = self._inputs(x)
        y = self._labels(y, x.shape[0])
        if x.shape[0] == 0:
            return Stats()
        task = self.slots.resolve(task)
        if not self.slots.continues(task):
            self._close(budget=None)
            if len(self.slots) >= MAX_SLOTS:
                raise ValueError(f"packnet holds at most {MAX_SLOTS} tasks")
            self.slots.start(task)
        self.slots.learned(y)
        self.store_x = torch.cat([self.store_x, x])[-self.store_size :]
        self.store_y = torch.cat([self.store_y, y])[-self.store_size :]
        for _ in range(self.epochs_per_batch):
            loss = self._step(x, y, trains=0)
        return Stats(samples=int(x.shape[0]), loss=loss)

    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        """Close the open task: prune, retrain its kept weights on replay and store, freeze them."""
        return Stats(
            samples=self._close(budget=budget, replay=replay), extra={"tasks": len(self.slots)}
        )

    def _step(
        self, x: torch.Tensor, y: torch.Tensor, trains: int, upto: int | None = None
    ) -> float:
        """One Adam step on the entries whose owner is ``trains``; the others' gradients are 0."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self._forward(x, upto), y)
        loss.backward()
        for name, param in self.net.named_parameters():
            param.grad.mul_(self.owner[name] == trains)
        self.optimizer.step()
        return float(loss.detach())

    def _close(self, budget: int | None, replay: Replay | None = None) -> int:
        """End the open slot, if any; return how many samples its retraining replayed.

        The retraining set is the ``replay`` samples (of earlier tasks too: they teach the task's
        entries not to claim the old classes' inputs), then the task's store."""
        if not self.slots.open:
            return 0
        mark = len(self.slots)  # the owner value of the newest slot
        with torch.no_grad():
            for name, param in self.net.named_parameters():
                keep = self._largest_free(param, self.owner[name])
                self.owner[name][keep] = mark
                self._reinitialise_free(name, param, mark)
        self.slots.open = False  # from here on its subnetwork excludes the free entries
        self.optimizer = self._fresh_optimizer()
        x, y = self.store_x, self.store_y
        if replay is not None and len(replay):
            x = torch.cat([self._inputs(replay.x), x])
            y = torch.cat([self._labels(replay.y, len(replay.x)), y])
        replayed = 0
        for _ in range(self.retrain_epochs):
            for start in range(0, len(y), RETRAIN_BATCH):
                xb, yb = x[start : start + RETRAIN_BATCH], y[start : start + RETRAIN_BATCH]
                if budget is not None and replayed + len(yb) > budget:
                    break
                self._step(xb, yb, trains=mark, upto=mark - 1)
                replayed += len(yb)
        self.store_x, self.store_y = self.store_x[:0], self.store_y[:0]
        self.optimizer = self._fresh_optimizer()
        return replayed

    def _reinitialise_free(self, name: str, param: torch.Tensor, mark: int) -> None:
        """Give the free entries fresh initial values (as ``nn.Linear`` draws them) for the next
        task: they are in no subnetwork yet, and a next task learns faster from them than from 0."""
        gen = torch.Generator().manual_seed(self.seed * 1000 + mark)
        bound = self.net[int(name.split(".")[0])].in_features ** -0.5
        fresh = (torch.rand(param.shape, generator=gen) * 2 - 1) * bound
        free = self.owner[name] == 0
        param.copy_(torch.where(free, fresh.to(param.device), param))

    def _largest_free(self, param: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """The ``1 - prune_fraction`` largest-magnitude free entries of ``param``."""
        free = owner == 0
        count = round((1.0 - self.prune_fraction) * int(free.sum()))
        keep = torch.zeros(param.numel(), dtype=torch.bool, device=param.device)
        scores = param.detach().abs().masked_fill(~free, -1.0).flatten()
        keep[scores.topk(count).indices] = True
        return keep.view_as(param)

    # -- inference --------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, upto: int | None) -> torch.Tensor:
        """The network with every entry (``upto=None``) or only those of slots ``<= upto`` (and the
        free entries if ``upto`` is the open slot: the free entries are the open slot's)."""
        for index, module in enumerate(self.net):
            if not isinstance(module, nn.Linear):
                x = module(x)
                continue
            weight, bias = module.weight, module.bias
            if upto is not None:
                weight = weight * self._visible(f"{index}.weight", upto)
                bias = bias * self._visible(f"{index}.bias", upto)
            x = nn.functional.linear(x, weight, bias)
        return x

    def _visible(self, name: str, upto: int) -> torch.Tensor:
        owner = self.owner[name]
        visible = (owner >= 1) & (owner <= upto + 1)
        if self.slots.open and upto == len(self.slots) - 1:
            visible |= owner == 0  # the open slot trains the free entries
        return visible

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class-incremental: the entries of every task (the free ones too while a task is open)."""
        return self._forward(self._inputs(x), self._newest())

    def _newest(self) -> int | None:
        return len(self.slots) - 1 if len(self.slots) else None

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """With a ``mask``, the subnetwork of the newest task that learned a masked class."""
        upto = self.slots.slot_of(mask) if mask is not None else None
        return self._probabilities(x, self._newest() if upto is None else upto, mask)

    @torch.inference_mode()
    def predict_task(
        self, x: torch.Tensor, task: str, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Probabilities from the subnetwork of the newest slot of ``task`` (KeyError if none)."""
        return self._probabilities(x, self.slots.slot_named(task), mask)

    def _probabilities(
        self, x: torch.Tensor, upto: int | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        x = self._inputs(x)
        return _masked_softmax(self._forward(x, upto), mask)

    # -- state ------------------------------------------------------------------------------------
    def grown_bytes(self, tasks: int) -> int:
        """Adam's moments and a full store; tasks add nothing (at most ``MAX_SLOTS``, in ``owner``)."""
        return 2 * parameter_bytes(self.net) + self.store_size * sample_bytes(self.input_dim)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = network_state(self.net, self.optimizer)
        state.update({f"owner.{n}": o.clone() for n, o in self.owner.items()})
        state.update(self.slots.state_dict())
        state.update({"store.x": self.store_x.clone(), "store.y": self.store_y.clone()})
        state["seed"] = torch.tensor(self.seed)  # it draws the fresh values of the free entries
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        prefixes = ("net.", "optim.net.", "owner.", "tasks.", "store.")
        unexpected = [k for k in state if k != "seed" and not k.startswith(prefixes)]
        if unexpected:
            raise ValueError(f"unexpected state entries {unexpected[:3]}")
        self.seed = int(state["seed"])
        self.optimizer = self._fresh_optimizer()
        load_network_state(self.net, self.optimizer, state, self.device)
        self.owner = {
            n: state[f"owner.{n}"].to(self.device, torch.uint8).clone() for n in self.owner
        }
        self.slots.load_state_dict(state)
        self.store_x = state["store.x"].to(self.device, torch.float32).clone()
        self.store_y = state["store.y"].to(self.device, torch.int64).clone()

    def to(self, device: torch.device | str) -> PackNet:
        super().to(device)
        self.net.to(self.device)
        move_optimizer(self.optimizer, self.device)
        self.owner = {n: o.to(self.device) for n, o in self.owner.items()}
        self.store_x, self.store_y = self.store_x.to(self.device), self.store_y.to(self.device)
        return self
