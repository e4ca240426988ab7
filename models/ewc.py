"""Strategy "ewc": elastic weight consolidation (Kirkpatrick et al., 2017), offline or online.

At each consolidation the diagonal empirical Fisher information ``F_i = E[(d log p(y|x) / d
theta_i)^2]`` is computed from per-sample gradients on real data (in closed form for Linear layers,
``(d*d)^T (a*a)``; with ``torch.func`` otherwise): a reservoir of
up to ``fisher_samples`` samples of the batches seen since the last consolidation, plus the replay
handed to ``sleep``. Training then adds ``ewc_lambda / 2 * sum_i F_i (theta_i - theta*_i)^2``.
Consolidation happens when the ``task`` argument changes and at ``sleep``.

- offline (``online=False``): one penalty per consolidation, summed. The sum of quadratics is kept
  exactly as one: ``F <- F + F_new`` and ``theta* <- (F theta* + F_new theta) / (F + F_new)``.
- online (``online=True``, Schwarz et al., 2018): ``F <- gamma F + F_new``, ``theta* <- theta``.

``ewc_lambda`` defaults to 100, as in Avalanche: larger penalties did better task-incremental and
worse on Permuted Fashion-MNIST, and none helps class-incremental learning (EWC cannot separate
classes it never saw together). Figures: docs/bench/network-strategies.md.

CLM's EWC used a constant Fisher of 0.1 (plain L2 toward the old weights); here the Fisher comes
from the data and differs per weight, so important weights are held and the others stay free.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call, grad, vmap

from models.learner import Replay, Stats
from models.network import Epochs, Hidden, LearningRate, NetworkLearner
from models.registry import register
from models.sample_memory import SampleMemory
from models.sizing import parameter_bytes


@register
class EWC(NetworkLearner):
    name = "ewc"
    settings = ("class", "task", "domain")
    state_prefixes = ("ewc.",)
    chunk = 64  # samples per vmap call when computing the Fisher of a general network
    linear_chunk = 1024  # samples per pass when computing it for Linear layers in closed form

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        seed: int = 0,
        hidden: Hidden = 400,
        lr: LearningRate = 1e-3,
        epochs_per_batch: Epochs = 1,
        ewc_lambda: Annotated[float, Field(ge=0.0, le=1e9)] = 100.0,
        online: bool = False,
        gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9,
        fisher_samples: Annotated[int, Field(ge=1, le=100_000)] = 200,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed, hidden=hidden,
                         lr=lr, epochs_per_batch=epochs_per_batch)
        self.ewc_lambda, self.online, self.gamma = ewc_lambda, online, gamma
        self.pending = SampleMemory(capacity=fisher_samples, input_dim=input_dim, seed=seed)
        self.fisher: dict[str, torch.Tensor] = {}  # empty until the first consolidation
        self.anchor: dict[str, torch.Tensor] = {}

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(x), y) + self.penalty()

    def penalty(self) -> torch.Tensor:
        terms = [(self.fisher[n] * (p - self.anchor[n]) ** 2).sum()
                 for n, p in self.net.named_parameters() if n in self.fisher]
        return self.ewc_lambda / 2 * sum(terms) if terms else torch.zeros((), device=self.device)

    def remember(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.pending.add(x, y)

    def end_task(self) -> None:
        self.consolidate(self.pending.x, self.pending.y)

    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        x = torch.cat([self.pending.x, self._inputs(replay.x)[:budget]])
        y = torch.cat([self.pending.y, self._labels(replay.y, len(replay))[:budget]])
        return self.consolidate(x, y)

    def consolidate(self, x: torch.Tensor, y: torch.Tensor) -> Stats:
        """Fold the Fisher on ``(x, y)`` at the current weights into the penalty."""
        if len(y) == 0:
            return Stats()
        new = self.empirical_fisher(x, y)
        for n, p in self.net.named_parameters():
            theta = p.detach().clone()
            old_f, old_a = self.fisher.get(n, torch.zeros_like(theta)), self.anchor.get(n, theta)
            if self.online:
                self.fisher[n], self.anchor[n] = self.gamma * old_f + new[n], theta
            else:
                total = old_f + new[n]
                mixed = (old_f * old_a + new[n] * theta) / total
                self.anchor[n] = torch.where(total > 0, mixed, theta)
                self.fisher[n] = total
        self.pending = SampleMemory(capacity=self.pending.capacity, input_dim=self.input_dim,
                                    seed=self.pending.seed + self.pending.seen, device=self.device)
        return Stats(samples=len(y), extra={"fisher_mean": float(
            torch.cat([f.reshape(-1) for f in self.fisher.values()]).mean())})

    def empirical_fisher(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean over samples of the squared per-sample gradient of ``log p(y | x)``."""
        linears = {name: m for name, m in self.net.named_modules() if isinstance(m, nn.Linear)}
        covered = {f"{name}.{kind}" for name, m in linears.items() for kind, _ in m.named_parameters()}
        if covered == {n for n, _ in self.net.named_parameters()}:
            total = self._linear_fisher_sum(x, y, linears)
        else:
            total = self._vmap_fisher_sum(x, y)
        return {n: t / len(y) for n, t in total.items()}

    def _linear_fisher_sum(self, x: torch.Tensor, y: torch.Tensor,
                           linears: dict[str, nn.Linear]) -> dict[str, torch.Tensor]:
        """The sum of squared per-sample gradients of a network whose parameters are all in Linear
        layers, without materialising them: sample i's weight gradient is ``d_i a_i^T`` (``a_i`` the
        layer's input, ``d_i`` the loss gradient at its output), so the sum of its squares is
        ``(d*d)^T (a*a)``; one forward and one backward pass per chunk."""
        inputs: dict[str, torch.Tensor] = {}
        outputs: dict[str, torch.Tensor] = {}

        def keep(name: str):
            def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
                inputs[name], outputs[name] = args[0], out
            return hook

        handles = [m.register_forward_hook(keep(name)) for name, m in linears.items()]
        total = {n: torch.zeros_like(p) for n, p in self.net.named_parameters()}
        names = list(linears)
        try:
            for start in range(0, len(y), self.linear_chunk):
                xs, ys = x[start: start + self.linear_chunk], y[start: start + self.linear_chunk]
                loss = nn.functional.cross_entropy(self.net(xs), ys, reduction="sum")
                deltas = torch.autograd.grad(loss, [outputs[n] for n in names])
                for name, d in zip(names, deltas):
                    d2, a2 = d.detach() ** 2, inputs[name].detach() ** 2
                    total[f"{name}.weight"] += d2.T @ a2
                    if linears[name].bias is not None:
                        total[f"{name}.bias"] += d2.sum(0)
        finally:
            for h in handles:
                h.remove()
        return total

    def _vmap_fisher_sum(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The same sum for any network, from materialised per-sample gradients (``torch.func``)."""
        params = {n: p.detach() for n, p in self.net.named_parameters()}

        def nll(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(functional_call(self.net, p, (xi[None],)), yi[None])

        per_sample = vmap(grad(nll), in_dims=(None, 0, 0))
        total = {n: torch.zeros_like(p) for n, p in params.items()}
        for start in range(0, len(y), self.chunk):
            grads = per_sample(params, x[start : start + self.chunk], y[start : start + self.chunk])
            for n, g in grads.items():
                total[n] += (g**2).sum(0)
        return total

    def grown_bytes(self, tasks: int) -> int:
        """Adam's moments, a Fisher and an anchor per weight, and the pending samples."""
        return super().grown_bytes(tasks) + 2 * parameter_bytes(self.net) + self.pending.full_bytes()

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {**self.pending.state("ewc.pending"),
                **{f"ewc.fisher.{n}": f.clone() for n, f in self.fisher.items()},
                **{f"ewc.anchor.{n}": a.clone() for n, a in self.anchor.items()}}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.pending.load(state, "ewc.pending", self.device)
        for kind, table in (("fisher", self.fisher), ("anchor", self.anchor)):
            table.clear()
            table.update({k.removeprefix(f"ewc.{kind}."): v.to(self.device).clone()
                          for k, v in state.items() if k.startswith(f"ewc.{kind}.")})
