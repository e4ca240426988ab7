"""``models.sizing``: a learner built on the meta device has the shapes of a real one and allocates
nothing, and its estimate is never below what a real learner comes to hold as it learns."""

from __future__ import annotations

import resource

import pytest
import torch

from models import STRATEGIES, create
from models.learner import Replay
from models.sizing import learner_bytes, on_meta, tensor_bytes
from tests.models.synthetic import clusters
from tests.models.test_contract import CLASSES, DIM, SMALL

TASKS = 3
#: small memories, so that a few batches fill them
FULL = {"replay": {"memory_size": 30}, "joint": {"max_samples": 60}, "ewc": {"fisher_samples": 20},
        "gem": {"memory_per_task": 10}, "agem": {"memory_per_task": 10}, "packnet": {"store_size": 20},
        "pnn": {"max_columns": TASKS}, "plastic": {"memory_capacity": 30}}


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request) -> str:
    return request.param


def params(strategy: str) -> dict:
    return {**SMALL.get(strategy, {}), **FULL.get(strategy, {})}


def test_a_learner_on_meta_has_the_shapes_of_a_real_one(strategy: str) -> None:
    meta = on_meta(strategy, input_dim=DIM, num_classes=CLASSES, params=params(strategy))
    real = create(strategy, input_dim=DIM, num_classes=CLASSES, params=params(strategy))
    meta_state, real_state = meta.state_dict(), real.state_dict()
    def shapes(state: dict[str, torch.Tensor]) -> dict:
        return {k: (v.shape, v.dtype) for k, v in state.items()}

    assert shapes(meta_state) == shapes(real_state)
    assert tensor_bytes(meta_state.values()) == tensor_bytes(real_state.values())


def test_the_estimate_covers_what_a_learner_holds_after_its_tasks(strategy: str) -> None:
    """Three tasks of two classes, every memory filled and a sleep after each task: the state then
    is at most the meta learner's state and what it says it grows by, besides a few bytes the
    estimate leaves out (task names, Adam's step counters: 0-d tensors)."""
    learner = create(strategy, input_dim=DIM, num_classes=CLASSES, params=params(strategy))
    x, y, _, _ = clusters(num_classes=CLASSES, dim=DIM, per_class=40, seed=0)
    for task in range(TASKS):
        mine = (y // 2) == task
        for start in range(0, int(mine.sum()), 16):
            learner.observe(x[mine][start:start + 16], y[mine][start:start + 16], task=f"t{task}")
        learner.sleep(Replay(x[mine][:20], y[mine][:20]), budget=50)
    meta = on_meta(strategy, input_dim=DIM, num_classes=CLASSES, params=params(strategy))
    held = tensor_bytes(learner.state_dict().values())
    estimate = learner_bytes(meta, tasks=TASKS, batch=0)
    assert held <= estimate + 100 * TASKS
    assert estimate < 8 * held + 200_000  # and not wildly above it


def test_sizing_allocates_nothing() -> None:
    """A learner of 40 GB of weights and memories is sized with the process's peak memory unchanged."""
    on_meta("replay", input_dim=4, num_classes=2)  # the first build's one-off allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    huge = on_meta("replay", input_dim=100_000, num_classes=100, params={"hidden": 8192, "memory_size": 100_000})
    assert learner_bytes(huge, tasks=1, batch=4096) > 40 * 10**9
    assert all(t.device.type == "meta" for t in huge.state_dict().values() if t.numel() > 1)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB
    assert torch.get_default_device().type == "cpu"  # the meta device was only for the build
