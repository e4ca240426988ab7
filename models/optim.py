"""The optimiser every strategy trains with: Adam, fused.

``torch.optim.Adam``'s default on the CPU updates each parameter with a chain of separate tensor
operations. The fused kernel does the same update in one pass per parameter, which makes a
training step of the shared MLP markedly cheaper on the CPU (docs/bench/network-strategies.md). It
is the same Adam, equal to rounding; its state has the same keys and shapes, so a checkpoint
written with either loads in both.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adam(params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
