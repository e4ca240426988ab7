"""What the default brain's front end is chosen from: its variants on held-out images.

Each variant of the ``plastic`` brain (default params but ``layers``) learns ``--train`` Fashion-MNIST
training images in one pass (batches of 128), sleeps once over 500 of them (the service's replay
buffer size, so the ridge is chosen as the service chooses it), and is scored on ``--validation``
other training images it never saw; the test split is not used. The same is done with every
image's pixels shuffled by one fixed permutation, which a flat vector without spatial layout is
like. ``python -m bench.eyes`` prints a Markdown table (docs/bench/eyes.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.data import fashion_mnist
from models.learner import Replay
from models.registry import create

VARIANTS = {
    "conv, activation power (the default)": [{"type": "conv", "activation": "power"}],
    "conv, activation relu (before)": [{"type": "conv", "activation": "relu"}],
    "one sparse layer, 2,048 units, k 256": [{"type": "sparse"}],
}
BATCH, REPLAY = 128, 500


def score(layers: list[dict], x: np.ndarray, y: np.ndarray, held: tuple[np.ndarray, np.ndarray],
          seed: int) -> tuple[float, float, float]:
    """Validation accuracy (%), the ridge the sleep chose, and the seconds it took."""
    started = time.perf_counter()
    # writable copies: torch does not take read-only arrays
    x, y, held = np.array(x), np.array(y), (np.array(held[0]), np.array(held[1]))
    brain = create("plastic", input_dim=784, num_classes=10, seed=seed, params={"layers": layers},
                   input_shape=[784])
    for lo in range(0, len(y), BATCH):
        brain.observe(torch.from_numpy(x[lo:lo + BATCH]), torch.from_numpy(y[lo:lo + BATCH]))
    replay = np.random.default_rng(seed).choice(len(y), size=min(REPLAY, len(y)), replace=False)
    stats = brain.sleep(Replay(torch.from_numpy(x[replay]), torch.from_numpy(y[replay])), budget=REPLAY)
    predicted = brain.predict(torch.from_numpy(held[0])).argmax(dim=1).numpy()
    return 100 * float((predicted == held[1]).mean()), float(stats.extra["ridge"]), time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eyes", description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--validation", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x, y = fashion_mnist("train")
    order = np.random.default_rng(args.seed).permutation(len(y))
    held, train = order[:args.validation], order[args.validation:args.validation + args.train]
    shuffle = np.random.default_rng(args.seed + 1).permutation(784)
    print(f"| front end ({args.train:,} images learned, {args.validation:,} held out) | pixels as an image "
          f"| pixels shuffled | ridge chosen (image, shuffled) | seconds |")
    print("|---|---|---|---|---|")
    for name, layers in VARIANTS.items():
        image = score(layers, x[train], y[train], (x[held], y[held]), args.seed)
        shuffled = score(layers, x[train][:, shuffle], y[train], (x[held][:, shuffle], y[held]), args.seed)
        print(f"| {name} | {image[0]:.1f} | {shuffled[0]:.1f} | {image[1]:.3g}, {shuffled[1]:.3g} "
              f"| {image[2] + shuffled[2]:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
