"""Strategy "anml": a neuromodulated meta-learning network (Beaulieu et al., 2020, "Learning to
Continually Learn"), over flat vectors.

Two networks see the same input ``x [B, input_dim]``:

- the neuromodulatory network (NM): ``Linear -> ReLU -> Linear -> sigmoid`` gives a gate in
  ``(0, 1)`` per hidden unit;
- the prediction-learning network (PLN): ``Linear -> ReLU -> Linear -> ReLU`` gives a
  representation, multiplied elementwise by the gate, then its output layer (the "head")
  ``Linear(hidden -> num_classes)`` gives the logits. Labels are the brain's global class indices.

The gate scales both the activations and therefore the gradients reaching the PLN: units it closes
for an input are neither used nor changed by it. ANML's point is that this gate is *meta-learned*
(:meth:`ANML.meta_train`) on a background set of classes so that plain SGD, one sample at a time,
can learn new classes in sequence with little interference.

Meta-training (OML-style loop, as in ANML's code): each step picks ``classes_per_step`` background
classes, re-initialises their rows of a meta-head of its own (the background labels are remapped to
``0..C-1`` and never touch the brain's head or label space), takes ``inner_steps`` SGD steps of
``lr`` on ``inner_batch`` samples of those classes, updating only the PLN layers that
sequential learning will update (``train_layers``; the NM is frozen inside), then an outer
cross-entropy on the trajectory's samples plus ``remember_batch`` random background samples, whose
gradient reaches NM, PLN and meta-head (the meta-parameters), stepped by Adam (``meta_lr``).

- ``first_order=False`` (default): second-order, "differentiating through learning" as the paper
  describes: the inner gradients are taken with ``create_graph=True``, so the meta-gradient
  includes how the NM's gate shapes each inner update. Affordable on CPU here because the inner
  loop is short and updates small layers (the head by default).
- ``first_order=True``: the inner gradients are constants (no ``create_graph``), as in ANML's
  published code (``autograd.grad`` without ``create_graph``), although the paper claims
  second-order. The NM then only learns from the outer forward pass.

A fresh Adam (and meta-head) is built per ``meta_train`` call; neither is kept in the state.

Sequential learning (``observe``, the meta-test procedure): the gate is fixed (NM frozen) and plain
SGD (``lr``, no momentum, so there is no optimiser state) updates the ``train_layers`` -- ``"head"``
(ANML's meta-test: only the output layer) or ``"pln"`` (the whole PLN) -- one step per chunk of
``inner_batch`` samples, i.e. exactly the update that meta-training optimised for. Without
meta-training the gate is its random initialisation and the brain still learns (like OML's
"scratch" baseline with a fixed random gate).

``sleep`` is a modest rehearsal: one shuffled pass over at most ``budget`` replayed samples through
the same sequential update. It counters the head's drift towards the newest classes; it does not
meta-train (that needs a background set, see the service's ``POST .../meta-train``).

Meta-training changes the PLN's body, so what the head learned before it no longer matches the
representation: meta-train a brain before it learns, as ANML does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from models.learner import Learner, Replay, Stats
from models.network import Hidden
from models.optim import adam
from models.registry import register
from models.sizing import FLOAT, parameter_bytes

Rate = Annotated[float, Field(gt=0.0, le=10.0)]
Batch = Annotated[int, Field(ge=1, le=4096)]


def _mlp(*sizes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@register
class ANML(Learner):
    """NM-gated PLN; ``meta_train`` learns the gate, ``observe`` learns with the gate fixed."""

    name = "anml"
    settings = ("class", "task", "domain")
    meta_trainable = True
    _parts = ("nm", "body", "head")

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        seed: int = 0,
        hidden: Hidden = 256,
        nm_hidden: Hidden = 128,
        lr: Rate = 0.1,
        train_layers: Literal["head", "pln"] = "head",
        inner_batch: Batch = 1,
        meta_lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3,
        remember_batch: Batch = 64,
        classes_per_step: Annotated[int, Field(ge=1, le=100)] = 1,
        first_order: bool = False,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed)
        self.hidden, self.lr, self.train_layers = hidden, lr, train_layers
        self.inner_batch, self.meta_lr = inner_batch, meta_lr
        self.remember_batch, self.classes_per_step = remember_batch, classes_per_step
        self.first_order = first_order
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.nm = _mlp(input_dim, nm_hidden, hidden)
            self.body = _mlp(input_dim, hidden, hidden)
            self.body.append(nn.ReLU())
            self.head = nn.Linear(hidden, num_classes)
        self.nm.requires_grad_(False)  # the gate is fixed outside meta-training
        self.rng_seed = seed  # with the counters below, seeds sleep's and meta-training's sampling
        self.updates = 0  # sequential SGD steps so far
        self.meta_steps = 0  # meta-training steps so far (seeds meta-training's sampling)

    # -- the network ------------------------------------------------------------------------------
    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.nm(x))

    def features(self, x: torch.Tensor, body: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The PLN's representation times the NM's gate; ``body``: functional weights, if any."""
        rep = self.body(x) if body is None else functional_call(self.body, body, (x,))
        return rep * self.gate(x)

    def _plastic(self) -> list[nn.Parameter]:
        """The parameters sequential learning updates."""
        if self.train_layers == "head":
            return list(self.head.parameters())
        return [*self.body.parameters(), *self.head.parameters()]

    # -- sequential learning ----------------------------------------------------------------------
    def observe(self, x: torch.Tensor, y: torch.Tensor, task: str | None = None) -> Stats:
        x, y = self._inputs(x), self._labels(y, x.shape[0])
        if x.shape[0] == 0:
            return Stats()
        loss = self._sgd(x, y)
        return Stats(samples=int(x.shape[0]), loss=loss)

    def _sgd(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One plain SGD step per chunk of ``inner_batch`` samples, in order; the mean loss."""
        params = self._plastic()
        total = 0.0
        for start in range(0, len(y), self.inner_batch):
            xb, yb = x[start : start + self.inner_batch], y[start : start + self.inner_batch]
            if self.train_layers == "head":  # nothing before the head learns: no graph for it
                with torch.no_grad():
                    feats = self.features(xb)
            else:
                feats = self.features(xb)
            loss = F.cross_entropy(self.head(feats), yb)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(self.lr * g)
            total += float(loss.detach()) * len(yb)
            self.updates += 1
        return total / len(y)

    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        """One shuffled pass over at most ``budget`` replayed samples, through ``observe``'s update."""
        n = min(len(replay), int(budget))
        if n <= 0:
            return Stats()
        x, y = self._inputs(replay.x), self._labels(replay.y, len(replay))
        gen = torch.Generator().manual_seed(self.rng_seed * 1_000_003 + self.updates)
        index = torch.randperm(len(replay), generator=gen)[:n].to(y.device)
        loss = self._sgd(x[index], y[index])
        return Stats(samples=n, loss=loss)

    # -- meta-training ----------------------------------------------------------------------------
    def meta_train(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        steps: int,
        inner_steps: int,
        first_order: bool | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> Stats:
        """Meta-learn NM and PLN on background classes ``(x, y)`` (any integer labels, at least two
        distinct ones; they are remapped internally and never enter the brain's head).

        ``first_order``: overrides the constructor's choice for this call. ``progress`` is called
        with the fraction done, about twenty times.
        """
        x = self._inputs(x)
        y = y.to(self.device, torch.int64)
        if y.shape != (x.shape[0],):
            raise ValueError("y must be [B] labels matching x")
        classes, local = torch.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError("meta-training needs at least two background classes")
        if steps < 1 or inner_steps < 1:
            raise ValueError("steps and inner_steps must be positive")
        first_order = self.first_order if first_order is None else first_order
        gen = torch.Generator().manual_seed(self.rng_seed * 7_919 + self.meta_steps + 1)
        by_class = [torch.nonzero(local == c).flatten() for c in range(len(classes))]
        meta_head = nn.Linear(self.hidden, len(classes)).to(self.device)
        with torch.no_grad():
            meta_head.weight.copy_(self._init_rows(len(classes), gen))
            meta_head.bias.zero_()
        meta_params = [*self.nm.parameters(), *self.body.parameters(), *meta_head.parameters()]
        optimizer = adam(meta_params, lr=self.meta_lr)
        self.nm.requires_grad_(True)
        gate_before = self._gate_stats(x)
        losses, report_every = [], max(1, steps // 20)
        try:
            for step in range(steps):
                losses.append(self._meta_step(x, local, by_class, meta_head, optimizer, inner_steps,
                                              first_order, gen))
                self.meta_steps += 1
                if progress is not None and (step + 1) % report_every == 0:
                    progress((step + 1) / steps)
        finally:
            self.nm.requires_grad_(False)
        gate_after = self._gate_stats(x)
        tail = losses[-max(1, len(losses) // 10):]
        return Stats(samples=len(y), loss=sum(tail) / len(tail), extra={
            "steps": steps, "inner_steps": inner_steps, "classes": len(classes),
            "first_order": int(first_order), "first_loss": losses[0],
            **{f"gate_{k}_before": v for k, v in gate_before.items()},
            **{f"gate_{k}_after": v for k, v in gate_after.items()},
        })

    def meta_train_bytes(self, *, inner_steps: int, classes: int, first_order: bool | None = None) -> int:
        """The meta-head and Adam's moments of every meta-parameter; the trained weights and their
        gradients of each inner step (all of them when second-order: the graph keeps them); and the
        activations of the outer pass over the trajectory and the remembered batch."""
        first_order = self.first_order if first_order is None else first_order
        head = classes * (self.hidden + 1) * FLOAT
        trained = head + (parameter_bytes(self.body) if self.train_layers == "pln" else 0)
        adam = 2 * (parameter_bytes(self.nm) + parameter_bytes(self.body) + head)
        graph = 2 * trained * (1 if first_order else inner_steps)
        rows = inner_steps * self.inner_batch + self.remember_batch
        nm_hidden = self.nm[0].out_features
        activations = rows * (self.input_dim + nm_hidden + 4 * self.hidden + classes) * FLOAT
        return head + adam + graph + activations

    def _meta_step(
        self,
        x: torch.Tensor,
        local: torch.Tensor,
        by_class: list[torch.Tensor],
        meta_head: nn.Linear,
        optimizer: torch.optim.Optimizer,
        inner_steps: int,
        first_order: bool,
        gen: torch.Generator,
    ) -> float:
        """One outer step: reset the picked classes' rows, learn them (differentiably), remember."""
        picked = torch.randperm(len(by_class), generator=gen)[: self.classes_per_step].tolist()
        with torch.no_grad():  # forget the picked classes, as the meta-test head starts blank
            rows = torch.tensor(picked, device=self.device)
            meta_head.weight[rows] = self._init_rows(len(picked), gen)
            meta_head.bias[rows] = 0.0
        pool = torch.cat([by_class[c] for c in picked])
        draw = torch.randint(len(pool), (inner_steps * self.inner_batch,), generator=gen)
        trajectory = pool[draw.to(pool.device)]
        fast = {"weight": meta_head.weight, "bias": meta_head.bias}
        body = dict(self.body.named_parameters()) if self.train_layers == "pln" else None
        for k in range(inner_steps):
            index = trajectory[k * self.inner_batch : (k + 1) * self.inner_batch]
            logits = F.linear(self.features(x[index], body), fast["weight"], fast["bias"])
            names = list(fast) + (list(body) if body else [])
            values = list(fast.values()) + (list(body.values()) if body else [])
            grads = torch.autograd.grad(F.cross_entropy(logits, local[index]), values,
                                        create_graph=not first_order)
            new = {n: v - self.lr * g for n, v, g in zip(names, values, grads)}
            fast = {"weight": new["weight"], "bias": new["bias"]}
            if body is not None:
                body = {n: new[n] for n in body}
        remember = torch.randint(len(local), (self.remember_batch,), generator=gen).to(local.device)
        index = torch.cat([trajectory, remember])
        logits = F.linear(self.features(x[index], body), fast["weight"], fast["bias"])
        loss = F.cross_entropy(logits, local[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def _init_rows(self, rows: int, gen: torch.Generator) -> torch.Tensor:
        """Kaiming-normal rows for the meta-head, as ANML re-initialises a class's output row."""
        return (torch.randn(rows, self.hidden, generator=gen) * math.sqrt(2.0 / self.hidden)).to(self.device)

    @torch.no_grad()
    def _gate_stats(self, x: torch.Tensor) -> dict[str, float]:
        gate = self.gate(x[:1024])
        return {"mean": float(gate.mean()), "open": float((gate > 0.5).float().mean()),
                "closed": float((gate < 0.1).float().mean())}

    # -- inference --------------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self._inputs(x)))

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"{m}.{k}": v.detach().clone() for m in self._parts
                 for k, v in getattr(self, m).state_dict().items()}
        state["anml.rng_seed"] = torch.tensor(self.rng_seed, dtype=torch.int64)
        state["anml.updates"] = torch.tensor(self.updates, dtype=torch.int64)
        state["anml.meta_steps"] = torch.tensor(self.meta_steps, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = tuple(f"{m}." for m in self._parts)
        unexpected = [k for k in state if not k.startswith(own) and not k.startswith("anml.")]
        if unexpected:
            raise ValueError(f"unexpected state entries {unexpected[:3]}")
        for m in self._parts:
            prefix = f"{m}."
            getattr(self, m).load_state_dict({k.removeprefix(prefix): v for k, v in state.items()
                                              if k.startswith(prefix)})
            getattr(self, m).to(self.device)
        self.rng_seed = int(state["anml.rng_seed"])
        self.updates = int(state["anml.updates"])
        self.meta_steps = int(state["anml.meta_steps"])

    def to(self, device: torch.device | str) -> ANML:
        super().to(device)
        for m in self._parts:
            getattr(self, m).to(self.device)
        return self
