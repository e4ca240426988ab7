"""How many bytes a learner needs, found without allocating them.

A learner built under ``torch.device("meta")`` (:func:`on_meta`) has every tensor's shape and dtype
and no data, however large its params ask it to be. Its size (:func:`learner_bytes`) is then

- the bytes of its ``state_dict()`` as built (weights, statistics, preallocated memories);
- plus ``Learner.grown_bytes(tasks)``: what it gains as it learns (Adam's two moments per trained
  weight, episodic memories once full, a GEM memory and reference gradient per task, a MyGO head
  and generator per task, PNN's columns up to ``max_columns``);
- plus ``Learner.working_bytes(batch)``: the temporary tensors of one call over ``batch`` samples,
  where the strategy's can outgrow its state (plastic's convolution and readout solve).

Each strategy's file holds its own part of the estimate, next to the code that allocates it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from models.learner import Learner
from models.registry import create

FLOAT = 4  # bytes of a float32
LABEL = 8  # bytes of an int64 label


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def parameter_bytes(module: nn.Module) -> int:
    return tensor_bytes(module.parameters())


def sample_bytes(input_dim: int) -> int:
    """One stored sample: its float32 values and its int64 label."""
    return input_dim * FLOAT + LABEL


def on_meta(
    name: str,
    *,
    input_dim: int,
    num_classes: int,
    params: dict | None = None,
    input_shape: Sequence[int] | None = None,
) -> Learner:
    """The learner ``registry.create`` would build, on the meta device: no tensor has data."""
    with torch.device("meta"):
        return create(name, input_dim=input_dim, num_classes=num_classes, params=params, input_shape=input_shape)


def learner_bytes(learner: Learner, *, tasks: int, batch: int) -> int:
    """The most bytes ``learner`` (best built :func:`on_meta`) comes to hold after ``tasks`` tasks,
    with calls of up to ``batch`` samples."""
    return tensor_bytes(learner.state_dict().values()) + learner.grown_bytes(tasks) + learner.working_bytes(batch)
