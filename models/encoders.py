"""Encoders: turn a client's input into the flat float32 vectors every learner takes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def flatten_vector(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Flatten a batch of inputs of ``shape`` into ``[B, prod(shape)]`` float32 vectors.

    ``x`` is ``[B, *shape]`` (e.g. ``[B, 28, 28]`` for ``shape = [28, 28]``) or already
    ``[B, prod(shape)]``. The input is never modified; a ``ValueError`` names the expected shape
    otherwise.
    """
    dims = [int(d) for d in shape]
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"shape must be a non-empty list of positive sizes, got {list(shape)}")
    size = math.prod(dims)
    if list(x.shape[1:]) not in (dims, [size]):
        expected = ", ".join(map(str, dims))
        raise ValueError(f"inputs must have shape [B, {expected}], got {list(x.shape)}")
    return x.reshape(x.shape[0], size).to(torch.float32)
