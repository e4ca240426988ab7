"""Replay selection policies, run over simulated streams."""

from __future__ import annotations

import random

import pytest

from models.replay import POLICIES, ClassBalancedPolicy, ReservoirPolicy


def stream(policy, labels: list[int], capacity: int, seed: int = 0) -> list[tuple[int, int]]:
    """Offer ``(index, label)`` items to ``policy``; return the buffer's content."""
    rng = random.Random(seed)
    buffer: list[tuple[int, int]] = []
    for seen, label in enumerate(labels):
        slot = policy.slot_for(
            label=label, seen=seen, capacity=capacity, slot_labels=[b[1] for b in buffer], rng=rng
        )
        if slot is None:
            continue
        assert 0 <= slot < len(buffer) or slot == len(buffer) < capacity
        if slot == len(buffer):
            buffer.append((seen, label))
        else:
            buffer[slot] = (seen, label)
    return buffer


def test_policies_by_name():
    assert POLICIES == {"reservoir": ReservoirPolicy, "class_balanced": ClassBalancedPolicy}


@pytest.mark.parametrize("policy", [ReservoirPolicy(), ClassBalancedPolicy()])
def test_the_buffer_fills_up_first_and_never_overflows(policy):
    buffer = stream(policy, [i % 3 for i in range(50)], capacity=20)
    assert len(buffer) == 20
    assert [i for i, _ in stream(policy, [0] * 10, capacity=20)] == list(range(10))
    assert stream(policy, [0, 1, 2], capacity=0) == []


def test_reservoir_keeps_a_uniform_sample_of_the_stream():
    n, capacity, trials = 1000, 100, 300
    kept = [0] * n
    for trial in range(trials):
        for index, _ in stream(ReservoirPolicy(), [0] * n, capacity, seed=trial):
            kept[index] += 1
    # Each item is kept with probability capacity / n = 0.1; check each tenth of the stream.
    for start in range(0, n, 100):
        rate = sum(kept[start : start + 100]) / (100 * trials)
        assert abs(rate - 0.1) < 0.01


def test_class_balanced_keeps_classes_balanced_on_a_class_incremental_stream():
    labels = [c for c in range(5) for _ in range(200)]  # 5 classes, one after the other
    buffer = stream(ClassBalancedPolicy(), labels, capacity=50)
    counts = {c: sum(1 for _, label in buffer if label == c) for c in range(5)}
    assert counts == {c: 10 for c in range(5)}
    reservoir = stream(ReservoirPolicy(), labels, capacity=50)
    assert sum(1 for _, label in reservoir if label == 0) < 10  # what balancing fixes


def test_class_balanced_drops_a_sample_of_the_largest_class_and_evicts_from_it_otherwise():
    policy, rng = ClassBalancedPolicy(), random.Random(0)
    slots = [0, 0, 0, 1, 1, 2]
    assert policy.slot_for(label=0, seen=10, capacity=6, slot_labels=slots, rng=rng) is None
    for _ in range(20):
        assert slots[policy.slot_for(label=2, seen=10, capacity=6, slot_labels=slots, rng=rng)] == 0
        assert slots[policy.slot_for(label=7, seen=10, capacity=6, slot_labels=slots, rng=rng)] == 0
