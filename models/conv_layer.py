"""A fixed random convolutional front end for image-shaped inputs: the plastic brain's "eyes".

Plasticish looked through a frozen pretrained ResNet18; nothing may download here, and a frozen
*random* convolution is the order-invariant, data-free choice that works: ``filters`` zero-mean,
unit-norm ``size x size`` kernels drawn from the seed, a non-linearity, average pooling by
``pool``, and the result scaled to unit L2 norm per sample. Because it never changes, features
computed at any time stay valid: statistics gathered on them and memory keys never go stale.

``activation``:

- ``power`` (default): the magnitude of each response, averaged over the pooling window, raised to
  the power 0.2. Both signs of a kernel's match count, and the compressive power keeps a few strong
  responses from drowning the many weak ones in the readout's statistics.
- ``relu``: the positive part of each response, averaged over the pooling window (the front end of
  brains created before ``power`` existed).

Inputs are images ``[H, W]`` or ``[C, H, W]``, or flat vectors of ``s * s`` values, read as an
``s x s`` image. A random convolution on a flat vector whose values have no spatial layout is
still a good random feature map; docs/bench/eyes.md measures both cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from models.sizing import FLOAT

CHUNK = 256  # images convolved at once: bounds the activations before pooling


class ConvSpec(BaseModel):
    """Configuration of the convolutional front end (only as the first of a plastic brain's layers)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: Literal["conv"]
    filters: Annotated[int, Field(ge=1, le=512, description="random kernels")] = 64
    size: Annotated[int, Field(ge=1, le=15, description="kernel height and width")] = 5
    pool: Annotated[int, Field(ge=1, le=16, description="average pooling window and stride")] = 4
    activation: Literal["power", "relu"] = Field(
        "power", description="power: pooled magnitudes to the power 0.2; relu: pooled positive parts")


POWER = 0.2  # the exponent of ``activation="power"`` (chosen on validation images)


def image_shape(shape: Sequence[int]) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of an input shape ``[H, W]`` or ``[C, H, W]``, or ``(1, s, s)`` of a flat
    ``[s * s]``; None when it is not an image."""
    dims = tuple(int(d) for d in shape)
    if len(dims) == 1:
        side = math.isqrt(dims[0])
        return (1, side, side) if side > 1 and side * side == dims[0] else None
    if len(dims) == 2:
        return (1, *dims)
    if len(dims) == 3:
        return dims  # type: ignore[return-value]
    return None


class ConvLayer:
    STATE = ("filters",)

    def __init__(self, input_shape: Sequence[int], spec: ConvSpec, seed: int) -> None:
        shape = image_shape(input_shape)
        if shape is None:
            raise ValueError(f"a conv layer needs an image-shaped input ([H, W] or [C, H, W]), got {list(input_shape)}")
        channels, height, width = shape
        self.hidden = self.features(shape, spec)
        if self.hidden < 1:
            raise ValueError(f"a conv layer of size {spec.size} and pool {spec.pool} does not fit a "
                             f"{height} x {width} input")
        self.spec = spec
        self.input_shape = shape
        self.input_dim = math.prod(shape)
        generator = torch.Generator().manual_seed(seed)
        filters = torch.randn(spec.filters, channels, spec.size, spec.size, generator=generator)
        filters = filters - filters.mean(dim=(1, 2, 3), keepdim=True)
        self.filters = filters / filters.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]

    @staticmethod
    def features(shape: tuple[int, int, int], spec: ConvSpec) -> int:
        """How many features ``spec`` gives on images of ``shape`` ``(C, H, W)``; 0: it does not fit."""
        _, height, width = shape
        out_h, out_w = (height - spec.size + 1) // spec.pool, (width - spec.size + 1) // spec.pool
        return spec.filters * max(out_h, 0) * max(out_w, 0)

    def same_shape(self, other: object) -> bool:
        return isinstance(other, ConvLayer) and (self.input_shape, self.spec) == (other.input_shape, other.spec)

    def forward(self, xn: torch.Tensor) -> torch.Tensor:
        """Unit-norm features ``[B, hidden]`` of flat inputs ``[B, C*H*W]``, ``CHUNK`` images at a
        time (before pooling, an image's activations can be ``pool ** 2`` times its features)."""
        images = xn.reshape(-1, *self.input_shape)
        return torch.cat([self._features(block) for block in images.split(CHUNK)])

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.conv2d(images, self.filters)
        if self.spec.activation == "relu":
            h = torch.nn.functional.avg_pool2d(torch.relu(h), self.spec.pool).flatten(1)
        else:
            h = torch.nn.functional.avg_pool2d(h.abs(), self.spec.pool).flatten(1).pow(POWER)
        return h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def working_bytes(self, batch: int) -> int:
        """A chunk's convolution and activation outputs before pooling, and the batch's features."""
        _, height, width = self.input_shape
        before_pool = self.spec.filters * (height - self.spec.size + 1) * (width - self.spec.size + 1)
        return (2 * min(batch, CHUNK) * before_pool + 2 * batch * self.hidden) * FLOAT

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}filters": self.filters.detach().clone()}

    def copy_from(self, other: ConvLayer) -> None:
        self.filters = other.filters.clone()

    def to(self, device: torch.device) -> None:
        self.filters = self.filters.to(device)
