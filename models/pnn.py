"""Strategy "pnn": Progressive Neural Networks (Rusu et al., 2016).

Each task gets a new *column*, a small MLP ``input -> hidden -> hidden -> num_classes``; the
columns of earlier tasks are frozen (never in an optimiser, no gradients), so what they learned is
kept bit for bit. Lateral adapters feed every earlier column's hidden layers into the new column's
next layer (``hidden_1 -> hidden_2`` and ``hidden_2 -> head``), so a new task can reuse old
features without changing them.

Every head covers the global class space, trained (cross-entropy) on its own task's samples. The
logit of class ``c`` comes from the column that last learned it (``tasks.class_slot``; the newest
column for classes never seen), so predicting without a task compares the columns' own classes,
and a class ``mask`` (a known task) picks exactly the columns owning the masked classes.

``sleep`` calibrates the newest column against the replayed samples through those combined logits
(its classes learn to stay low on earlier classes' inputs); the earlier columns stay frozen.

A new column starts whenever the task changes (``None`` continues the current one) until
``max_columns`` exist; later tasks then go on training the newest column. Per column the cost
grows with the number of earlier columns (the adapters), so the total is quadratic in tasks.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from models.learner import Learner, Replay, Stats
from models.network import Epochs, LearningRate
from models.optim import adam
from models.registry import register
from models.sizing import parameter_bytes
from models.task_slots import TaskSlots
from models.torch_state import load_network_state, move_optimizer, network_state

SLEEP_BATCH = 32
Activity = tuple[torch.Tensor, torch.Tensor]  # one column's two hidden layers


class Column(nn.Module):
    """One task's MLP, with adapters from the hidden layers of ``earlier`` columns."""

    def __init__(self, input_dim: int, hidden: int, num_classes: int, earlier: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)
        self.lateral2 = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(earlier))
        self.lateral_head = nn.ModuleList(
            nn.Linear(hidden, num_classes, bias=False) for _ in range(earlier)
        )

    def forward(self, x: torch.Tensor, earlier: list[Activity]) -> tuple[Activity, torch.Tensor]:
        h1 = torch.relu(self.fc1(x))
        h2 = self.fc2(h1)
        for adapter, (old1, _) in zip(self.lateral2, earlier, strict=True):
            h2 = h2 + adapter(old1)
        h2 = torch.relu(h2)
        out = self.head(h2)
        for adapter, (_, old2) in zip(self.lateral_head, earlier, strict=True):
            out = out + adapter(old2)
        return (h1, h2), out


@register
class PNN(Learner):
    name = "pnn"
    settings = ("task", "class")

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        seed: int = 0,
        hidden: Annotated[int, Field(ge=1, le=4096)] = 100,
        lr: LearningRate = 1e-3,
        epochs_per_batch: Epochs = 1,
        max_columns: Annotated[int, Field(ge=1, le=64)] = 16,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed)
        self.hidden, self.lr = hidden, lr
        self.epochs_per_batch, self.max_columns = epochs_per_batch, max_columns
        self.columns = nn.ModuleList()
        self.slots = TaskSlots(num_classes)
        self.optimizer: torch.optim.Optimizer | None = None

    def _add_column(self) -> None:
        """Freeze the columns so far and append a fresh one (seeded by the seed and its index)."""
        self.columns.requires_grad_(False)
        for param in self.columns.parameters():
            param.grad = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1000 + len(self.columns))
            column = Column(
                self.input_dim, self.hidden, self.num_classes, earlier=len(self.columns)
            )
        self.columns.append(column.to(self.device))
        self.optimizer = adam(column.parameters(), lr=self.lr)

    # -- learning ---------------------------------------------------------------------------------
    def observe(self, x: torch.Tensor, y: torch.Tensor, task: str | None = None) -> Stats:
        x = self._inputs(x)
        y = self._labels(y, x.shape[0])
        if x.shape[0] == 0:
            return Stats()
        task = self.slots.resolve(task)
        if not self.slots.continues(task) and len(self.columns) < self.max_columns:
            self._add_column()
            self.slots.start(task)
        self.slots.learned(y)
        for _ in range(self.epochs_per_batch):
            loss = self._step(lambda inputs: self.column_outputs(inputs)[-1], x, y)
        return Stats(samples=int(x.shape[0]), loss=loss, extra={"columns": len(self.columns)})

    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        """Calibrate the newest column against the replayed samples (old classes' too), through
        the combined logits: its classes learn to stay low on the inputs of earlier columns'
        classes. The earlier columns stay frozen. At most ``budget`` samples, one pass."""
        x = self._inputs(replay.x)[:budget]
        y = self._labels(replay.y, len(replay.x))[:budget]
        loss = None
        for start in range(0, len(y) if self.columns else 0, SLEEP_BATCH):
            loss = self._step(
                self._combined, x[start : start + SLEEP_BATCH], y[start : start + SLEEP_BATCH]
            )
        return Stats(samples=len(y), loss=loss, extra={"columns": len(self.columns)})

    def _step(self, model, x: torch.Tensor, y: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    # -- inference --------------------------------------------------------------------------------
    def column_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each column's logits ``[B, num_classes]``, oldest first."""
        activity: list[Activity] = []
        outputs = []
        for column in self.columns:
            hidden, out = column(x, activity)
            activity.append(hidden)
            outputs.append(out)
        return outputs

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._combined(self._inputs(x))

    def _combined(self, x: torch.Tensor) -> torch.Tensor:
        """Each class's logit from the column that learned it."""
        if not self.columns:
            return torch.zeros(x.shape[0], self.num_classes, device=self.device)
        outputs = torch.stack(self.column_outputs(x))  # [columns, B, num_classes]
        owner = self.slots.class_slot.to(self.device)
        owner = torch.where(owner >= 0, owner, len(self.columns) - 1)
        return outputs[owner, :, torch.arange(self.num_classes, device=self.device)].T

    # -- state ------------------------------------------------------------------------------------
    def grown_bytes(self, tasks: int) -> int:
        """Its ``max_columns`` columns, whatever ``tasks``: they are its own bound (later tasks go on
        training the newest), and the last has the most adapters; Adam's moments of the newest."""
        with torch.device("meta"):
            columns = [parameter_bytes(Column(self.input_dim, self.hidden, self.num_classes, earlier=i))
                       for i in range(self.max_columns)]
        return sum(columns) + 2 * columns[-1]

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = network_state(self.columns, self.optimizer, prefix="columns")
        state["column_count"] = torch.tensor(len(self.columns))
        state["seed"] = torch.tensor(self.seed)  # later columns are seeded by it
        state.update(self.slots.state_dict())
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        unexpected = [
            k
            for k in state
            if k not in ("column_count", "seed")
            and not k.startswith(("columns.", "optim.columns.", "tasks."))
        ]
        if unexpected:
            raise ValueError(f"unexpected state entries {unexpected[:3]}")
        self.seed = int(state["seed"])
        self.columns, self.optimizer = nn.ModuleList(), None
        for _ in range(int(state["column_count"])):
            self._add_column()
        load_network_state(self.columns, self.optimizer, state, self.device, prefix="columns")
        self.slots.load_state_dict(state)

    def to(self, device: torch.device | str) -> PNN:
        super().to(device)
        self.columns.to(self.device)
        if self.optimizer is not None:
            move_optimizer(self.optimizer, self.device)
        return self
