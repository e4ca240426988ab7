"""A sharded wake (issue 17): a learner whose wake is a sum of per-sample statistics learns the same
from shards' statistics merged as from the samples observed in one go, and a learner that cannot
merge says so."""

from __future__ import annotations

import pytest
import torch

from models import STRATEGIES, create
from models.learner import Unsupported, add_statistics
from models.plastic import Plastic
from tests.models.synthetic import clusters
from tests.models.test_contract import SMALL

CLASSES = 5


def stream(dim: int, n: int = 60, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, _, _ = clusters(num_classes=CLASSES, dim=dim, per_class=n, seed=seed)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return x[order], y[order]


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 32):
    for start in range(0, len(y), size):
        yield x[start:start + size], y[start:start + size]


def sharded(learner: Plastic, x: torch.Tensor, y: torch.Tensor, shards: int) -> None:
    """What the service does: each shard sums its batches' statistics (on its own copy of the
    learner); the merge adds the shards' sums, in shard order, to the learner."""
    parts = []
    for xs, ys in zip(x.tensor_split(shards), y.tensor_split(shards)):
        copy = Plastic(**learner.init_args)
        copy.load_state_dict(learner.state_dict())
        total: dict[str, torch.Tensor] = {}
        for xb, yb in batches(xs, ys):
            add_statistics(total, copy.wake_statistics(xb, yb, "t1"))
        parts.append(total)
    merged: dict[str, torch.Tensor] = {}
    for part in parts:
        add_statistics(merged, part)
    learner.merge(merged)


# (input shape, params): the image default (the conv eyes), the conv eyes on a flat 28 x 28
# vector, no layers at all (the readout reads the normalised input)
MERGEABLE = [((1, 12, 12), {"layers": [{"type": "conv", "filters": 16, "size": 3, "pool": 2}]}),
             ((28, 28), {}), ((784,), {}), ((24,), {"layers": []})]


@pytest.mark.parametrize(("shape", "params"), MERGEABLE)
@pytest.mark.parametrize("shards", [1, 2, 3])
def test_merged_shards_learn_what_one_learner_learns(shape, params, shards):
    dim = int(torch.tensor(shape).prod())
    make = dict(input_dim=dim, num_classes=CLASSES, seed=0, input_shape=shape, **params)
    one, many = Plastic(**make), Plastic(**make)
    one.init_args = many.init_args = make
    first, labels = stream(dim, seed=1)
    for xb, yb in batches(first[:100], labels[:100]):  # something learned before, both alike
        one.observe(xb, yb)
        many.observe(xb, yb)
    assert one.mergeable() and many.mergeable()

    x, y = first[100:], labels[100:]
    for xb, yb in batches(x, y):
        one.observe(xb, yb)
    sharded(many, x, y, shards)

    a, b = one.state_dict(), many.state_dict()
    assert a.keys() == b.keys()
    for name in ("stat_a", "stat_b"):
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-4), name
    for name in ("class_counts", "period_samples", "w_ctx", "importance", "ridge_value"):
        assert torch.equal(a[name], b[name]), name
    # the readout solves a system with a small ridge: rounding in the sums' order shows, slightly
    assert float((a["w_core"] - b["w_core"]).norm() / a["w_core"].norm()) < 1e-3
    probe, _ = stream(dim, n=20, seed=9)
    p, q = one.predict(probe), many.predict(probe)
    assert torch.equal(p.argmax(1), q.argmax(1))
    assert torch.allclose(p, q, atol=1e-3)  # measured: about 1e-4 (readout_scale 10 amplifies)


def test_wake_statistics_change_nothing():
    learner = Plastic(input_dim=784, num_classes=CLASSES, seed=0, input_shape=(784,))
    x, y = stream(784)
    before = learner.state_dict()
    stats = learner.wake_statistics(x, y, "t1")
    assert set(stats) == {"stat_a", "stat_b", "class_counts", "period_samples"}
    after = learner.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("params", [
    {},  # the vector default: one sparse layer, whose code learns (neurogenesis) and firing rates move
    {"layers": [{"hidden": 64, "k": 8, "frozen": True}]},  # frozen: its firing rates still follow the order
    {"layers": [], "readout": "delta"},
    {"layers": [], "mode": "panic"},
    {"layers": [], "memory_capacity": 50},
])
def test_a_plastic_learner_that_cannot_merge_says_so(params):
    learner = Plastic(input_dim=24, num_classes=CLASSES, seed=0, **params)
    assert not learner.mergeable()
    x, y = stream(24)
    with pytest.raises(Unsupported):
        learner.wake_statistics(x, y, "t1")
    with pytest.raises(Unsupported):
        learner.merge({})


def test_a_context_left_by_a_panic_stops_merging_until_it_is_gone():
    learner = Plastic(input_dim=24, num_classes=CLASSES, seed=0, layers=[])
    assert learner.mergeable()
    learner.w_ctx[0, 0] = 0.5  # what a panic leaves; it decays per wake batch: order matters
    assert not learner.mergeable()


def test_merge_refuses_statistics_of_another_shape():
    learner = Plastic(input_dim=24, num_classes=CLASSES, seed=0, layers=[])
    x, y = stream(24)
    stats = learner.wake_statistics(x, y, "t1")
    with pytest.raises(ValueError):
        learner.merge({**stats, "stat_a": torch.zeros(3, 3)})
    with pytest.raises(ValueError):
        learner.merge({k: v for k, v in stats.items() if k != "stat_b"})


@pytest.mark.parametrize("strategy", sorted(set(STRATEGIES) - {"plastic"}))
def test_other_strategies_cannot_merge(strategy):
    learner = create(strategy, input_dim=20, num_classes=CLASSES, seed=0, params=SMALL.get(strategy, {}))
    assert not learner.mergeable()
    assert type(learner).mergeable_when is None
    with pytest.raises(Unsupported):
        learner.wake_statistics(torch.zeros(2, 20), torch.zeros(2, dtype=torch.long), "t1")
