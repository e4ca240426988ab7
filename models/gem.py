"""Strategy "gem": gradient episodic memory (Lopez-Paz & Ranzato, 2017).

Each task (the ``task`` argument of ``observe``) gets its own episodic memory of up to
``memory_per_task`` samples (reservoir). At every optimisation step the gradient ``g`` of the
current batch is compared with the gradient ``g_k`` of the loss on each previous task's memory. If
any ``g . g_k < 0`` (the step would raise that task's loss), ``g`` is replaced by the closest
``z`` with ``G z >= 0`` through the dual quadratic program of the paper:
``min_v 1/2 v^T G G^T v + (G g)^T v  s.t.  v >= margin``, ``z = G^T v + g``, a QP in the number of
tasks only, solved exactly by an active-set method (``solve_dual``).

Sleep: GEM's constraints keep a wake step from raising an old task's loss, but seven batches
(a task of Split MNIST-5k) leave little room to learn under them. At sleep the strategy rehearses
``sleep_share`` of the service's budget from its memories and the service's replay, with plain
steps (``NetworkLearner.rehearse_memories``): the rehearsed samples stand for every task at once.
A quarter of the budget is the default: more rehearsal gains accuracy but costs time, and GEM's
wake steps are already costly (one forward and backward pass per old task). The three settings
side by side: docs/bench/network-strategies.md.

CLM's GEM built a dense ``eye(#params)`` QP with a constraint matrix of the wrong shape, caught the
resulting exception and used the raw gradient: it never projected. The tests here check that after
the projection every memory gradient has a non-negative dot product with the step.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from models.learner import Replay, Stats
from models.network import (
    Epochs,
    Hidden,
    LearningRate,
    NetworkLearner,
    SleepShare,
    tensor_text,
    text_tensor,
)
from models.registry import register
from models.sample_memory import SampleMemory
from models.sizing import parameter_bytes, sample_bytes

MemoryPerTask = Annotated[int, Field(ge=1, le=100_000)]


def solve_dual(p: torch.Tensor, c: torch.Tensor, tol: float = 1e-12) -> torch.Tensor:
    """The exact minimiser of ``1/2 u^T p u + c^T u`` over ``u >= 0`` for a positive definite ``p``.

    Lawson-Hanson style active set: free the variable whose gradient is most negative, solve the
    equality-constrained problem on the free set, step back to feasibility when a variable would
    turn negative; finite, exact up to rounding.
    """
    u = torch.zeros_like(c)
    free = torch.zeros_like(c, dtype=torch.bool)
    for _ in range(3 * len(c) + 10):
        descent = -(p @ u + c)
        descent[free] = -torch.inf
        if bool(free.all()) or float(descent.max()) <= tol:
            break
        free[int(descent.argmax())] = True
        while True:
            s = torch.zeros_like(u)
            idx = free.nonzero().squeeze(1)
            s[idx] = torch.linalg.solve(p[idx][:, idx], -c[idx])
            if bool((s[idx] > 0).all()):
                u = s
                break
            blocking = free & (s <= 0)
            alpha = float((u[blocking] / (u[blocking] - s[blocking])).min())
            u = u + alpha * (s - u)
            free &= u > tol
    return u


def project(g: torch.Tensor, refs: torch.Tensor, margin: float) -> torch.Tensor:
    """GEM's projection of ``g`` [P] against the memory gradients ``refs`` [T, P]."""
    gram = (refs @ refs.T).double()
    gram += 1e-10 * gram.diagonal().mean() * torch.eye(len(refs), dtype=gram.dtype, device=gram.device)
    linear = (refs @ g).double()
    # v = margin + u with u >= 0: the dual's linear term gains gram @ (margin * 1).
    v = margin + solve_dual(gram, linear + gram.sum(dim=1) * margin)
    return g + (v.to(g.dtype) @ refs)


@register
class GEM(NetworkLearner):
    name = "gem"
    settings = ("class", "task", "domain")
    state_prefixes = ("gem.",)

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
        margin: Annotated[float, Field(ge=0.0, le=100.0)] = 0.5,
        sleep_share: SleepShare = 0.25,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed, hidden=hidden,
                         lr=lr, epochs_per_batch=epochs_per_batch)
        self.memory_per_task, self.margin, self.sleep_share = memory_per_task, margin, sleep_share
        self.memories: dict[str, SampleMemory] = {}  # task name -> its memory, in order of arrival

    def _memory(self, task: str) -> SampleMemory:
        if task not in self.memories:
            self.memories[task] = SampleMemory(capacity=self.memory_per_task, device=self.device,
                                               input_dim=self.input_dim, seed=self.seed + len(self.memories))
        return self.memories[task]

    def remember(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._memory(self.task or "").add(x, y)

    def previous(self) -> list[SampleMemory]:
        """The non-empty memories of the tasks other than the current one."""
        return [m for t, m in self.memories.items() if t != (self.task or "") and len(m)]

    def reference_gradients(self) -> torch.Tensor | None:
        """``[T, P]``: one gradient per previous task, on its whole memory."""
        old = self.previous()
        return torch.stack([self.gradient(m.x, m.y) for m in old]) if old else None

    def project(self, g: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        return project(g, refs, self.margin)

    def adjust_gradients(self, x: torch.Tensor, y: torch.Tensor) -> None:
        refs = self.reference_gradients()
        if refs is None:
            return
        g = self.flat_grad()
        if bool((refs @ g < 0).any()):
            self.set_flat_grad(self.project(g, refs))

    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        memories = [m for m in self.memories.values() if len(m)]
        return self.rehearse_memories(memories, replay, round(self.sleep_share * budget))

    def stored_samples(self) -> int:
        return sum(len(memory) for memory in self.memories.values())

    def grown_bytes(self, tasks: int) -> int:
        """Adam's moments, a full memory per task and a wake step's reference gradients."""
        memories = tasks * self.memory_per_task * sample_bytes(self.input_dim)
        return super().grown_bytes(tasks) + memories + self.reference_bytes(tasks)

    def reference_bytes(self, tasks: int) -> int:
        """A wake step's reference gradients: one per previous task."""
        return max(tasks - 1, 0) * parameter_bytes(self.net)

    def extra_state(self) -> dict[str, torch.Tensor]:
        state = {"gem.tasks": text_tensor("\0".join(self.memories)),
                 "gem.count": torch.tensor(len(self.memories))}
        for i, memory in enumerate(self.memories.values()):
            state |= memory.state(f"gem.{i}")
        return state

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        count = int(state["gem.count"])
        names = (tensor_text(state["gem.tasks"]) or "").split("\0")[:count] if count else []
        self.memories = {}
        for i, name in enumerate(names):
            self._memory(name).load(state, f"gem.{i}", self.device)
