"""The conformance suite every registered strategy passes (the ``Learner`` contract)."""

from __future__ import annotations

import pytest
import torch

from models import STRATEGIES, create
from models.learner import Learner, Replay
from tests.models.synthetic import class_incremental, clusters

DIM, CLASSES = 20, 6
SMALL = {
    "plastic": {"layers": [{"hidden": 128, "k": 16, "hebbian_lr": 0.1}]},
    "finetune": {"hidden": 64, "lr": 0.01},
    "replay": {"hidden": 64, "lr": 0.01, "memory_size": 100},
    "joint": {"hidden": 64, "lr": 0.01},
    "ewc": {"hidden": 64, "lr": 0.01, "ewc_lambda": 100.0},
    "lwf": {"hidden": 64, "lr": 0.01, "alpha": 1.0},
    "gem": {"hidden": 64, "lr": 0.01, "memory_per_task": 40},
    "agem": {"hidden": 64, "lr": 0.01, "memory_per_task": 40, "memory_batch": 64},
    "packnet": {"hidden": 64, "lr": 0.01},
    "pnn": {"hidden": 32, "lr": 0.01},
    "mygo": {"hidden": 64, "features": 32, "lr": 0.01, "generator_hidden": 32, "generator_lr": 1e-2},
    "anml": {"hidden": 128, "nm_hidden": 32, "lr": 0.2},
}


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request) -> str:
    return request.param


def build(strategy: str, seed: int = 0) -> Learner:
    params = SMALL.get(strategy, {})
    return create(strategy, input_dim=DIM, num_classes=CLASSES, seed=seed, params=params)


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, _, _ = clusters(num_classes=CLASSES, dim=DIM, per_class=40, seed=seed)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return x[order], y[order]


def learn(learner: Learner, x: torch.Tensor, y: torch.Tensor) -> None:
    half = len(y) // 2
    for start in range(0, half, 16):
        learner.observe(x[start : start + 16], y[start : start + 16], task="t0")
    learner.sleep(Replay(x[:half:3], y[:half:3]), budget=50)
    for start in range(half, len(y), 16):
        learner.observe(x[start : start + 16], y[start : start + 16], task="t1")


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )


def test_every_registered_strategy_names_itself(strategy):
    assert STRATEGIES[strategy].name == strategy


def test_predict_gives_probabilities_and_respects_the_mask(strategy):
    learner = build(strategy)
    x, y = data()
    learn(learner, x, y)
    probs = learner.predict(x[:10])
    assert probs.shape == (10, CLASSES)
    assert torch.allclose(probs.sum(dim=1), torch.ones(10), atol=1e-5)
    mask = torch.tensor([True, True, False, False, False, False])
    masked = learner.predict(x[:10], mask=mask)
    assert (masked[:, 2:] == 0).all()
    assert torch.allclose(masked.sum(dim=1), torch.ones(10), atol=1e-5)


def test_it_learns(strategy):
    learner = build(strategy)
    x, y, x_test, y_test = clusters(num_classes=CLASSES, dim=DIM, per_class=40, seed=3)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(3))
    x, y = x[order], y[order]
    for _ in range(5):
        for start in range(0, len(y), 16):
            learner.observe(x[start : start + 16], y[start : start + 16])
    learner.sleep(Replay(x[::4], y[::4]))
    assert (learner.predict(x_test).argmax(dim=1) == y_test).float().mean() > 0.8


def test_predict_does_not_change_the_state(strategy):
    learner = build(strategy)
    x, y = data()
    learn(learner, x, y)
    before = learner.state_dict()
    learner.predict(x)
    learner.logits(x)
    assert states_equal(before, learner.state_dict())


def test_state_is_tensors_only(strategy):
    learner = build(strategy)
    x, y = data()
    learn(learner, x, y)
    state = learner.state_dict()
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())


def test_state_round_trip_gives_identical_predictions_and_future_learning(strategy):
    original = build(strategy)
    x, y = data()
    learn(original, x[:120], y[:120])
    copy = build(strategy, seed=99)  # a different seed: everything must come from the state
    copy.load_state_dict(original.state_dict())
    assert torch.equal(copy.predict(x), original.predict(x))

    for learner in (original, copy):
        learn(learner, x[120:], y[120:])
        learner.sleep(Replay(x[:30], y[:30]))
    assert states_equal(original.state_dict(), copy.state_dict())
    assert torch.equal(copy.predict(x), original.predict(x))


def test_state_survives_a_copy_of_its_tensors(strategy):
    learner = build(strategy)
    x, y = data()
    learn(learner, x, y)
    state = learner.state_dict()
    expected = {k: v.clone() for k, v in state.items()}
    learner.observe(x[:16], y[:16])
    assert states_equal(state, expected)  # the returned tensors are not live views


def test_same_seed_same_brain_other_seed_other_brain(strategy):
    x, y = data()
    first, second, other = build(strategy), build(strategy), build(strategy, seed=1)
    for learner in (first, second, other):
        learn(learner, x, y)
    assert states_equal(first.state_dict(), second.state_dict())
    assert torch.equal(first.predict(x), second.predict(x))
    assert not torch.equal(first.predict(x), other.predict(x))


def test_inputs_are_not_mutated(strategy):
    learner = build(strategy)
    x, y = data()
    x_copy, y_copy = x.clone(), y.clone()
    learn(learner, x, y)
    learner.sleep(Replay(x, y))
    learner.predict(x)
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy)


def test_bad_shapes_and_labels_are_rejected(strategy):
    learner = build(strategy)
    with pytest.raises(ValueError):
        learner.observe(torch.zeros(4, DIM + 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        learner.observe(torch.zeros(4, DIM), torch.full((4,), CLASSES))
    with pytest.raises(ValueError):
        learner.predict(torch.zeros(4, DIM - 1))


def test_an_empty_batch_and_an_empty_replay_are_harmless(strategy):
    learner = build(strategy)
    x, y = data()
    learn(learner, x, y)
    before = learner.state_dict()
    assert learner.observe(x[:0], y[:0]).samples == 0
    assert states_equal(before, learner.state_dict())
    learner.sleep(Replay(x[:0], y[:0]))
    assert learner.predict(x[:3]).shape == (3, CLASSES)


def test_forgets_no_more_than_finetune(strategy):
    def run(name: str) -> dict:
        learner = create(name, input_dim=20, num_classes=10, seed=0, params=SMALL.get(name))
        return class_incremental(learner)

    mine, baseline = run(strategy), run("finetune")
    assert mine["average_accuracy"] >= baseline["average_accuracy"] - 0.02
