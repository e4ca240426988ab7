"""Strategy "mygo": wake/sleep generative replay, without the two bugs of the original."""

from __future__ import annotations

import pytest
import torch

from models import create
from models.learner import Replay
from models.mygo import UNSEEN, MyGO
from service.orchestration import sleep_budget
from tests.models.synthetic import clusters, task_batches

DIM, CLASSES, PER_TASK = 20, 6, 2
# A small model, so that the short synthetic streams run fast.
SMALL = {"hidden": 64, "features": 32, "lr": 0.01, "generator_hidden": 32, "generator_lr": 0.01}
NO_REPLAY = Replay(torch.zeros(0, DIM), torch.zeros(0, dtype=torch.int64))


def build(seed: int = 0, **params) -> MyGO:
    learner = create("mygo", input_dim=DIM, num_classes=CLASSES, seed=seed,
                     params={**SMALL, **params})
    assert isinstance(learner, MyGO)
    return learner


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return clusters(num_classes=CLASSES, dim=DIM, per_class=200, seed=1)


def wake(learner, x: torch.Tensor, y: torch.Tensor, task: int, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed + task)
    for xb, yb in task_batches(x, y, task, PER_TASK, 32, gen):
        learner.observe(xb, yb, task=f"t{task}")


def extractor(learner: MyGO) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in learner.core["extractor"].state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    return max(float((before[k] - after[k]).abs().max()) for k in before)


