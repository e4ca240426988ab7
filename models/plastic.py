"""Strategy "plastic": the triarchic plastic brain (after Plasticish), with every mechanism working.

Wake (``observe``, one cheap step per batch):

1. *Normalise.* Each input is centred on its own mean and scaled to unit L2 norm. The map has no
   state, so prediction changes nothing and memory keys never go stale.
2. *Sparse code.* An encoder ``W_enc [hidden, input_dim]`` with unit-norm rows gives cosine
   activations; k-winner-take-all keeps exactly ``k`` of them per sample (the code is the winners'
   activations, zero elsewhere).
3. *Competitive Hebbian plasticity.* Each sample's best unit, if immature, moves toward the mean of
   the samples it won (``hebbian_lr``); mature units are locked. Each unit keeps a firing-frequency
   EMA (for neurogenesis) and its win count since the last sleep (for maturation).
4. *Neurogenesis.* A unit is dead when it is immature, fires below ``dead_fraction`` of the expected
   rate ``k / hidden`` and has contributed nothing to the readout's statistics since it was born (so
   recycling never erases anything learned). Up to ``max_new_per_step`` dead units per step move
   ``newborn_step`` of the way toward the batch's worst represented inputs (lowest best activation);
   their readout weights, importance, statistics and firing rate are reset.
5. *Core readout.* ``W_core [num_classes, hidden]`` takes a delta-rule step (the softmax
   cross-entropy gradient), each synapse scaled by ``1 - importance``: the consolidation brake. A
   synapse of importance 1 gets exactly zero update.
6. *Context.* ``W_ctx`` decays by ``context_decay`` and takes the same step with the larger
   ``context_lr``: it carries what was just seen and fades.
7. *Episodic memory.* Normalised inputs (input space, so keys never go stale) go to a ring buffer
   per class, so a new class never flushes an old one out. Prediction mixes the readout's softmax
   with a similarity-weighted vote of the ``memory_k`` nearest stored inputs (``memory_weight``).
8. *Sufficient statistics* ``A = Σ s sᵀ``, ``B = Σ s onehot(y)ᵀ`` and class counts, over all codes.

Sleep (``sleep``):

1. The core readout is re-solved in closed form, ridge regression ``(A + ridge·I)⁻¹ B`` by Cholesky.
   It depends on what was seen, not on its order (with a fixed code, the same samples in any order
   give the same readout), which is what keeps old classes in class-incremental learning.
2. Importance rises on the core synapses that carry correct recall of the replayed samples:
   ``imp[c] += importance_rate · mean over replayed class-c samples of (code / max code) ·
   correct``, clamped to [0, 1].
3. The context decays by ``sleep_context_decay``; units whose firing rate since the last sleep is at
   least ``maturity_fraction`` times the expected rate become mature; the win counts restart.

Defaults come from Split Fashion-MNIST, class-incremental (5 tasks of 2 classes, one pass, batches
of 64, sleep with 500 reservoir-replayed samples after each task), mean of 3 seeds: 85.2% final
accuracy after the last sleep (85.6% on the same stream shuffled), 84.8% just before it, 80.7% with
no sleep at all; fine-tuning: 19.9%. A wide code (k = 256 of 2048) suits the closed-form readout
best (k = 32: 82.2%). Encoder plasticity is gentle because every change of the code makes the
statistics gathered before it stale: Hebbian learning (``hebbian_lr`` 0.05) cost 1 point after
sleep and 9 just before it, so it is off by default. The core's wake rate is small so that, between
sleeps, the unconsolidated readout does not overrule the memory's vote on old classes; the memory
and the context carry the new classes.

There is no randomness after the seeded initialisation of ``W_enc``, and all state is tensors, so a
reloaded learner predicts and learns exactly as the original would.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from models.learner import Learner, Replay, Stats
from models.registry import register

_QUERY_CHUNK = 2048  # queries per block when comparing with the memory


@register
class Plastic(Learner):
    name = "plastic"

    # Everything that changes while learning; ``state_dict`` holds exactly these tensors.
    _STATE = (
        "w_enc", "mature", "freq", "period_wins", "period_samples",
        "w_core", "w_ctx", "importance", "stat_a", "stat_b", "class_counts",
        "memory_keys", "memory_writes",
    )

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        seed: int = 0,
        hidden: Annotated[
            int, Field(ge=2, le=8192, description="units of the sparse code")
        ] = 2048,
        k: Annotated[
            int, Field(ge=1, description="active units per sample (k-winner-take-all)")
        ] = 256,
        hebbian_lr: Annotated[
            float, Field(ge=0, le=1, description="step of an immature winner toward its inputs")
        ] = 0.0,
        firing_ema: Annotated[
            float, Field(gt=0, le=1, description="rate of the firing-frequency average")
        ] = 0.05,
        dead_fraction: Annotated[
            float, Field(ge=0, le=1, description="dead below this fraction of the expected rate")
        ] = 0.1,
        max_new_per_step: Annotated[
            int, Field(ge=0, description="units recycled per step at most")
        ] = 8,
        newborn_step: Annotated[
            float, Field(gt=0, le=1, description="how far a recycled unit moves toward its input")
        ] = 0.1,
        maturity_fraction: Annotated[
            float, Field(ge=0, description="mature at sleep above this share of the expected rate")
        ] = 1.0,
        core_lr: Annotated[
            float, Field(ge=0, description="wake delta-rule rate of the core readout")
        ] = 0.002,
        context_lr: Annotated[
            float, Field(ge=0, description="wake delta-rule rate of the context readout")
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
            float, Field(gt=0, description="L2 penalty of the closed-form core readout")
        ] = 0.1,
        importance_rate: Annotated[
            float, Field(ge=0, description="importance added per sleep for full correct recall")
        ] = 1.0,
        memory_capacity: Annotated[
            int, Field(ge=0, le=100_000, description="episodic memory slots, shared by classes")
        ] = 5000,
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
        self.check_params({"hidden": hidden, "k": k})
        self.hidden, self.k = hidden, k
        self.hebbian_lr, self.firing_ema = hebbian_lr, firing_ema
        self.dead_fraction, self.max_new_per_step = dead_fraction, max_new_per_step
        self.newborn_step, self.maturity_fraction = newborn_step, maturity_fraction
        self.core_lr, self.context_lr = core_lr, context_lr
        self.context_decay, self.sleep_context_decay = context_decay, sleep_context_decay
        self.readout_scale, self.ridge, self.importance_rate = readout_scale, ridge, importance_rate
        self.memory_k, self.memory_weight = memory_k, memory_weight
        self.memory_temperature = memory_temperature
        # Each class owns a ring of ``per_class`` memory slots.
        self.per_class = max(1, memory_capacity // num_classes) if memory_capacity else 0
        self.expected_rate = k / hidden

        generator = torch.Generator().manual_seed(seed)
        w_enc = torch.randn(hidden, input_dim, generator=generator)
        self.w_enc = w_enc / w_enc.norm(dim=1, keepdim=True)
        self.mature = torch.zeros(hidden, dtype=torch.bool)
        self.freq = torch.full((hidden,), self.expected_rate)
        self.period_wins = torch.zeros(hidden)
        self.period_samples = torch.zeros((), dtype=torch.int64)
        self.w_core = torch.zeros(num_classes, hidden)
        self.w_ctx = torch.zeros(num_classes, hidden)
        self.importance = torch.zeros(num_classes, hidden)
        self.stat_a = torch.zeros(hidden, hidden)
        self.stat_b = torch.zeros(hidden, num_classes)
        self.class_counts = torch.zeros(num_classes, dtype=torch.int64)
        self.memory_keys = torch.zeros(num_classes * self.per_class, input_dim)
        self.memory_writes = torch.zeros(num_classes, dtype=torch.int64)

    @classmethod
    def check_params(cls, params: dict) -> None:
        if params["k"] >= params["hidden"]:
            raise ValueError(f"k ({params['k']}) must be smaller than hidden ({params['hidden']})")

    # -- encoding ---------------------------------------------------------------------------------
    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"x must have shape [B, {self.input_dim}], got {list(x.shape)}")
        return x.to(self.device, torch.float32)

    @staticmethod
    def _normalise(x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        return centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def _encode(self, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Activations ``[B, hidden]``, winners ``[B, k]`` and the sparse code ``[B, hidden]``."""
        act = xn @ self.w_enc.T
        top, winners = act.topk(self.k, dim=1)
        code = torch.zeros_like(act).scatter_(1, winners, top)
        return act, winners, code

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The sparse code ``[B, hidden]`` of ``x``: exactly ``k`` winners per sample. Pure."""
        return self._encode(self._normalise(self._check_x(x)))[2]

    # -- readouts ---------------------------------------------------------------------------------
    def _readout_probs(self, code: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        scores = self.readout_scale * code @ (self.w_core + self.w_ctx).T
        return torch.softmax(scores.masked_fill(~seen, float("-inf")), dim=1)

    def _memory_vote(self, xn: torch.Tensor) -> torch.Tensor | None:
        """Similarity-weighted vote ``[B, num_classes]`` of the nearest stored inputs, or None."""
        filled = self.memory_writes.clamp(max=self.per_class)
        if int(filled.sum()) == 0:
            return None
        slot = torch.arange(self.per_class, device=self.device)
        valid = (slot[None, :] < filled[:, None]).flatten()
        keys = self.memory_keys[valid]
        labels = torch.arange(self.num_classes, device=self.device).repeat_interleave(filled)
        k = min(self.memory_k, keys.shape[0])
        votes = []
        for block in xn.split(_QUERY_CHUNK):
            sims, idx = (block @ keys.T).topk(k, dim=1)
            weights = torch.softmax(sims / self.memory_temperature, dim=1)
            vote = torch.zeros(block.shape[0], self.num_classes, device=self.device)
            votes.append(vote.scatter_add_(1, labels[idx], weights))
        return torch.cat(votes)

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        xn = self._normalise(self._check_x(x))
        seen = self.class_counts > 0
        if not bool(seen.any()):
            return torch.full((len(xn), self.num_classes), 1 / self.num_classes, device=self.device)
        probs = self._readout_probs(self._encode(xn)[2], seen)
        vote = self._memory_vote(xn)
        if vote is not None:
            probs = (1.0 - self.memory_weight) * probs + self.memory_weight * vote
        return probs

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the mixed readout/memory probabilities; classes never seen get about -27.6."""
        return self._probs(x).clamp_min(1e-12).log()

    # -- wake -------------------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, x: torch.Tensor, y: torch.Tensor, task: str | None = None) -> Stats:
        xn = self._normalise(self._check_x(x))
        y = y.to(self.device, torch.int64)
        if y.shape != (x.shape[0],) or bool(((y < 0) | (y >= self.num_classes)).any()):
            raise ValueError(f"y must be [B] class indices in [0, {self.num_classes})")
        batch = x.shape[0]
        if batch == 0:
            return Stats()
        act, winners, code = self._encode(xn)
        onehot = torch.nn.functional.one_hot(y, self.num_classes).float()
        self.class_counts += onehot.sum(0).long()

        # Delta rule: core braked by importance, context fast and decaying.
        probs = self._readout_probs(code, self.class_counts > 0)
        loss = float(-(probs.gather(1, y[:, None]).clamp_min(1e-12).log()).mean())
        grad = (probs - onehot).T @ code / batch
        self.w_core -= self.core_lr * grad * (1.0 - self.importance)
        self.w_ctx.mul_(self.context_decay).sub_(self.context_lr * grad)

        # Sufficient statistics of the closed-form readout.
        self.stat_a += code.T @ code
        self.stat_b += code.T @ onehot

        # Firing frequency, then competitive Hebbian learning: each sample's best unit, if immature,
        # moves toward the mean of the samples it won.
        wins = torch.bincount(winners.flatten(), minlength=self.hidden).float()
        self.freq.mul_(1.0 - self.firing_ema).add_(self.firing_ema * wins / batch)
        self.period_wins += wins
        self.period_samples += batch
        best = winners[:, 0]
        won = torch.bincount(best, minlength=self.hidden).float()
        learn = (won > 0) & ~self.mature
        if self.hebbian_lr > 0 and bool(learn.any()):
            sums = torch.zeros_like(self.w_enc).index_add_(0, best, xn)
            target = sums[learn] / won[learn, None]
            moved = self.w_enc[learn] + self.hebbian_lr * (target - self.w_enc[learn])
            self.w_enc[learn] = moved / moved.norm(dim=1, keepdim=True).clamp_min(1e-12)

        born = self._neurogenesis(xn, act.max(dim=1).values)
        self._remember(xn, y)
        return Stats(samples=batch, loss=loss, extra={"new_units": born})

    def _neurogenesis(self, xn: torch.Tensor, best: torch.Tensor) -> int:
        """Recycle dead units toward the worst represented inputs of the batch; return how many.

        A unit is dead when it is immature, its firing frequency is below ``dead_fraction`` of the
        expected rate and it has contributed nothing to the readout's statistics since it was born,
        so recycling it never erases anything learned.
        """
        dead = ~self.mature & (self.freq < self.dead_fraction * self.expected_rate)
        dead &= self.stat_a.diagonal() == 0
        usable = xn.norm(dim=1) > 0.5  # constant inputs normalise to zero: nothing to learn
        n = min(int(dead.sum()), int(usable.sum()), self.max_new_per_step)
        if n == 0:
            return 0
        dead_idx = torch.nonzero(dead).flatten()
        units = dead_idx[torch.argsort(self.freq[dead_idx], stable=True)[:n]]
        inputs = torch.argsort(best.masked_fill(~usable, float("inf")), stable=True)[:n]
        moved = self.w_enc[units] + self.newborn_step * (xn[inputs] - self.w_enc[units])
        self.w_enc[units] = moved / moved.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.freq[units] = self.expected_rate
        self.period_wins[units] = 0.0
        for weights in (self.w_core, self.w_ctx, self.importance):
            weights[:, units] = 0.0
        self.stat_a[units, :] = 0.0
        self.stat_a[:, units] = 0.0
        self.stat_b[units, :] = 0.0
        return n

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

    # -- sleep ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        if int(self.class_counts.sum()) > 0:
            eye = torch.eye(self.hidden, device=self.device, dtype=torch.float64)
            factor = torch.linalg.cholesky(self.stat_a.double() + self.ridge * eye)
            solved = torch.cholesky_solve(self.stat_b.double(), factor)
            self.w_core = solved.T.float().contiguous()
        accuracy = self._raise_importance(replay, budget)
        self.w_ctx.mul_(self.sleep_context_decay)
        rate = self.period_wins / max(int(self.period_samples), 1)
        newly_mature = ~self.mature & (self.period_samples > 0)
        newly_mature &= rate >= self.maturity_fraction * self.expected_rate
        self.mature |= newly_mature
        self.period_wins.zero_()
        self.period_samples.zero_()
        extra: dict[str, float | int | str] = {
            "new_mature": int(newly_mature.sum()), "mature": int(self.mature.sum()),
        }
        if accuracy is not None:
            extra["replay_accuracy"] = accuracy
        used = min(len(replay), budget) if accuracy is not None else 0
        return Stats(samples=used, extra=extra)

    def _raise_importance(self, replay: Replay, budget: int) -> float | None:
        """Raise the importance of core synapses that carry correct recall of replayed samples."""
        n = min(len(replay), budget)
        if n == 0 or self.importance_rate == 0:
            return None
        xn = self._normalise(self._check_x(replay.x[:n]))
        y = replay.y[:n].to(self.device, torch.int64)
        code = self._encode(xn)[2]
        seen = self.class_counts > 0
        scores = (code @ self.w_core.T).masked_fill(~seen, float("-inf"))
        correct = (scores.argmax(dim=1) == y).float()
        share = (code / code.amax(dim=1, keepdim=True).clamp_min(1e-12)).clamp_min(0.0)
        onehot = torch.nn.functional.one_hot(y, self.num_classes).float()
        per_class = onehot.sum(0).clamp_min(1.0)[:, None]
        raised = onehot.T @ (share * correct[:, None]) / per_class
        self.importance.add_(self.importance_rate * raised)
        self.importance.clamp_(0.0, 1.0)
        return float(correct.mean())

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).detach().clone() for name in self._STATE}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self._STATE) - set(state)
        unexpected = set(state) - set(self._STATE)
        if missing or unexpected:
            raise ValueError(
                f"state mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        for name in self._STATE:
            current = getattr(self, name)
            value = state[name]
            if value.shape != current.shape or value.dtype != current.dtype:
                raise ValueError(f"state {name!r}: expected {current.dtype} {list(current.shape)}, "
                                 f"got {value.dtype} {list(value.shape)}")
            setattr(self, name, value.detach().to(self.device).clone())

    def to(self, device: torch.device | str) -> "Plastic":
        super().to(device)
        for name in self._STATE:
            setattr(self, name, getattr(self, name).to(self.device))
        return self
