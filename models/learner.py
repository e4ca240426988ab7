"""The contract every learning strategy fulfils.

A learner sees samples as flat float32 vectors ``x`` of shape ``[B, input_dim]`` and labels as
class indices ``y`` of shape ``[B]`` in ``[0, num_classes)``. The service owns the mapping from
client labels (strings or integers) to indices and the task registry; a learner only needs to know
the task name of a batch when its strategy uses it (task-aware strategies).

State is tensors only: ``state_dict()`` returns ``dict[str, Tensor]`` (scalars as 0-d tensors), so
a checkpoint is a safetensors file plus the JSON of the constructor arguments. Nothing is pickled.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

Setting = Literal["class", "task", "domain"]


class Unsupported(Exception):
    """The strategy does not offer an optional capability (meta-training, reconfiguration); the
    message names the strategy and the capability."""


@dataclass(frozen=True)
class Replay:
    """Samples drawn from the episodic replay buffer, handed to ``sleep``."""

    x: torch.Tensor  # [N, input_dim] float32
    y: torch.Tensor  # [N] int64

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Stats:
    """What one call did, reported to the job record. Plain JSON values only."""

    samples: int = 0
    loss: float | None = None
    extra: dict[str, float | int | str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"samples": self.samples, "loss": self.loss, **self.extra}


class Learner(ABC):
    """Base class of every strategy.

    Subclasses set ``name`` and ``settings`` and take their hyperparameters as keyword-only,
    type-annotated constructor arguments with defaults (besides ``input_dim``, ``num_classes`` and
    ``seed``, which the service passes). Those arguments are exactly the strategy's ``params``.
    """

    name: ClassVar[str]
    settings: ClassVar[tuple[Setting, ...]] = ("class", "task", "domain")
    #: Optional capability: the strategy implements ``meta_train`` (learning how to learn).
    meta_trainable: ClassVar[bool] = False
    #: Optional capability (a sharded wake): under which params and state ``mergeable()`` holds, in
    #: words for ``GET /v1/strategies``; None: never.
    mergeable_when: ClassVar[str | None] = None

    def __init__(self, *, input_dim: int, num_classes: int, seed: int = 0) -> None:
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.seed = seed
        # torch's default device: the CPU, or "meta" while ``models.sizing`` measures a learner
        self.device = torch.get_default_device()

    @classmethod
    def check_params(cls, params: dict) -> None:
        """Reject combinations of hyperparameters that are each valid alone (raise ValueError).

        Single-parameter types and ranges are declared on the constructor's annotations; this hook
        is for constraints between parameters (e.g. ``k < hidden``). The default accepts all.
        """

    # -- learning ---------------------------------------------------------------------------------
    @abstractmethod
    def observe(self, x: torch.Tensor, y: torch.Tensor, task: str | None = None) -> Stats:
        """Wake: learn from one batch, at once. Must not mutate ``x`` or ``y``."""

    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        """Consolidate: ``budget`` bounds the optimisation work (e.g. replayed samples)."""
        return Stats()

    def meta_train(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        steps: int,
        inner_steps: int,
        progress: Callable[[float], None] | None = None,
    ) -> Stats:
        """Optional (``meta_trainable``): meta-learn on a background set ``(x, y)`` whose labels are
        the set's own (not this learner's classes) so that later ``observe`` learns new classes
        better. ``progress`` receives the fraction done. The base class cannot."""
        raise Unsupported(f"strategy {self.name!r} cannot be meta-trained")

    # -- a sharded wake (optional) ----------------------------------------------------------------
    def mergeable(self) -> bool:
        """Whether this learner's wake, as configured and in its present state, is a sum of
        per-sample statistics: then, for any split of a stream of batches into consecutive shards,

            merge(sum over every batch of wake_statistics(batch))  ==  observe(batch) for each batch

        to floating-point tolerance (the sums in any order), so that shards are learned apart (by
        several workers, each on its own copy) and merged in one place. The base class: never."""
        return False

    def wake_statistics(self, x: torch.Tensor, y: torch.Tensor, task: str | None = None) -> dict[str, torch.Tensor]:
        """What ``observe(x, y, task)`` would add to this learner, as named tensors that add up
        (:func:`add_statistics`); changes nothing. Only while ``mergeable()``, else Unsupported."""
        raise Unsupported(f"strategy {self.name!r} cannot merge wake statistics")

    def merge(self, statistics: dict[str, torch.Tensor]) -> Stats:
        """Learn what ``statistics`` (summed ``wake_statistics``) hold, as if their batches had been
        observed. Only while ``mergeable()``, else Unsupported; ValueError for statistics of another
        shape."""
        raise Unsupported(f"strategy {self.name!r} cannot merge wake statistics")

    def stored_samples(self) -> int:
        """Raw samples this learner keeps inside its state (its own episodic memories), reported by
        the benchmarks next to the service's replay buffer. The base class keeps none."""
        return 0

    # -- size (``models.sizing``) --------------------------------------------------------------------
    def grown_bytes(self, tasks: int) -> int:
        """Bytes its state gains as it learns, beyond what a new learner holds: optimiser moments,
        memories that fill up, and what each of ``tasks`` tasks adds. The base class gains none."""
        return 0

    def working_bytes(self, batch: int) -> int:
        """Bytes of the temporary tensors that a call over ``batch`` samples makes, where they can
        outgrow the state (e.g. a convolution's activations before pooling). The base class: 0."""
        return 0

    def meta_train_bytes(self, *, inner_steps: int, classes: int, first_order: bool | None = None) -> int:
        """Bytes that ``meta_train`` over ``classes`` background classes holds beyond the state (its
        optimiser, the graph of its inner steps). The base class cannot meta-train: 0."""
        return 0

    def reconfigure(self, params: dict) -> Learner:
        """Optional: a learner with the new, validated ``params`` that keeps what this one learned
        (a brain's params changed after creation). Strategies that can override it; the base class
        cannot, since its state's shapes follow the params."""
        raise Unsupported(f"strategy {self.name!r} cannot change its params after creation")

    # -- inference --------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class probabilities ``[B, num_classes]``; classes where ``mask`` is False get 0.

        Pure: it never changes the learner's state.
        """
        return _masked_softmax(self.logits(x), mask)

    @abstractmethod
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised class scores ``[B, num_classes]``; pure, like ``predict``."""

    # -- state ------------------------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything needed to predict and to go on learning, as tensors (copies, not views)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``state_dict`` returned; afterwards the learner is indistinguishable."""

    # -- input checks shared by the strategies -------------------------------------------------------
    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as float32 on the learner's device; ``ValueError`` unless it is ``[B, input_dim]``."""
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"x must have shape [B, {self.input_dim}], got {list(x.shape)}")
        return x.to(self.device, torch.float32)

    def _labels(self, y: torch.Tensor, batch: int) -> torch.Tensor:
        """``y`` as int64 on the device; ``ValueError`` unless ``[batch]`` indices of known classes."""
        y = y.to(self.device, torch.int64)
        if y.shape != (batch,) or bool(((y < 0) | (y >= self.num_classes)).any()):
            raise ValueError(f"y must be [B] class indices in [0, {self.num_classes})")
        return y

    def to(self, device: torch.device | str) -> Learner:
        """Move tensors to ``device``; strategies with tensors override and call super()."""
        self.device = torch.device(device)
        return self


def add_statistics(total: dict[str, torch.Tensor], part: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add ``part`` (``Learner.wake_statistics``) into ``total`` in place, key by key (an empty
    ``total`` takes copies); returns ``total``."""
    if total and total.keys() != part.keys():
        raise ValueError(f"statistics {sorted(part)} do not add to {sorted(total)}")
    for name, value in part.items():
        if name in total:
            total[name] += value
        else:
            total[name] = value.clone()
    return total


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        scores = scores.masked_fill(~mask.to(scores.device), float("-inf"))
    return torch.softmax(scores, dim=-1)
