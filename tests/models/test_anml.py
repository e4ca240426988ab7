"""ANML: the gate is meta-learned, meta-training helps sequential learning of new classes, the gate
stays fixed while learning, the state round-trips, and both meta-gradients (first- and
second-order) run and differ."""

from __future__ import annotations

import pytest
import torch

from models import create
from models.anml import ANML
from models.learner import Replay, Unsupported

DIM = 40
FAST = {"hidden": 64, "nm_hidden": 32, "meta_lr": 0.003}


def structured(classes: int, per_class: int, *, seed: int, signal: int = 10, noise: float = 2.0):
    """Train and test splits of Gaussian classes whose means live in the first ``signal`` dims; the
    other dims are loud noise shared by every class, background and new alike. A network that
    meta-learned to attend to the signal dims learns new classes from a few samples."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, signal, generator=gen) * 1.5

    def split() -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(classes).repeat_interleave(per_class)
        x = torch.cat([means[y] + 0.5 * torch.randn(len(y), signal, generator=gen),
                       noise * torch.randn(len(y), DIM - signal, generator=gen)], dim=1)
        return x, y

    return (*split(), *split())


def background(seed: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, _, _ = structured(30, 40, seed=seed)
    return x, y + 1000  # the background set's own labels, far outside the brain's classes


def build(seed: int = 0, **params) -> ANML:
    learner = create("anml", input_dim=DIM, num_classes=10, seed=seed, params={**FAST, **params})
    assert isinstance(learner, ANML)
    return learner


def sequential_accuracy(learner: ANML) -> float:
    """Learn 10 new classes one after the other, one pass, batch 1; accuracy over all of them."""
    x, y, x_test, y_test = structured(10, 15, seed=7)
    for c in range(10):
        learner.observe(x[y == c], y[y == c])
    return float((learner.predict(x_test).argmax(dim=1) == y_test).float().mean())


def test_meta_training_learns_the_gate_and_leaves_the_brains_head_alone() -> None:
    learner = build()
    before = learner.state_dict()
    x, y = background()
    stats = learner.meta_train(x, y, steps=60, inner_steps=5).as_dict()
    after = learner.state_dict()
    for key in ("nm.0.weight", "nm.2.weight", "body.0.weight", "body.2.weight"):
        assert not torch.equal(before[key], after[key]), key
    # the background classes have a meta-head of their own: the brain's head is untouched
    assert torch.equal(before["head.weight"], after["head.weight"])
    assert torch.equal(before["head.bias"], after["head.bias"])
    assert stats["classes"] == 30 and stats["steps"] == 60 and stats["first_order"] == 0
    assert stats["gate_mean_after"] != pytest.approx(stats["gate_mean_before"], abs=1e-3)
    assert stats["loss"] < stats["first_loss"]
    assert int(after["anml.meta_steps"]) == 60


def test_meta_training_helps_learning_new_classes_in_sequence() -> None:
    x, y = background()
    scratch = sequential_accuracy(build())
    meta = build()
    meta.meta_train(x, y, steps=300, inner_steps=10)
    meta_trained = sequential_accuracy(meta)
    # measured (seeds 0-2): 0.10 from scratch (only the last class survives) vs 0.48-0.56
    assert meta_trained > scratch + 0.25, (meta_trained, scratch)


@pytest.mark.parametrize("train_layers", ["head", "pln"])
def test_observe_and_sleep_keep_the_gate_fixed(train_layers: str) -> None:
    learner = build(train_layers=train_layers)
    before = learner.state_dict()
    x, y, _, _ = structured(10, 10, seed=3)
    learner.observe(x, y)
    learner.sleep(Replay(x[::2], y[::2]), budget=20)
    after = learner.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("nm."))
    assert not torch.equal(before["head.weight"], after["head.weight"])
    body_same = torch.equal(before["body.0.weight"], after["body.0.weight"])
    assert body_same == (train_layers == "head")
    assert int(after["anml.updates"]) == len(y) + 20  # batch 1: one SGD step per sample


def test_state_round_trip_after_meta_training() -> None:
    x, y = background()
    original = build()
    original.meta_train(x, y, steps=20, inner_steps=3)
    xs, ys, x_test, _ = structured(10, 5, seed=3)
    original.observe(xs, ys)
    copy = build(seed=99)
    copy.load_state_dict(original.state_dict())
    assert torch.equal(copy.predict(x_test), original.predict(x_test))
    for learner in (original, copy):  # and they go on identically, meta-training included
        learner.meta_train(x, y, steps=5, inner_steps=3)
        learner.observe(xs, ys)
        learner.sleep(Replay(xs, ys), budget=10)
    a, b = original.state_dict(), copy.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("train_layers", ["head", "pln"])
def test_first_and_second_order_both_run_and_differ(train_layers: str) -> None:
    x, y = background()
    first, second = build(train_layers=train_layers), build(train_layers=train_layers)
    s1 = first.meta_train(x, y, steps=3, inner_steps=4, first_order=True).as_dict()
    s2 = second.meta_train(x, y, steps=3, inner_steps=4, first_order=False).as_dict()
    assert (s1["first_order"], s2["first_order"]) == (1, 0)
    # the same samples and the same start: only the second-order terms tell them apart
    assert s1["first_loss"] == pytest.approx(s2["first_loss"])
    nm1, nm2 = first.state_dict()["nm.0.weight"], second.state_dict()["nm.0.weight"]
    assert not torch.allclose(nm1, nm2, atol=1e-7)


def test_meta_training_needs_two_classes_and_other_strategies_refuse_it() -> None:
    learner = build()
    x, _ = background()
    with pytest.raises(ValueError, match="two"):
        learner.meta_train(x[:10], torch.full((10,), 5), steps=1, inner_steps=1)
    with pytest.raises(ValueError):
        learner.meta_train(x[:10, :5], torch.arange(10), steps=1, inner_steps=1)
    finetune = create("finetune", input_dim=DIM, num_classes=10, params={"hidden": 8})
    assert ANML.meta_trainable and not finetune.meta_trainable
    with pytest.raises(Unsupported, match="cannot be meta-trained"):
        finetune.meta_train(x[:10], torch.arange(10), steps=1, inner_steps=1)


def test_progress_is_reported() -> None:
    x, y = background()
    seen: list[float] = []
    build().meta_train(x, y, steps=40, inner_steps=2, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 20
