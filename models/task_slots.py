"""Task bookkeeping shared by the strategies that give each task its own parameters (PackNet, PNN).

A *slot* is one stretch of learning that owns parameters of its own: a PackNet mask, a PNN column.
``TaskSlots`` remembers the task name of each slot, whether the newest slot is still open for
learning, and which slot last learned each class (``class_slot``, ``-1`` for classes never seen), so
a prediction restricted to some classes can find the slot(s) that learned them.

Its state is tensors only: the names travel as the UTF-8 bytes of a JSON list (a ``uint8`` tensor).
The module also holds the batch checks every such strategy makes.
"""

from __future__ import annotations

import json

import torch


class TaskSlots:
    def __init__(self, num_classes: int) -> None:
        self.names: list[str] = []
        self.open = False  # the newest slot still learns (PackNet closes it at a boundary)
        self.class_slot = torch.full((num_classes,), -1, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.names)

    def resolve(self, task: str | None) -> str:
        """The task a batch belongs to: ``None`` continues the newest slot's task."""
        if task is not None:
            return task
        return self.names[-1] if self.names else ""

    def continues(self, task: str) -> bool:
        """Whether a batch of ``task`` goes on learning in the newest slot."""
        return self.open and bool(self.names) and self.names[-1] == task

    def start(self, task: str) -> int:
        self.names.append(task)
        self.open = True
        return len(self.names) - 1

    def learned(self, y: torch.Tensor) -> None:
        """The newest slot learned the classes in ``y``."""
        self.class_slot[y.cpu()] = len(self.names) - 1

    def slot_of(self, mask: torch.Tensor) -> int | None:
        """The newest slot that learned one of the classes in ``mask`` (None: none was learned)."""
        slots = self.class_slot[mask.cpu().bool()]
        slots = slots[slots >= 0]
        return int(slots.max()) if len(slots) else None

    def slot_named(self, task: str) -> int:
        """The newest slot that learned task ``task``."""
        for index in range(len(self.names) - 1, -1, -1):
            if self.names[index] == task:
                return index
        raise KeyError(f"unknown task {task!r}")

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self, prefix: str = "tasks") -> dict[str, torch.Tensor]:
        names = json.dumps(self.names).encode()
        return {
            f"{prefix}.names": torch.tensor(list(names), dtype=torch.uint8),
            f"{prefix}.open": torch.tensor(self.open),
            f"{prefix}.class_slot": self.class_slot.clone(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor], prefix: str = "tasks") -> None:
        class_slot = state[f"{prefix}.class_slot"]
        if class_slot.shape != self.class_slot.shape:
            raise ValueError(f"{prefix}.class_slot has shape {list(class_slot.shape)}")
        self.names = json.loads(bytes(state[f"{prefix}.names"].tolist()).decode())
        self.open = bool(state[f"{prefix}.open"])
        self.class_slot = class_slot.to(torch.int64).cpu().clone()

