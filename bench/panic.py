"""Panic mode on a temporary shift: colour-inverted Fashion-MNIST, plastic vs panic.

    python -m bench.panic                                   # the default closed-form readout
    python -m bench.panic --readout delta --memory 5000     # Plasticish's triarchic core

A plastic brain (one sparse layer of 1,024 units, k = 128) learns 6,000 training images and
sleeps; then, once in each mode, it learns 2,000 colour-inverted images (1 - x) in batches of 64,
predicting each batch before learning it, and switches back to plastic mode. Printed: accuracy on
the inverted test images (the 2,000 first), on the normal ones before the storm, right after
switching back, after 10 more normal batches and after a sleep. Recorded figures (seed 0):
docs/bench/panic.md.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.data import fashion_mnist
from models.learner import Replay
from models.plastic import Plastic


def accuracy(learner: Plastic, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((learner.predict(x).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readout", choices=("closed_form", "delta"), default="closed_form")
    p.add_argument("--memory", type=int, default=0, help="episodic memory slots")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    xtr, ytr = fashion_mnist("train")
    xte, yte = fashion_mnist("test")
    idx = np.random.default_rng(args.seed).permutation(len(ytr))
    x, y = torch.from_numpy(xtr[idx[:6000]]), torch.from_numpy(ytr[idx[:6000]])
    storm_x, storm_y = 1 - torch.from_numpy(xtr[idx[6000:8000]]), torch.from_numpy(ytr[idx[6000:8000]])
    calm_x, calm_y = torch.from_numpy(xtr[idx[8000:8640]]), torch.from_numpy(ytr[idx[8000:8640]])
    test_x, test_y = torch.from_numpy(xte[:2000]), torch.from_numpy(yte[:2000])
    params = {"layers": [{"hidden": 1024, "k": 128}], "readout": args.readout, "memory_capacity": args.memory}
    brain = Plastic(input_dim=784, num_classes=10, seed=args.seed, **params)
    for lo in range(0, len(y), 64):
        brain.observe(x[lo: lo + 64], y[lo: lo + 64])
    brain.sleep(Replay(x[:500], y[:500]), 500)
    print(f"normal test images before the storm: {accuracy(brain, test_x, test_y):.3f}")
    for mode in ("plastic", "panic"):
        learner = brain.reconfigure({**params, "mode": mode})
        for lo in range(0, len(storm_y), 64):
            learner.observe(storm_x[lo: lo + 64], storm_y[lo: lo + 64])
        inverted = accuracy(learner, 1 - test_x, test_y)
        learner = learner.reconfigure({**params, "mode": "plastic"})
        back = accuracy(learner, test_x, test_y)
        for lo in range(0, len(calm_y), 64):
            learner.observe(calm_x[lo: lo + 64], calm_y[lo: lo + 64])
        later = accuracy(learner, test_x, test_y)
        learner.sleep(Replay(x[:500], y[:500]), 500)
        print(f"{mode:7s}: inverted {inverted:.3f} | normal on return {back:.3f}, after 10 batches "
              f"{later:.3f}, after a sleep {accuracy(learner, test_x, test_y):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
