"""Choosing a ridge readout's penalty from its own training samples, by exact leave-one-out.

A ridge readout ``W = (A + λI)⁻¹ B`` over codes ``s`` with ``A = Σ s sᵀ`` and ``B = Σ s yᵀ`` has
closed-form leave-one-out predictions for every sample it was fitted on: with the hat value
``h = sᵀ (A + λI)⁻¹ s`` and the fitted score ``ŷ = Wᵀ s``, the prediction of the readout fitted
without that sample is ``y - (y - ŷ) / (1 - h)``. One eigendecomposition ``A = Q diag(d) Qᵀ``
serves every candidate ``λ``, so scoring a grid costs little more than one solve, and the scored
samples (a replay buffer's) are not held back from learning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Candidate penalties: half decades from 1e-4 to 1e3.
GRID = tuple(10 ** (e / 2) for e in range(-8, 7))
_MIN_LEVERAGE_GAP = 1e-6  # 1 - h below this: the sample alone determines its fit
EVIDENCE = 3.0  # standard errors of the accuracy gain needed to move away from the penalty in use


@dataclass(frozen=True)
class Choice:
    ridge: float
    accuracy: float  # leave-one-out accuracy of the chosen penalty
    squared_error: float  # its mean leave-one-out squared error over the one-hot targets


def leave_one_out(stat_a: torch.Tensor, stat_b: torch.Tensor, codes: torch.Tensor,
                  targets: torch.Tensor, ridges: tuple[float, ...]) -> list[torch.Tensor]:
    """Leave-one-out scores ``[N, C]`` of the ``N`` samples ``codes`` (each counted in ``stat_a``
    and ``stat_b``) with one-hot ``targets``, one tensor per penalty in ``ridges``."""
    eigenvalues, basis = torch.linalg.eigh(stat_a.double())
    eigenvalues = eigenvalues.clamp_min(0.0)  # A is a Gram matrix: negatives are rounding
    projected = codes.double() @ basis  # [N, H]
    readouts = basis.T @ stat_b.double()  # [H, C]
    targets = targets.double()
    out = []
    for ridge in ridges:
        inverse = 1.0 / (eigenvalues + ridge)
        fitted = (projected * inverse) @ readouts
        leverage = (projected * projected) @ inverse
        gap = (1.0 - leverage).clamp_min(_MIN_LEVERAGE_GAP)[:, None]
        out.append(targets - (targets - fitted) / gap)
    return out


def choose(stat_a: torch.Tensor, stat_b: torch.Tensor, codes: torch.Tensor, labels: torch.Tensor,
           allowed: torch.Tensor, ridges: tuple[float, ...] = GRID, *, current: float | None = None,
           evidence: float = EVIDENCE) -> Choice:
    """The penalty of ``ridges`` whose leave-one-out predictions of ``labels`` (among the classes
    ``allowed``, a ``[C]`` mask) are most often right; ties go to the lower squared error.

    With ``current`` (the penalty in use), the choice moves away from it only when the evidence is
    clear: the per-sample differences in correctness between the best penalty and ``current`` must
    have a mean at least ``evidence`` standard errors above zero (a paired test, as McNemar's).
    Otherwise ``current`` is kept: a few hundred samples rank neighbouring penalties by chance."""
    targets = torch.nn.functional.one_hot(labels, stat_b.shape[1]).to(codes.device)
    candidates = tuple(dict.fromkeys((*ridges, *(() if current is None else (current,)))))
    scored: dict[float, tuple[Choice, torch.Tensor]] = {}
    for ridge, scores in zip(candidates, leave_one_out(stat_a, stat_b, codes, targets, candidates)):
        right = (scores.masked_fill(~allowed, float("-inf")).argmax(dim=1) == labels).double()
        scored[ridge] = (Choice(ridge, float(right.mean()), float(((scores - targets) ** 2).sum(dim=1).mean())), right)
    best = max((scored[r][0] for r in ridges), key=lambda c: (c.accuracy, -c.squared_error))
    if current is None or best.ridge == current:
        return best
    gain = scored[best.ridge][1] - scored[current][1]
    spread = float(gain.std()) / max(len(gain), 1) ** 0.5
    return best if float(gain.mean()) >= evidence * max(spread, 1e-12) else scored[current][0]