def task_accuracy(learner, x: torch.Tensor, y: torch.Tensor, task: int) -> float:
    """Task-incremental: the task's own classes only (the caller's mask)."""
    mask = torch.arange(CLASSES) // PER_TASK == task
    rows = (y // PER_TASK) == task
    guess = learner.predict(x[rows], mask=mask).argmax(dim=1)
    return float((guess == y[rows]).float().mean())


def class_accuracy(learner, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((learner.predict(x).argmax(dim=1) == y).float().mean())


def test_the_first_task_trains_the_extractor_and_later_wake_keeps_it_frozen(data):
    x, y, _, _ = data
    learner = build()
    initial = extractor(learner)
    wake(learner, x, y, 0)
    assert changed(initial, extractor(learner)) > 1e-3  # original bug 1: random forever
    learner.sleep(NO_REPLAY, budget=200)
    consolidated = extractor(learner)
    wake(learner, x, y, 1)
    assert changed(consolidated, extractor(learner)) == 0.0  # wake: extractor frozen


def test_sleep_changes_the_shared_extractor_with_a_nonzero_distillation(data):
    x, y, _, _ = data
    learner = build()
    wake(learner, x, y, 0)
    learner.sleep(NO_REPLAY, budget=200)
    wake(learner, x, y, 1)
    before = extractor(learner)
    stats = learner.sleep(NO_REPLAY, budget=256)
    assert changed(before, extractor(learner)) > 1e-3  # original bug 2: sleep was a no-op
    assert stats.loss is not None and stats.loss > 0
    assert stats.extra["kd"] > 0  # teacher's task heads -> student's unified head differ
    assert stats.samples == 256 and stats.extra["dreams"] == 256


def test_budget_bounds_the_samples_and_half_are_real_replay_when_given(data):
    x, y, _, _ = data
    learner = build()
    wake(learner, x, y, 0)
    stats = learner.sleep(Replay(x[:50], y[:50]), budget=100)
    assert stats.samples == 100
    assert stats.extra["replayed"] == 50 and stats.extra["dreams"] == 50
    assert learner.sleep(NO_REPLAY, budget=0).samples == 0


def test_dreams_look_like_their_class(data):
    x, y, _, _ = data
    learner = build()
    wake(learner, x, y, 0)
    wake(learner, x, y, 1)
    means = torch.stack([x[y == c].mean(dim=0) for c in range(CLASSES)])
    labels = torch.arange(4).repeat_interleave(50)
    dreams = learner._dream(labels, torch.Generator().manual_seed(0))
    nearest = torch.cdist(dreams, means).argmin(dim=1)
    assert float((nearest == labels).float().mean()) > 0.8


def test_sleep_keeps_old_tasks(data):
    x, y, x_test, y_test = data
    learner = build()
    for task in range(3):
        wake(learner, x, y, task)
        before = [task_accuracy(learner, x_test, y_test, t) for t in range(task + 1)]
        before_class = class_accuracy(learner, x_test[y_test < 2 * task + 2],
                                      y_test[y_test < 2 * task + 2])
        learner.sleep(NO_REPLAY, budget=1000)
        after = [task_accuracy(learner, x_test, y_test, t) for t in range(task + 1)]
        after_class = class_accuracy(learner, x_test[y_test < 2 * task + 2],
                                     y_test[y_test < 2 * task + 2])
        for old, new in zip(before, after, strict=True):
            assert new >= old - 0.05, (task, before, after)
        assert after_class >= before_class - 0.02, (task, before_class, after_class)


def test_class_incremental_beats_finetune_clearly(data):
    x, y, x_test, y_test = data
    scores = {}
    for name in ("mygo", "finetune"):
        params = SMALL if name == "mygo" else {"hidden": 64, "lr": 0.01}
        learner = create(name, input_dim=DIM, num_classes=CLASSES, seed=0, params=params)
        for task in range(3):
            wake(learner, x, y, task)
            learner.sleep(NO_REPLAY, budget=1000)
        scores[name] = class_accuracy(learner, x_test, y_test)
    assert scores["finetune"] < 0.45  # it only knows the last task
    assert scores["mygo"] >= scores["finetune"] + 0.3, scores


def test_classes_never_seen_never_win(data):
    x, y, x_test, _ = data
    learner = build()
    wake(learner, x, y, 0)
    wake(learner, x, y, 1)
    logits = learner.logits(x_test)
    assert (logits[:, 4:] == UNSEEN).all()
    assert (learner.predict(x_test).argmax(dim=1) < 4).all()


def test_a_batch_without_a_task_goes_to_one_default_task(data):
    x, y, _, _ = data
    learner = build()
    learner.observe(x[:16], y[:16])
    learner.observe(x[16:32], y[16:32])
    assert learner.tasks == [""]


@pytest.mark.parametrize("generator", ["vae", "gan"])
def test_state_round_trip_gives_identical_predictions_and_continued_learning(data, generator):
    x, y, _, _ = data
    original = build(generator=generator)
    wake(original, x, y, 0)
    original.sleep(Replay(x[:20], y[:20]), budget=100)
    wake(original, x, y, 1)
    copy = build(seed=7, generator=generator)  # everything must come from the state
    copy.load_state_dict(original.state_dict())
    assert torch.equal(copy.predict(x), original.predict(x))
    for learner in (original, copy):
        learner.sleep(NO_REPLAY, budget=100)
        wake(learner, x, y, 2)
        learner.sleep(Replay(x[:20], y[:20]), budget=100)
    state, copied = original.state_dict(), copy.state_dict()
    assert state.keys() == copied.keys()
    assert all(torch.equal(state[k], copied[k]) for k in state)
    assert torch.equal(copy.predict(x), original.predict(x))


def test_gan_generator_is_seed_deterministic(data):
    x, y, _, _ = data
    first, second, other = build(generator="gan"), build(generator="gan"), build(1, generator="gan")
    for learner in (first, second, other):
        wake(learner, x, y, 0)
        learner.sleep(NO_REPLAY, budget=64)
    assert torch.equal(first.predict(x), second.predict(x))
    assert not torch.equal(first.predict(x), other.predict(x))


def test_load_rejects_foreign_state():
    learner = build()
    with pytest.raises(ValueError):
        learner.load_state_dict({**learner.state_dict(), "net.0.weight": torch.zeros(1)})


def test_default_params_keep_every_task_on_a_stream_of_a_few_batches_a_task():
    """The service's short streams: three batches of 40 a task, a sleep after each task with the
    service's default budget and no real replay (the dreams alone carry the old tasks). The newest
    task must survive its sleep and the older ones stay far above chance (1/6)."""
    x, y, x_test, y_test = clusters(num_classes=CLASSES, dim=DIM, per_class=60, seed=1)
    learner = create("mygo", input_dim=DIM, num_classes=CLASSES, seed=0, params={})
    for task in range(3):
        gen = torch.Generator().manual_seed(task)
        seen = 0
        for xb, yb in task_batches(x, y, task, PER_TASK, 40, gen):
            learner.observe(xb, yb, task=f"t{task}")
            seen += len(yb)
        learner.sleep(NO_REPLAY, budget=sleep_budget({}, seen))
    in_task = [(y_test // PER_TASK) == t for t in range(3)]
    scores = [class_accuracy(learner, x_test[rows], y_test[rows]) for rows in in_task]
    assert scores[-1] >= 0.8, scores
    assert min(scores[:-1]) >= 0.6, scores


def test_a_tasks_generator_warms_up_on_its_first_batches_then_takes_its_steady_steps(data):
    x, y, _, _ = data
    learner = build(generator_warmup=16, generator_steps=3)
    steps = [learner.observe(x[y == 0][i : i + 8], y[y == 0][i : i + 8], task="t0").extra["generator_steps"]
             for i in range(0, 48, 8)]
    assert steps == [16, 8, 4, 3, 3, 3]
    copy = build(seed=3, generator_warmup=16, generator_steps=3)
    copy.load_state_dict(learner.state_dict())  # the count travels with the state
    assert copy.observe(x[y == 1][:8], y[y == 1][:8], task="t0").extra["generator_steps"] == 3
    assert copy.observe(x[y == 2][:8], y[y == 2][:8], task="t1").extra["generator_steps"] == 16
