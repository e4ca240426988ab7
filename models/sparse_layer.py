"""One pluggable layer of the plastic brain (``models.plastic``): a sparse, self-organising code.

A layer maps normalised inputs ``[B, input_dim]`` to a sparse code ``[B, hidden]``: the encoder
``w_enc [hidden, input_dim]`` has unit-norm rows, so activations are cosine similarities, and
k-winner-take-all keeps exactly ``k`` of them per sample. While awake it keeps per-unit firing
statistics and, unless frozen, learns:

- *competitive Hebbian plasticity*: each sample's best unit, if immature, moves toward the mean of
  the samples it won (``hebbian_lr``);
- *neurogenesis*: a unit that is immature, fires below ``dead_fraction`` of the expected rate
  ``k / hidden`` and has never won since it was born moves toward the batch's worst represented
  inputs, so recycling never erases anything learned.

``consolidate`` (called by sleep) makes units that fired at least ``maturity_fraction`` of the
expected rate since the last consolidation mature: they are never moved again.

A layer's configuration is a :class:`LayerSpec`, part of the brain's params; its state is tensors.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from models.sizing import FLOAT


class LayerSpec(BaseModel):
    """Configuration of one plastic layer."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: Literal["sparse"] = "sparse"
    hidden: Annotated[int, Field(ge=2, le=8192, description="units of the sparse code")] = 2048
    k: Annotated[int, Field(ge=1, description="active units per sample (k-winner-take-all)")] = 256
    hebbian_lr: Annotated[
        float, Field(ge=0, le=1, description="step of an immature winner toward its inputs")
    ] = 0.0
    frozen: bool = Field(False, description="no Hebbian learning and no neurogenesis")
    neurogenesis: bool = Field(True, description="recycle dead units toward poorly coded inputs")


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Centre each row on its own mean and scale it to unit L2 norm (stateless)."""
    centred = x - x.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _unit_rows(w: torch.Tensor) -> torch.Tensor:
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


class SparseLayer:
    STATE = ("w_enc", "mature", "freq", "period_wins", "lifetime_wins")

    def __init__(self, input_dim: int, spec: LayerSpec, seed: int) -> None:
        self.input_dim = input_dim
        self.spec = spec
        self.hidden, self.k = spec.hidden, spec.k
        self.expected_rate = spec.k / spec.hidden
        generator = torch.Generator().manual_seed(seed)
        self.w_enc = _unit_rows(torch.randn(spec.hidden, input_dim, generator=generator))
        self.mature = torch.zeros(spec.hidden, dtype=torch.bool)
        self.freq = torch.full((spec.hidden,), self.expected_rate)
        self.period_wins = torch.zeros(spec.hidden)
        self.lifetime_wins = torch.zeros(spec.hidden)

    def same_shape(self, other: object) -> bool:
        return isinstance(other, SparseLayer) and (
            (self.input_dim, self.hidden, self.k) == (other.input_dim, other.hidden, other.k)
        )

    # -- coding -----------------------------------------------------------------------------------
    def forward(self, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Activations ``[B, hidden]``, winners ``[B, k]`` and the sparse code ``[B, hidden]``."""
        act = xn @ self.w_enc.T
        top, winners = act.topk(self.k, dim=1)
        code = torch.zeros_like(act).scatter_(1, winners, top)
        return act, winners, code

    def code(self, xn: torch.Tensor) -> torch.Tensor:
        """The sparse code ``[B, hidden]`` alone (what ``forward`` returns last). Its winners need no
        order, and torch's unsorted top-k is cheaper (``sorted=True`` also orders the k winners;
        the saving is measured in docs/benchmarks.md, "What stands in the way")."""
        act = xn @ self.w_enc.T
        top, winners = act.topk(self.k, dim=1, sorted=False)
        return torch.zeros_like(act).scatter_(1, winners, top)

    def working_bytes(self, batch: int) -> int:
        """A batch's activations and code (and, while it learns, a Hebbian sum as large as ``w_enc``)."""
        hebbian = self.w_enc.numel() * FLOAT if self.spec.hebbian_lr > 0 and not self.spec.frozen else 0
        return 3 * batch * self.hidden * FLOAT + hebbian

    # -- wake -------------------------------------------------------------------------------------
    def learn(self, xn: torch.Tensor, winners: torch.Tensor, firing_ema: float) -> None:
        """Update the firing statistics and, unless frozen, take a competitive Hebbian step."""
        batch = xn.shape[0]
        wins = torch.bincount(winners.flatten(), minlength=self.hidden).float()
        self.freq.mul_(1.0 - firing_ema).add_(firing_ema * wins / batch)
        self.period_wins += wins
        self.lifetime_wins += wins
        if self.spec.frozen or self.spec.hebbian_lr == 0:
            return
        best = winners[:, 0]
        won = torch.bincount(best, minlength=self.hidden).float()
        learn = (won > 0) & ~self.mature
        if bool(learn.any()):
            sums = torch.zeros_like(self.w_enc).index_add_(0, best, xn)
            target = sums[learn] / won[learn, None]
            moved = self.w_enc[learn] + self.spec.hebbian_lr * (target - self.w_enc[learn])
            self.w_enc[learn] = _unit_rows(moved)

    def neurogenesis(
        self, xn: torch.Tensor, best: torch.Tensor, *, dead_fraction: float, max_new: int, step: float
    ) -> torch.Tensor:
        """Recycle up to ``max_new`` dead units toward the inputs with the lowest ``best``
        activation; returns the recycled units' indices (the caller resets what reads them)."""
        none = torch.zeros(0, dtype=torch.int64, device=xn.device)
        if self.spec.frozen or not self.spec.neurogenesis or max_new == 0:
            return none
        dead = ~self.mature & (self.freq < dead_fraction * self.expected_rate)
        dead &= self.lifetime_wins == 0
        usable = xn.norm(dim=1) > 0.5  # constant inputs normalise to zero: nothing to learn
        n = min(int(dead.sum()), int(usable.sum()), max_new)
        if n == 0:
            return none
        dead_idx = torch.nonzero(dead).flatten()
        units = dead_idx[torch.argsort(self.freq[dead_idx], stable=True)[:n]]
        inputs = torch.argsort(best.masked_fill(~usable, float("inf")), stable=True)[:n]
        self.w_enc[units] = _unit_rows(self.w_enc[units] + step * (xn[inputs] - self.w_enc[units]))
        self.freq[units] = self.expected_rate
        self.period_wins[units] = 0.0
        return units

    # -- sleep ------------------------------------------------------------------------------------
    def consolidate(self, maturity_fraction: float, samples: int) -> int:
        """Units that fired at least ``maturity_fraction`` of the expected rate over the ``samples``
        seen since the last consolidation become mature; returns how many did."""
        rate = self.period_wins / max(samples, 1)
        newly = ~self.mature & (rate >= maturity_fraction * self.expected_rate) if samples else None
        self.period_wins.zero_()
        if newly is None:
            return 0
        self.mature |= newly
        return int(newly.sum())

    # -- state ------------------------------------------------------------------------------------
    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}{name}": getattr(self, name).detach().clone() for name in self.STATE}

    def copy_from(self, other: SparseLayer) -> None:
        for name in self.STATE:
            setattr(self, name, getattr(other, name).clone())

    def to(self, device: torch.device) -> None:
        for name in self.STATE:
            setattr(self, name, getattr(self, name).to(device))
