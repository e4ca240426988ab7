"""What separates our replay from Avalanche's in a pair: the memory's composition while a task trains.

    python -m bench.replay_buffer                          # as in docs/bench/replay-buffer.md
    python -m bench.replay_buffer --seeds 0,1,2 --scenario split-mnist5k

Both sides mix each batch with an equally sized batch drawn from a memory of ``memory_size``
samples; they differ in what the memory holds. Ours (``models.experience_replay``) offers every
observed sample to a reservoir at once, so while task t trains, a growing part of the memory (up to
1/t of it) is task t itself. Avalanche's ``Replay`` fills its buffer at the end of each experience,
from the whole experience's data, and shares it equally between experiences: while a task trains,
the memory holds past tasks only.

This runs ``bench.quality``'s pair protocol for strategy ``replay`` with Avalanche's counterpart,
then once more with our replay given an Avalanche-like memory (:class:`PastTasksMemory`): the task
in progress goes to a reservoir of its own, which joins the rehearsed memory at the task's end,
the rehearsed memory keeping an equal share of each finished task. While a task trains this
variant stores up to twice ``memory_size`` samples (the rehearsed memory and the task's
reservoir), the price a stream service would pay for it: it is a measurement, not a strategy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from bench import quality
from models.experience_replay import ExperienceReplay
from models.sample_memory import SampleMemory


class PastTasksMemory:
    """Avalanche's buffer, fed online: ``current`` collects the task in progress (a reservoir),
    ``finished`` holds an equal share of each finished task, and only ``finished`` is rehearsed."""

    def __init__(self, capacity: int, input_dim: int, seed: int) -> None:
        self.capacity, self.input_dim, self.seed = capacity, input_dim, seed
        self.tasks = 0
        self.current = self._reservoir()
        self.finished: list[tuple[torch.Tensor, torch.Tensor]] = []  # (x, y) per finished task
        self.generator = torch.Generator().manual_seed(seed)

    def _reservoir(self) -> SampleMemory:
        return SampleMemory(capacity=self.capacity, input_dim=self.input_dim, seed=self.seed + self.tasks)

    def end_task(self) -> None:
        self.finished.append((self.current.x.clone(), self.current.y.clone()))
        self.tasks += 1
        share = self.capacity // len(self.finished)
        # a reservoir's slots are exchangeable: its first ``share`` slots are a uniform subset
        self.finished = [(x[:share], y[:share]) for x, y in self.finished]
        self.current = self._reservoir()

    def rehearsed(self) -> int:
        return sum(len(y) for _, y in self.finished)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([x for x, _ in self.finished])
        y = torch.cat([y for _, y in self.finished])
        index = torch.randperm(len(y), generator=self.generator)[:n]
        return x[index], y[index]


@contextmanager
def past_tasks_replay():
    """Our replay strategy with :class:`PastTasksMemory` instead of its reservoir, while inside."""
    saved = {name: getattr(ExperienceReplay, name) for name in ("training_batch", "remember", "end_task")}

    def memory(self: ExperienceReplay) -> PastTasksMemory:
        if not hasattr(self, "past_tasks"):
            self.past_tasks = PastTasksMemory(self.memory.capacity, self.memory.x.shape[1], self.seed)
        return self.past_tasks

    def training_batch(self, x, y):
        if memory(self).rehearsed() == 0:
            return x, y
        old_x, old_y = memory(self).sample(len(y))
        return torch.cat([x, old_x]), torch.cat([y, old_y])

    ExperienceReplay.training_batch = training_batch
    ExperienceReplay.remember = lambda self, x, y: memory(self).current.add(x, y)
    ExperienceReplay.end_task = lambda self: memory(self).end_task()
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(ExperienceReplay, name, method)


def accuracies(out: Path, protocol: str) -> list[float]:
    runs = json.loads((out / "quality.json").read_text())["runs"]
    return [100 * r["metrics"]["average_accuracy"] for r in runs if r["protocol"] == protocol]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="split-fmnist-class")
    p.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    args = p.parse_args(argv)
    common = ["--scenarios", args.scenario, "--strategies", "replay", "--seeds", args.seeds,
              "--protocols", "pair", "--threads", "1"]
    with tempfile.TemporaryDirectory(prefix="pb-replay-buffer-") as work:
        quality.main([*common, "--avalanche", "--out", f"{work}/reservoir"])
        with past_tasks_replay():
            quality.main([*common, "--out", f"{work}/past-tasks"])
        rows = [("ours, reservoir (as shipped)", accuracies(Path(work, "reservoir"), quality.PAIR)),
                ("ours, past tasks only (Avalanche's buffer)", accuracies(Path(work, "past-tasks"), quality.PAIR)),
                ("Avalanche Replay", accuracies(Path(work, "reservoir"), quality.AVALANCHE))]
    print(f"\n{args.scenario}, pair protocol, seeds {args.seeds}\n")
    print("| replay memory | accuracy % (mean ± sd) | per seed |\n|---|---|---|")
    for name, values in rows:
        print(f"| {name} | {statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} | "
              f"{', '.join(f'{v:.1f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
