"""Strategy "plastic": the triarchic plastic brain (after Plasticish), with every mechanism working.

The brain is a stack of pluggable layers, a core and a context readout over the top layer's code,
the sufficient statistics of a closed-form readout and an optional episodic memory.

Wake (``observe``, one cheap step per batch):

1. *Normalise.* Each input is centred on its own mean and scaled to unit L2 norm. The map has no
   state, so prediction changes nothing.
2. *Eyes.* For image-shaped inputs (``[H, W]`` or ``[C, H, W]``) the default first layer is a fixed
   random convolution (``models.conv_layer``: 64 kernels of 5 x 5, ReLU, average pooling by 4,
   unit norm). It never changes, so everything gathered on its features stays valid.
3. *Sparse code, layer by layer* (``models.sparse_layer``; the default for other raw inputs: one
   layer of 2,048 units, k = 256; none for an encoder's features, such as text embeddings, which
   the readout reads as they are, normalised). Each gives a k-winner-take-all code of its normalised input; the next
   layer reads the normalised code. Each keeps firing statistics, learns by competitive Hebbian
   plasticity unless frozen, and recycles dead units (neurogenesis) toward poorly coded inputs.
4. *Sufficient statistics* ``A = Σ s sᵀ``, ``B = Σ s onehot(y)ᵀ`` and class counts, over all codes.
5. *Core readout* ``W_core [num_classes, hidden]``:
   - ``readout="closed_form"`` (default): the ridge solution ``(A + ridge·I)⁻¹ B`` (Cholesky),
     re-solved whenever the statistics changed, lazily (at the next prediction or checkpoint). It
     depends on what was seen, not on its order: with a fixed code, the same samples in any order
     give the same readout, which is what keeps old classes in class-incremental learning, between
     sleeps as well as after them. ``ridge="auto"`` (default) starts from a penalty that suits
     the code it reads and lets each sleep choose it (below); a number fixes it.
   - ``readout="delta"`` (Plasticish's triarchic core): a delta-rule step (the softmax
     cross-entropy gradient), each synapse scaled by ``1 - importance``, the consolidation brake (a
     synapse of importance 1 gets exactly zero update); re-solved in closed form at sleep.
6. *Context* ``W_ctx`` decays by ``context_decay`` per step; with the delta core it also takes the
   same step with the larger ``context_lr``: it carries what was just seen and fades.
7. *Episodic memory* (``memory_capacity`` slots, 0 by default: no stored samples). Normalised
   inputs (or the eyes' features) go to a ring buffer per class, so a new class never flushes an
   old one out. Prediction mixes the readout's softmax with a similarity-weighted vote of the
   ``memory_k`` nearest stored inputs (``memory_weight``). A changed architecture rebuilds its
   readout from it.

Sleep (``sleep``):

1. With ``ridge="auto"``, the penalty is chosen from the replayed samples: every sample counted in
   the statistics has an exact leave-one-out prediction in closed form (``models.ridge``), so each
   candidate penalty is scored on the replay without holding any sample back from learning; the
   one whose held-out predictions are most often right replaces the penalty in use when its gain
   is clear (three standard errors of the paired difference), not a ranking by chance. This is
   the part of sleep that changes a closed-form brain's predictions: how strongly to regularise
   depends on how many samples were seen and how noisy they are, which only the data can tell. In
   panic mode the penalty is left alone (the statistics hold none of the shift). Then the core is
   re-solved in closed form (both readouts).
2. Importance rises on the core synapses that carry correct recall of the replayed samples:
   ``imp[c] += importance_rate · mean over replayed class-c samples of (code / max code) ·
   correct``, clamped to [0, 1] (it brakes the delta core).
3. ``consolidate()``: the context decays by ``sleep_context_decay``; in every sparse layer, units
   whose firing rate since the last consolidation is at least ``maturity_fraction`` times the
   expected rate become mature (locked); the win counts restart.

Modes (``mode``):

- ``plastic`` (default): everything above.
- ``panic``: for a temporary shift of the input distribution (inverted colours, a noisy sensor),
  during which the long-term parts must not be overwritten. Predictions come from the context
  alone, which learns at ``panic_lr`` and does not decay while the panic lasts; neurogenesis
  recruits ``panic_gain`` times as many units for the novel inputs; the core, the statistics and
  the episodic memory are left untouched. Switching back to ``plastic`` lets the context decay
  back (per wake step and at sleep), and what was known before the shift is intact. Panic helps
  accuracy on the shifted inputs with the delta readout; the closed-form readout absorbs a shift
  such as inverted colours in plastic mode too, and there panic's use is to keep the shift out of
  the long-term statistics. Figures and command: docs/bench/panic.md.

Layers and the mode change through the brain's params after creation (``reconfigure``): a layer
whose position, input and size are unchanged keeps its weights (its flags, e.g. ``frozen``, follow
the new params); layers from the first changed one upwards start fresh. When the top layer's code
changed, the readout statistics are rebuilt from the episodic memory (refused without one) and the
readout re-solved. The eyes cannot change once something was learned.

The defaults were chosen on Split Fashion-MNIST (docs/benchmarks.md gives the figures and the
commands); a closed-form readout gains nothing from Hebbian learning or a stacked sparse layer,
because every change of the code makes the statistics gathered before it stale.

There is no randomness after the seeded initialisation of the layers, and all state is tensors, so
a reloaded learner predicts and learns exactly as the original would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import torch
from pydantic import Discriminator, Field, Tag

from models import ridge as ridge_loo
from models.conv_layer import ConvLayer, ConvSpec, image_shape
from models.learner import Learner, Replay, Stats
from models.registry import register
from models.sizing import FLOAT
from models.sparse_layer import LayerSpec, SparseLayer, normalise


def _layer_type(value: Any) -> str:
    return value.get("type", "sparse") if isinstance(value, dict) else getattr(value, "type", "sparse")


Layer = Annotated[
    Annotated[LayerSpec, Tag("sparse")] | Annotated[ConvSpec, Tag("conv")], Discriminator(_layer_type)
]

_QUERY_CHUNK = 2048  # queries per block when comparing with the memory
_LAYER_SEED_STRIDE = 7919  # layer i is initialised from seed + i * stride
_MIN_CONV_FEATURES = 1024  # below, the sparse layer (2,048 units) is the default: a rule, not a measurement
# ridge "auto" before its first sleep, by the code the readout reads (the conv front end's dense
# features want far less than a sparse layer's code; chosen on validation images: docs/bench/ridge.md;
# "input": the normalised input itself, chosen on validation texts: docs/bench/text.md)
_FIRST_RIDGE = {"conv": 0.003, "sparse": 0.1, "input": 1.0}
_MIN_RIDGE_SAMPLES = 20  # replayed samples needed to choose the ridge at sleep


@register
class Plastic(Learner):
    name = "plastic"
    mergeable_when = ("its wake shards when no sparse layer learns a code (layers: the conv eyes alone, "
                      "the image default, or none, an encoder's default), readout closed_form, mode "
                      "plastic, memory_capacity 0 and no context left by a panic")

    # Everything besides the layers that changes while learning; ``state_dict`` holds these tensors
    # and every layer's under ``layers.<i>.``.
    _STATE = (
        "period_samples", "w_core", "w_ctx", "importance", "stat_a", "stat_b", "class_counts",
        "memory_keys", "memory_writes", "ridge_value",
    )
    # State added after checkpoints were first written: an older checkpoint without it loads with
    # the value the constructor gives.
    _ADDED_STATE = frozenset({"ridge_value"})

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        seed: int = 0,
        input_shape: Sequence[int] | None = None,
        encoded: bool = False,
        layers: Annotated[
            list[Layer] | None,
            Field(max_length=8, description="the layers, input first; a conv layer only first and for "
                  "image-shaped inputs; none: the readout reads the normalised input; default: conv for "
                  "images, none for an encoder's features (text), else one sparse layer"),
        ] = None,
        readout: Annotated[
            Literal["closed_form", "delta"],
            Field(description="closed_form: the core is the ridge solution of the statistics, always "
                  "current; delta: a delta rule braked by importance, re-solved only at sleep"),
        ] = "closed_form",
        mode: Annotated[
            Literal["plastic", "panic"], Field(description="panic: adapt to a temporary shift in the context only")
        ] = "plastic",
        panic_lr: Annotated[
            float, Field(gt=0, le=100, description="delta-rule rate of the context in panic")
        ] = 3.0,
        panic_gain: Annotated[
            float, Field(ge=1, le=100, description="neurogenesis multiplier in panic")
        ] = 4.0,
        panic_memory_weight: Annotated[
            float, Field(ge=0, le=1, description="share of the memory's vote in panic")
        ] = 0.0,
        firing_ema: Annotated[
            float, Field(gt=0, le=1, description="rate of the firing-frequency average")
        ] = 0.05,
        dead_fraction: Annotated[
            float, Field(ge=0, le=1, description="dead below this fraction of the expected rate")
        ] = 0.1,
        max_new_per_step: Annotated[
            int, Field(ge=0, description="units recycled per layer and step at most")
        ] = 8,
        newborn_step: Annotated[
            float, Field(gt=0, le=1, description="how far a recycled unit moves toward its input")
        ] = 0.1,
        maturity_fraction: Annotated[
            float, Field(ge=0, description="mature at sleep above this share of the expected rate")
        ] = 1.0,
        core_lr: Annotated[
            float, Field(ge=0, description="wake delta-rule rate of the core (delta readout)")
        ] = 0.002,
        context_lr: Annotated[
            float, Field(ge=0, description="wake delta-rule rate of the context (delta readout)")
        ] = 0.3,
        context_decay: Annotated[
            float, Field(ge=0, le=1, description="context kept per wake step")
        ] = 0.9,
        sleep_context_decay: Annotated[
            float, Field(ge=0, le=1, description="context kept through a sleep")
        ] = 0.1,
        readout_scale: Annotated[
            float, Field(gt=0, description="inverse temperature of the readout softmax")
        ] = 10.0,
        ridge: Annotated[
            Annotated[Annotated[float, Field(gt=0)], Tag("number")] | Annotated[Literal["auto"], Tag("auto")],
            Discriminator(lambda value: "auto" if isinstance(value, str) else "number"),
            Field(description="L2 penalty of the closed-form core readout; auto: chosen at each "
                  "sleep by exact leave-one-out on the replayed samples"),
        ] = "auto",
        importance_rate: Annotated[
            float, Field(ge=0, description="importance added per sleep for full correct recall")
        ] = 1.0,
        memory_capacity: Annotated[
            int, Field(ge=0, le=100_000, description="episodic memory slots, shared by classes")
        ] = 0,
        memory_k: Annotated[
            int, Field(ge=1, le=1000, description="neighbours that vote")
        ] = 10,
        memory_weight: Annotated[
            float, Field(ge=0, le=1, description="share of the memory's vote in predictions")
        ] = 0.5,
        memory_temperature: Annotated[
            float, Field(gt=0, description="softmax temperature over neighbour similarities")
        ] = 0.02,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed)
        self.input_shape = tuple(input_shape or (input_dim,))
        specs = self.layer_specs(layers, self.input_shape, encoded=encoded)
        self.check_params({"layers": specs})
        self.readout, self.mode = readout, mode
        self.panic_lr, self.panic_gain, self.panic_memory_weight = panic_lr, panic_gain, panic_memory_weight
        self._stale = False  # closed_form: statistics changed since the core was solved
        self.firing_ema = firing_ema
        self.dead_fraction, self.max_new_per_step = dead_fraction, max_new_per_step
        self.newborn_step, self.maturity_fraction = newborn_step, maturity_fraction
        self.core_lr, self.context_lr = core_lr, context_lr
        self.context_decay, self.sleep_context_decay = context_decay, sleep_context_decay
        self.readout_scale, self.importance_rate = readout_scale, importance_rate
        self.auto_ridge = ridge == "auto"
        self.memory_k, self.memory_weight = memory_k, memory_weight
        self.memory_temperature = memory_temperature
        # Each class owns a ring of ``per_class`` memory slots.
        self.per_class = max(1, memory_capacity // num_classes) if memory_capacity else 0

        # The optional conv front end, then the sparse layers; memory keys live in the front's output
        # (the normalised input without one), which never changes, so keys never go stale.
        self.front: ConvLayer | None = None
        if specs and isinstance(specs[0], ConvSpec):
            self.front = ConvLayer(self.input_shape, specs[0], seed)
        width = self.front.hidden if self.front else input_dim
        self.key_dim = width
        self.layers: list[SparseLayer] = []
        for i, spec in enumerate(specs[1 if self.front else 0 :], start=1 if self.front else 0):
            self.layers.append(SparseLayer(width, spec, seed + i * _LAYER_SEED_STRIDE))
            width = spec.hidden
        self.hidden = width  # the top layer's code feeds the readouts
        self.period_samples = torch.zeros((), dtype=torch.int64)
        self.w_core = torch.zeros(num_classes, width)
        self.w_ctx = torch.zeros(num_classes, width)
        self.importance = torch.zeros(num_classes, width)
        self.stat_a = torch.zeros(width, width)
        self.stat_b = torch.zeros(width, num_classes)
        self.class_counts = torch.zeros(num_classes, dtype=torch.int64)
        self.memory_keys = torch.zeros(num_classes * self.per_class, self.key_dim)
        self.memory_writes = torch.zeros(num_classes, dtype=torch.int64)
        # The penalty in use: the fixed ``ridge``, or with ``auto`` the last one a sleep chose.
        first = _FIRST_RIDGE["sparse" if self.layers else "conv" if self.front else "input"]
        self.ridge_value = torch.tensor(first if self.auto_ridge else float(ridge), dtype=torch.float64)

    @staticmethod
    def layer_specs(layers: list | None, input_shape: Sequence[int], *, encoded: bool = False
                    ) -> list[LayerSpec | ConvSpec]:
        """The layer specs of ``layers`` (dicts or specs); None gives the default for the input:
        none for an encoder's output (``encoded``: features already; a random sparse
        code of them loses information, docs/bench/text.md), the conv front end for raw inputs read
        as images (flat vectors of s * s values too) on which it gives at least
        ``_MIN_CONV_FEATURES`` features, else one sparse layer. Brains created before a default
        changed are pinned to theirs by migrations 0005 and 0006."""
        if layers is None:
            if encoded:
                return []
            shape = image_shape(input_shape)
            conv = ConvSpec(type="conv")
            if shape is not None and ConvLayer.features(shape, conv) >= _MIN_CONV_FEATURES:
                return [conv]
            return [LayerSpec()]
        return [spec if not isinstance(spec, dict) else
                (ConvSpec(**spec) if spec.get("type") == "conv" else LayerSpec(**spec)) for spec in layers]

    @classmethod
    def check_params(cls, params: dict) -> None:
        for i, spec in enumerate(cls.layer_specs(params["layers"], (1,)) if params["layers"] else []):
            if isinstance(spec, ConvSpec):
                if i:
                    raise ValueError(f"layers[{i}]: a conv layer can only be the first layer")
            elif spec.k >= spec.hidden:
                raise ValueError(f"layers[{i}]: k ({spec.k}) must be smaller than hidden ({spec.hidden})")

    # -- encoding ---------------------------------------------------------------------------------
    def _keys(self, xn: torch.Tensor) -> torch.Tensor:
        """What the memory stores and compares: the front end's features, or the normalised input."""
        return self.front.forward(xn) if self.front else xn

    def _forward(
        self, keys: torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """The top code, and per sparse layer its normalised input, activations and winners."""
        passes = []
        code = keys
        for i, layer in enumerate(self.layers):
            inputs = normalise(code) if i else code
            act, winners, code = layer.forward(inputs)
            passes.append((inputs, act, winners))
        return code, passes

    def _top_code(self, keys: torch.Tensor) -> torch.Tensor:
        """The top code alone, as ``_forward`` computes it (prediction and sleep need nothing else)."""
        code = keys
        for i, layer in enumerate(self.layers):
            code = layer.code(normalise(code) if i else code)
        return code

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code ``[B, hidden]`` of ``x`` that feeds the readouts. Pure."""
        return self._top_code(self._keys(normalise(self._inputs(x))))

    # -- readouts ---------------------------------------------------------------------------------
    def _readout_probs(self, code: torch.Tensor, seen: torch.Tensor, core: torch.Tensor) -> torch.Tensor:
        weights = self.w_ctx if self.mode == "panic" else core + self.w_ctx
        scores = self.readout_scale * code @ weights.T
        return torch.softmax(scores.masked_fill(~seen, float("-inf")), dim=1)

    def _memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored keys ``[N, input_dim]`` and their class indices ``[N]``, class by class, each
        class's oldest first."""
        filled = self.memory_writes.clamp(max=self.per_class)
        labels = torch.arange(self.num_classes, device=self.device).repeat_interleave(filled)
        first = torch.cumsum(filled, 0) - filled
        rank = torch.arange(labels.shape[0], device=self.device) - first[labels]
        start = (self.memory_writes - filled) % max(self.per_class, 1)
        slot = labels * self.per_class + (start[labels] + rank) % max(self.per_class, 1)
        return self.memory_keys[slot], labels

    def _memory_vote(self, xn: torch.Tensor) -> torch.Tensor | None:
        """Similarity-weighted vote ``[B, num_classes]`` of the nearest stored inputs, or None."""
        if self.per_class == 0 or int(self.memory_writes.sum()) == 0:
            return None
        keys, labels = self._memory()
        k = min(self.memory_k, keys.shape[0])
        votes = []
        for block in xn.split(_QUERY_CHUNK):
            sims, idx = (block @ keys.T).topk(k, dim=1)
            weights = torch.softmax(sims / self.memory_temperature, dim=1)
            vote = torch.zeros(block.shape[0], self.num_classes, device=self.device)
            votes.append(vote.scatter_add_(1, labels[idx], weights))
        return torch.cat(votes)

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        x = self._inputs(x)
        seen = self.class_counts > 0
        if not bool(seen.any()):
            return torch.full((len(x), self.num_classes), 1 / self.num_classes, device=self.device)
        keys = self._keys(normalise(x))
        probs = self._readout_probs(self._top_code(keys), seen, self._core())
        weight = self.panic_memory_weight if self.mode == "panic" else self.memory_weight
        vote = self._memory_vote(keys) if weight > 0 else None
        if vote is not None:
            probs = (1.0 - weight) * probs + weight * vote
        return probs

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the mixed readout/memory probabilities; classes never seen get about -27.6."""
        return self._probs(x).clamp_min(1e-12).log()

    # -- wake -------------------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, x: torch.Tensor, y: torch.Tensor, task: str | None = None) -> Stats:
        keys = self._keys(normalise(self._inputs(x)))
        y = self._labels(y, x.shape[0])
        batch = x.shape[0]
        if batch == 0:
            return Stats()
        panic = self.mode == "panic"
        code, passes = self._forward(keys)
        onehot = torch.nn.functional.one_hot(y, self.num_classes).float()
        self.class_counts += onehot.sum(0).long()

        # Delta rule: core braked by importance, context fast and decaying. With the closed-form
        # readout the error is taken against the core as last solved (solving per batch is costly).
        probs = self._readout_probs(code, self.class_counts > 0, self.w_core)
        loss = float(-(probs.gather(1, y[:, None]).clamp_min(1e-12).log()).mean())
        grad = (probs - onehot).T @ code / batch
        if panic:  # the context alone carries the shift; it holds until the panic ends
            rate, decay = self.panic_lr, 1.0
        else:  # a closed-form core is always current: no fast pathway, the context only fades
            rate, decay = (self.context_lr if self.readout == "delta" else 0.0), self.context_decay
        self.w_ctx.mul_(decay).sub_(rate * grad)
        if not panic:
            if self.readout == "delta":
                self.w_core -= self.core_lr * grad * (1.0 - self.importance)
            self.stat_a += code.T @ code
            self.stat_b += code.T @ onehot
            self._stale = self.readout == "closed_form"
            self._remember(keys, y)

        born = 0
        max_new = int(self.max_new_per_step * (self.panic_gain if panic else 1.0))
        for i, (inputs, act, winners) in enumerate(passes):
            layer = self.layers[i]
            layer.learn(inputs, winners, self.firing_ema)
            units = layer.neurogenesis(
                inputs, act.max(dim=1).values, dead_fraction=self.dead_fraction, max_new=max_new,
                step=self.newborn_step,
            )
            born += len(units)
            if i == len(self.layers) - 1 and len(units):
                self._forget_units(units)
        self.period_samples += batch
        return Stats(samples=batch, loss=loss, extra={"new_units": born, "mode": self.mode})

    # -- a sharded wake -----------------------------------------------------------------------------
    def mergeable(self) -> bool:
        """A wake is a sum of per-sample statistics when nothing in it depends on the order of the
        samples: no sparse layer (the conv eyes are fixed; a sparse layer's firing rates are moving
        averages, frozen or not, and neurogenesis follows them), the closed-form readout (the delta
        rule's steps depend on the order), mode ``plastic`` (panic steps the context), no episodic
        memory (its rings keep the latest samples) and a zero context (what a panic left decays
        by ``context_decay`` per wake batch). Then ``observe`` adds ``A``, ``B``, the class counts
        and the period's sample count, nothing else."""
        return (not self.layers and self.readout == "closed_form" and self.mode == "plastic"
                and self.per_class == 0 and not bool(self.w_ctx.any()))

    @torch.no_grad()
    def wake_statistics(self, x: torch.Tensor, y: torch.Tensor, task: str | None = None) -> dict[str, torch.Tensor]:
        if not self.mergeable():
            return super().wake_statistics(x, y, task)
        code = self._top_code(self._keys(normalise(self._inputs(x))))
        onehot = torch.nn.functional.one_hot(self._labels(y, x.shape[0]), self.num_classes).float()
        return {"stat_a": code.T @ code, "stat_b": code.T @ onehot, "class_counts": onehot.sum(0).long(),
                "period_samples": torch.tensor(x.shape[0], dtype=torch.int64)}

    @torch.no_grad()
    def merge(self, statistics: dict[str, torch.Tensor]) -> Stats:
        if not self.mergeable():
            return super().merge(statistics)
        mine = {name: getattr(self, name) for name in ("stat_a", "stat_b", "class_counts", "period_samples")}
        if statistics.keys() != mine.keys():
            raise ValueError(f"statistics {sorted(statistics)}: expected {sorted(mine)}")
        for name, value in statistics.items():
            if value.shape != mine[name].shape:
                raise ValueError(f"statistics {name!r}: expected {list(mine[name].shape)}, got {list(value.shape)}")
        for name, value in statistics.items():
            mine[name] += value.to(self.device, mine[name].dtype)
        self._stale = True
        return Stats(samples=int(statistics["period_samples"]), extra={"mode": self.mode})

    def _forget_units(self, units: torch.Tensor) -> None:
        """Reset what reads recycled top-layer units: readout weights, importance, statistics."""
        for weights in (self.w_core, self.w_ctx, self.importance):
            weights[:, units] = 0.0
        self.stat_a[units, :] = 0.0
        self.stat_a[:, units] = 0.0
        self.stat_b[units, :] = 0.0

    def _remember(self, xn: torch.Tensor, y: torch.Tensor) -> None:
        """Write each normalised input into the next slot of its class's ring."""
        if self.per_class == 0:
            return
        order = torch.argsort(y, stable=True)
        ys = y[order]
        counts = torch.bincount(ys, minlength=self.num_classes)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(ys.shape[0], device=self.device) - first[ys]
        slot = ys * self.per_class + (self.memory_writes[ys] + rank) % self.per_class
        # Only the last ``per_class`` writes of a class in this batch survive; write only those.
        keep = rank >= counts[ys] - self.per_class
        self.memory_keys[slot[keep]] = xn[order][keep]
        self.memory_writes += counts

    def stored_samples(self) -> int:
        return int(self.memory_writes.clamp(max=self.per_class).sum()) if self.per_class else 0

    # -- sleep ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        n = min(len(replay), budget)
        code = y = None
        if n and (self.auto_ridge or self.importance_rate):
            code = self._top_code(self._keys(normalise(self._inputs(replay.x[:n]))))
            y = replay.y[:n].to(self.device, torch.int64)
        extra: dict[str, float | int | str] = {}
        # In panic the statistics hold none of the replayed shift: leave the core as it is.
        choose = self.auto_ridge and self.mode == "plastic" and n >= _MIN_RIDGE_SAMPLES
        if choose and code is not None and y is not None:
            choice = ridge_loo.choose(self.stat_a, self.stat_b, code, y, self.class_counts > 0,
                                      current=float(self.ridge_value))
            self.ridge_value.fill_(choice.ridge)
            extra.update(ridge_loo_accuracy=round(choice.accuracy, 4))
        self._solve_readout()
        extra["ridge"] = float(self.ridge_value)
        accuracy = None
        if self.importance_rate and code is not None and y is not None:
            accuracy = self._raise_importance(code, y)
            extra["replay_accuracy"] = accuracy
        extra.update(self.consolidate())
        used = n if code is not None else 0
        return Stats(samples=used, extra=extra)

    def _solve_readout(self) -> None:
        """Ridge regression ``(A + ridge·I)⁻¹ B`` by Cholesky (an ordinary tensor even when called
        under inference mode, so later in-place updates work)."""
        self._stale = False
        if int(self.class_counts.sum()) == 0:
            return
        with torch.inference_mode(False), torch.no_grad():
            eye = torch.eye(self.hidden, device=self.device, dtype=torch.float64)
            factor = torch.linalg.cholesky(self.stat_a.double() + float(self.ridge_value) * eye)
            self.w_core = torch.cholesky_solve(self.stat_b.double(), factor).T.float().contiguous()

    def use_ridge(self, value: float) -> None:
        """Use the penalty ``value`` from now on (the core is re-solved at its next use); a later
        sleep of a ``ridge="auto"`` brain chooses again."""
        self.ridge_value.fill_(value)
        self._stale = True

    def _core(self) -> torch.Tensor:
        """The core readout; with ``closed_form``, solved first if the statistics changed."""
        if self._stale:
            self._solve_readout()
        return self.w_core

    @torch.no_grad()
    def consolidate(self) -> dict[str, int]:
        """Let the context fade and make every layer's regularly firing units mature."""
        self.w_ctx.mul_(self.sleep_context_decay)
        samples = int(self.period_samples)
        new = [layer.consolidate(self.maturity_fraction, samples) for layer in self.layers]
        self.period_samples.zero_()
        return {"new_mature": sum(new), "mature": sum(int(layer.mature.sum()) for layer in self.layers)}

    def _raise_importance(self, code: torch.Tensor, y: torch.Tensor) -> float:
        """Raise the importance of core synapses that carry correct recall of the replayed samples
        (their codes and class indices); returns the share recalled correctly."""
        seen = self.class_counts > 0
        scores = (code @ self._core().T).masked_fill(~seen, float("-inf"))
        correct = (scores.argmax(dim=1) == y).float()
        share = (code / code.amax(dim=1, keepdim=True).clamp_min(1e-12)).clamp_min(0.0)
        onehot = torch.nn.functional.one_hot(y, self.num_classes).float()
        per_class = onehot.sum(0).clamp_min(1.0)[:, None]
        raised = onehot.T @ (share * correct[:, None]) / per_class
        self.importance.add_(self.importance_rate * raised)
        self.importance.clamp_(0.0, 1.0)
        return float(correct.mean())

    # -- changing the architecture ----------------------------------------------------------------
    @torch.no_grad()
    def reconfigure(self, params: dict) -> Plastic:
        """A learner with the new ``params`` that keeps what this one learned (see the module doc)."""
        self._core()
        new = Plastic(input_dim=self.input_dim, num_classes=self.num_classes, seed=self.seed,
                      input_shape=self.input_shape, **params)
        new.to(self.device)
        old_layers, new_layers = [self.front, *self.layers], [new.front, *new.layers]
        kept = 0
        for old, fresh in zip(old_layers, new_layers):
            if old is None and fresh is None:
                kept += 1
                continue
            if old is None or not old.same_shape(fresh):
                break
            fresh.copy_from(old)
            kept += 1
        same_keys = kept >= 1
        new.class_counts = self.class_counts.clone()
        new.period_samples = self.period_samples.clone()
        if not same_keys and int(self.class_counts.sum()) > 0:
            raise ValueError("the conv front end (what the episodic memory stores) cannot be added, "
                             "removed or changed once the brain has learned; create a new brain")
        keys, labels = self._memory()
        if same_keys:  # else nothing was learned, and the memory is empty
            new._remember(keys, labels)
        if kept == len(old_layers) == len(new_layers):
            if new.auto_ridge and self.auto_ridge:
                new.ridge_value = self.ridge_value.clone()
            for name in ("w_core", "w_ctx", "importance", "stat_a", "stat_b"):
                setattr(new, name, getattr(self, name).clone())
        elif int(self.class_counts.sum()) > 0 and not len(keys):
            raise ValueError("changing the layers of a brain that has learned rebuilds its readout "
                             "from the episodic memory, and this brain keeps none (memory_capacity 0)")
        elif len(keys):
            # The code feeding the readout changed: rebuild its statistics from the memory.
            code = torch.cat([new._top_code(block) for block in keys.split(_QUERY_CHUNK)])
            onehot = torch.nn.functional.one_hot(labels, self.num_classes).float()
            new.stat_a = code.T @ code
            new.stat_b = code.T @ onehot
            new._solve_readout()
        return new

    # -- size ---------------------------------------------------------------------------------------
    def working_bytes(self, batch: int) -> int:
        """Every layer's temporaries for ``batch`` inputs (conv activations, codes; the inputs
        themselves are the caller's); a statistics update and the larger of the closed-form solve
        (float64 ``A + ridge I``, identity, Cholesky factor) and the sleep's eigendecomposition
        (float64 ``A``, eigenvectors, LAPACK's workspace of about two more); the memory's gathered
        keys and similarities."""
        layers = sum(layer.working_bytes(batch) for _, layer in self._numbered_layers())
        solve = (self.hidden**2) * (FLOAT + 4 * 8)
        keys = self.memory_keys.shape[0]
        memory = (keys * self.key_dim + 2 * min(batch, _QUERY_CHUNK) * keys) * FLOAT
        return layers + solve + memory

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        self._core()  # a checkpoint holds the solved core
        state = {name: getattr(self, name).detach().clone() for name in self._STATE}
        for i, layer in self._numbered_layers():
            state.update(layer.state(f"layers.{i}."))
        return state

    def _numbered_layers(self) -> list[tuple[int, ConvLayer | SparseLayer]]:
        """Every layer with its position in the ``layers`` param."""
        layers: list[ConvLayer | SparseLayer] = [self.front, *self.layers] if self.front else self.layers
        return list(enumerate(layers))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = self.state_dict()
        state = {**{name: expected[name] for name in self._ADDED_STATE if name not in state}, **state}
        missing = set(expected) - set(state)
        unexpected = set(state) - set(expected)
        if missing or unexpected:
            raise ValueError(
                f"state mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        for name, current in expected.items():
            value = state[name]
            if value.shape != current.shape or value.dtype != current.dtype:
                raise ValueError(f"state {name!r}: expected {current.dtype} {list(current.shape)}, "
                                 f"got {value.dtype} {list(value.shape)}")
        for name in self._STATE:
            setattr(self, name, state[name].detach().to(self.device).clone())
        self._stale = False
        for i, layer in self._numbered_layers():
            for name in layer.STATE:
                setattr(layer, name, state[f"layers.{i}.{name}"].detach().to(self.device).clone())

    def to(self, device: torch.device | str) -> Plastic:
        super().to(device)
        for name in self._STATE:
            setattr(self, name, getattr(self, name).to(self.device))
        for _, layer in self._numbered_layers():
            layer.to(self.device)
        return self
