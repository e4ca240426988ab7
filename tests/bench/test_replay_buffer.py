"""bench.replay_buffer's Avalanche-like memory: past tasks only, equal shares, and nothing left
patched after the measurement."""

import torch

from bench.replay_buffer import PastTasksMemory, past_tasks_replay
from models.experience_replay import ExperienceReplay


def test_the_memory_rehearses_only_finished_tasks_in_equal_shares():
    memory = PastTasksMemory(capacity=60, input_dim=3, seed=0)
    for task in range(3):
        for _ in range(5):
            memory.current.add(torch.full((40, 3), float(task)), torch.full((40,), task))
        if task:
            _, y = memory.sample(1000)
            assert set(y.tolist()) == set(range(task))  # the task in progress is never rehearsed
        memory.end_task()
        shares = [len(y) for _, y in memory.finished]
        assert shares == [60 // (task + 1)] * (task + 1)
        assert all((x == i).all() and (y == i).all() for i, (x, y) in enumerate(memory.finished))


def test_our_replay_uses_it_inside_the_context_only():
    original = ExperienceReplay.training_batch
    x, y = torch.randn(8, 4), torch.tensor([0, 1] * 4)
    with past_tasks_replay():
        learner = ExperienceReplay(input_dim=4, num_classes=4, memory_size=10)
        learner.observe(x, y, task="a")
        assert len(learner.memory) == 0 and len(learner.past_tasks.current) == 8
        assert learner.training_batch(x, y)[0].shape[0] == 8  # nothing finished yet: nothing mixed in
        learner.observe(x, y + 2, task="b")
        assert learner.past_tasks.rehearsed() == 8
        bx, by = learner.training_batch(x, y + 2)
        assert bx.shape[0] == 16 and set(by[8:].tolist()) <= {0, 1}
    assert ExperienceReplay.training_batch is original
    plain = ExperienceReplay(input_dim=4, num_classes=4, memory_size=10)
    plain.observe(x, y, task="a")
    assert len(plain.memory) == 8
