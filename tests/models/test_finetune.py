"""The fine-tune baseline: an unprotected MLP whose Adam state travels with its weights."""

from __future__ import annotations

import torch

from models.finetune import Finetune
from models.learner import Replay


def test_the_optimizer_state_is_in_the_state_dict():
    learner = Finetune(input_dim=8, num_classes=3, hidden=16)
    learner.observe(torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1]))
    state = learner.state_dict()
    names = [n for n, _ in learner.net.named_parameters()]
    for name in names:
        slots = {f"optim.net.{name}.{slot}" for slot in ("step", "exp_avg", "exp_avg_sq")}
        assert slots <= state.keys()
    assert float(state[f"optim.net.{names[0]}.step"]) == 1.0


def test_each_batch_gets_epochs_per_batch_steps():
    learner = Finetune(input_dim=8, num_classes=3, hidden=16, epochs_per_batch=3)
    learner.observe(torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1]))
    assert float(learner.state_dict()["optim.net.0.weight.step"]) == 3.0


def test_sleep_changes_nothing():
    learner = Finetune(input_dim=8, num_classes=3, hidden=16)
    learner.observe(torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1]))
    before = learner.state_dict()
    learner.sleep(Replay(torch.randn(4, 8), torch.tensor([0, 1, 2, 0])))
    after = learner.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_construction_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Finetune(input_dim=8, num_classes=3, seed=7)
    assert torch.equal(torch.rand(3), expected)
