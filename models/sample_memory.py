"""A fixed-capacity episodic sample store for the network strategies, with tensor-only state.

``SampleMemory`` keeps up to ``capacity`` samples chosen by a replay selection policy
(``models.replay.POLICIES``). Its randomness is reproducible from its state alone: the policy's
``random.Random`` is seeded for every offered batch from ``(seed, seen)``, and each batch drawn
gets a ``torch.Generator`` seeded from ``(seed, seen, draws)``. A learner reloaded from
``state()`` (seed included) thus keeps and draws exactly the samples the original would have.
"""

from __future__ import annotations

import hashlib
import random

import torch

from models.replay import POLICIES
from models.sizing import sample_bytes


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends on every part (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SampleMemory:
    def __init__(self, *, capacity: int, input_dim: int, policy: str = "reservoir", seed: int = 0,
                 device: torch.device | None = None) -> None:
        self.capacity, self.seed, self.policy = capacity, seed, POLICIES[policy]()
        self.x = torch.empty(0, input_dim, device=device)
        self.y = torch.empty(0, dtype=torch.int64, device=device)
        self.seen = self.draws = 0

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def full_bytes(self) -> int:
        """Its samples' bytes once all ``capacity`` slots are filled."""
        return self.capacity * sample_bytes(self.x.shape[1])

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Offer each sample of the batch to the policy, in order."""
        labels, writes = self.y.tolist(), []
        rng = random.Random(mix_seed(self.seed, self.seen))
        for i, label in enumerate(y.tolist()):
            slot = self.policy.slot_for(label=label, seen=self.seen, capacity=self.capacity,
                                        slot_labels=labels, rng=rng)
            self.seen += 1
            if slot is None:
                continue
            if slot == len(labels):
                labels.append(label)
            labels[slot] = label
            writes.append((slot, i))
        grow = len(labels) - len(self)
        if grow:
            self.x = torch.cat([self.x, self.x.new_zeros(grow, self.x.shape[1])])
        if writes:
            slots, rows = zip(*dict(writes).items())  # a later sample may take the same slot
            self.x[torch.tensor(slots, device=self.x.device)] = x[torch.tensor(rows, device=x.device)].to(self.x.device)
        self.y = torch.tensor(labels, dtype=torch.int64, device=self.y.device)

    def generator(self) -> torch.Generator:
        """A fresh CPU generator for one draw; every call gives another."""
        self.draws += 1
        return torch.Generator().manual_seed(mix_seed(self.seed, self.seen, self.draws))

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``n`` distinct stored samples, at random."""
        index = torch.randperm(len(self), generator=self.generator())[:n].to(self.y.device)
        return self.x[index], self.y[index]

    # -- state ------------------------------------------------------------------------------------
    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.x": self.x.clone(), f"{prefix}.y": self.y.clone(),
                f"{prefix}.seen": torch.tensor(self.seen), f"{prefix}.draws": torch.tensor(self.draws),
                f"{prefix}.seed": torch.tensor(self.seed)}

    def load(self, state: dict[str, torch.Tensor], prefix: str, device: torch.device) -> None:
        self.x = state[f"{prefix}.x"].to(device, torch.float32).clone()
        self.y = state[f"{prefix}.y"].to(device, torch.int64).clone()
        self.seen, self.draws = int(state[f"{prefix}.seen"]), int(state[f"{prefix}.draws"])
        self.seed = int(state[f"{prefix}.seed"])
