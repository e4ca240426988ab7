"""The replay buffer over both storage backends: policy applied, sampling, snapshot and restore."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.replay import MemoryStore, RedisStore, ReplayBuffer


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield MemoryStore()
        return
    redis_url = request.getfixturevalue("redis_url")
    import redis

    client = redis.Redis.from_url(redis_url)
    s = RedisStore(client, brain_id=424242, dim=3)
    s.clear()
    yield s
    s.clear()
    client.close()


def data(n: int, classes: int = 2, start: int = 0) -> tuple[np.ndarray, list[int]]:
    x = np.arange(start * 3, (start + n) * 3, dtype=np.float32).reshape(n, 3)
    return x, [(start + i) % classes for i in range(n)]


def test_fills_then_keeps_capacity(store) -> None:
    buf = ReplayBuffer(store, capacity=10, policy="reservoir", seed=0)
    x, y = data(6)
    buf.add(x, y)
    assert len(buf) == 6
    got = buf.sample()
    assert sorted(got.x[:, 0].tolist()) == sorted(x[:, 0].tolist())  # stored exactly, float32
    buf.add(*data(100, start=6))
    assert len(buf) == 10 and store.seen() == 106
    # the stored rows are rows that were offered, with their own labels
    snap = buf.snapshot()
    for row, label in zip(snap["x"], snap["y"]):
        i = int(row[0].item()) // 3
        assert label.item() == i % 2 and torch.equal(row, torch.tensor([3 * i, 3 * i + 1, 3 * i + 2], dtype=torch.float32))


def test_reservoir_is_a_uniform_sample(store) -> None:
    buf = ReplayBuffer(store, capacity=50, policy="reservoir", seed=1)
    for start in range(0, 1000, 100):
        buf.add(*data(100, start=start))
    idx = (buf.snapshot()["x"][:, 0] // 3).numpy()
    assert idx.mean() == pytest.approx(500, abs=120)  # not just the last batch


def test_class_balanced_keeps_old_classes(store) -> None:
    buf = ReplayBuffer(store, capacity=20, policy="class_balanced", seed=0)
    buf.add(np.ones((100, 3), np.float32), [0] * 50 + [1] * 50)
    buf.add(np.ones((100, 3), np.float32), [2] * 100)
    counts = np.bincount(buf.snapshot()["y"].numpy(), minlength=3)
    assert counts.sum() == 20 and counts.min() >= 5


def test_deterministic_and_sample_size(store) -> None:
    buf = ReplayBuffer(store, capacity=10, policy="reservoir", seed=3)
    buf.add(*data(40))
    first = buf.snapshot()
    other = ReplayBuffer(MemoryStore(), capacity=10, policy="reservoir", seed=3)
    other.add(*data(40))
    assert torch.equal(first["x"], other.snapshot()["x"])
    assert len(buf.sample(4)) == 4 and len(buf.sample(100)) == 10
    assert torch.equal(buf.sample(4, seed=9).x, buf.sample(4, seed=9).x)


def test_snapshot_restore_round_trip(store) -> None:
    buf = ReplayBuffer(store, capacity=8, policy="reservoir", seed=0)
    buf.add(*data(30))
    snap = buf.snapshot()
    store.clear()
    assert len(buf) == 0
    buf.restore(snap)
    again = buf.snapshot()
    assert torch.equal(snap["x"], again["x"]) and torch.equal(snap["y"], again["y"])
    assert int(again["seen"]) == 30


@pytest.mark.parametrize("policy", ["reservoir", "class_balanced"])
def test_offering_batches_at_once_leaves_what_adding_them_in_turn_leaves(policy) -> None:
    """A sharded wake's merge offers its samples with ``add_batches`` (issue 17), reading only the
    inputs that end up stored: the buffer must be the one that ``add`` per batch leaves."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(700, 4)).astype(np.float32)
    y = [int(v) for v in rng.integers(0, 5, 700)]
    cuts = [0, 40, 168, 170, 298, 426, 554, 700]  # batches of uneven sizes, as a log's tasks make them
    one, many = (ReplayBuffer(MemoryStore(), capacity=50, policy=policy, seed=3, width=4) for _ in range(2))
    for buffer in (one, many):  # something there already
        buffer.add(x[:30] + 1, y[:30])
    for a, b in zip(cuts, cuts[1:]):
        one.add(x[a:b], y[a:b])
    fetched: list[int] = []

    def fetch(keys: list[tuple[int, int]]) -> np.ndarray:
        rows = [cuts[b] + i for b, i in keys]
        fetched.extend(rows)
        return x[rows]

    many.add_batches([y[a:b] for a, b in zip(cuts, cuts[1:])], fetch)
    a, b = one.snapshot(), many.snapshot()
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"]) and int(a["seen"]) == int(b["seen"]) == 730
    assert len(fetched) <= 50  # only what is stored was read
