"""Replay selection policies: which slot of a fixed-size buffer a new sample goes to.

Storage lives elsewhere (Redis or in process); a policy only decides. It is stateless: everything
it needs is passed in, so any storage can snapshot and restore the buffer without the policy.

``slot_for`` gets the new sample's ``label``, ``seen`` (how many samples were offered before this
one), the buffer's ``capacity``, ``slot_labels`` (the labels of the filled slots, one per slot, so
``len(slot_labels)`` is the filled count) and the ``rng`` to draw from. It returns the index of the
slot to write (``len(slot_labels)`` appends) or ``None`` to drop the sample.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Protocol


class SelectionPolicy(Protocol):
    def slot_for(
        self, *, label: int, seen: int, capacity: int, slot_labels: list[int], rng: random.Random
    ) -> int | None: ...


class ReservoirPolicy:
    """Classic reservoir sampling (Vitter's algorithm R).

    After ``n`` offers every sample offered so far is in the buffer with the same probability
    ``capacity / n``, whatever the order: the buffer is a uniform sample of the stream.
    """

    def slot_for(
        self, *, label: int, seen: int, capacity: int, slot_labels: list[int], rng: random.Random
    ) -> int | None:
        if len(slot_labels) < capacity:
            return len(slot_labels)
        # This is sample number seen + 1: keep it with probability capacity / (seen + 1).
        slot = rng.randint(0, seen)
        return slot if slot < capacity else None


class ClassBalancedPolicy:
    """Greedy class balancing (as in GDumb): classes get equal shares of a full buffer.

    While there is room every sample is kept. When full, a sample of a class that is not (one of)
    the largest in the buffer replaces a random sample of a largest class (one picked at random if
    several tie); a sample of a largest class is dropped. A class that arrives late thus grows to
    its share at the expense of the old classes, which shrink evenly.
    """

    def slot_for(
        self, *, label: int, seen: int, capacity: int, slot_labels: list[int], rng: random.Random
    ) -> int | None:
        if len(slot_labels) < capacity:
            return len(slot_labels)
        if capacity == 0:
            return None
        counts = Counter(slot_labels)
        largest = max(counts.values())
        if counts.get(label, 0) >= largest:
            return None
        victim = rng.choice(sorted(c for c, n in counts.items() if n == largest))
        return rng.choice([i for i, c in enumerate(slot_labels) if c == victim])


POLICIES: dict[str, type[SelectionPolicy]] = {
    "reservoir": ReservoirPolicy,
    "class_balanced": ClassBalancedPolicy,
}
