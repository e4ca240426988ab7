"""Joint training: keeps every sample it sees and trains on all of them, the upper bound."""

from __future__ import annotations

import torch

from models.joint import Joint
from models.learner import Replay
from tests.models.compare import finetune, stream
from tests.models.synthetic import clusters


def test_it_keeps_everything_up_to_max_samples():
    x, y, _, _ = clusters(num_classes=4, per_class=30)
    learner = Joint(input_dim=20, num_classes=4, hidden=32)
    for start in range(0, len(y), 20):
        learner.observe(x[start : start + 20], y[start : start + 20], task=f"t{start // 60}")
    assert torch.equal(learner.memory.x, x) and torch.equal(learner.memory.y, y)
    bounded = Joint(input_dim=20, num_classes=4, hidden=32, max_samples=50)
    bounded.observe(x, y)
    assert len(bounded.memory) == 50


def test_sleep_trains_on_everything():
    x, y, _, _ = clusters(num_classes=4, per_class=30)
    learner = Joint(input_dim=20, num_classes=4, hidden=32, min_sleep_samples=0)
    learner.observe(x, y)
    before = learner.state_dict()["optim.net.0.weight.step"]
    learner.sleep(Replay(x[:0], y[:0]), budget=10 * Joint.sleep_batch)
    assert float(learner.state_dict()["optim.net.0.weight.step"]) == float(before) + 10


def test_a_small_memory_gets_several_passes_a_sleep():
    x, y, _, _ = clusters(num_classes=4, per_class=30)  # 120 samples held
    learner = Joint(input_dim=20, num_classes=4, hidden=32, min_sleep_samples=10 * Joint.sleep_batch)
    learner.observe(x, y)
    before = learner.state_dict()["optim.net.0.weight.step"]
    learner.sleep(Replay(x[:0], y[:0]), budget=1)
    assert float(learner.state_dict()["optim.net.0.weight.step"]) == float(before) + 10


def test_it_is_the_upper_bound_of_the_stream():
    mine, base = stream("joint"), finetune()
    # Measured (seed 0): joint 0.81 accuracy, 0.22 forgetting; finetune 0.31 and 0.83.
    assert mine["average_accuracy"] > base["average_accuracy"] + 0.35
    assert mine["forgetting"] < base["forgetting"] - 0.45
