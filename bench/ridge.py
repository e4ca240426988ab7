"""How much the default brain's accuracy depends on its readout's ridge penalty, and what its sleep
chooses.

For each code (the default front end of a flat 784-vector, which reads it as a 28 x 28 image, and
one sparse layer) and each stream length ``n``, the brain learns ``n`` Fashion-MNIST training images
in one pass (batches of 100); its readout is then solved with every penalty of the sleep's grid
(``models.ridge.GRID``) and scored on 2,000 other training images it never saw (validation, seed
0; the test split is not used). Last, it sleeps over 500 of the images it learned (the service's
replay buffer size), and the penalty the sleep chose by leave-one-out is scored the same way.
``python -m bench.ridge`` prints a Markdown table per code (docs/bench/ridge.md).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.data import fashion_mnist
from models.learner import Replay
from models.registry import create
from models.ridge import GRID

CODES = {"default (conv front end)": None, "one sparse layer": [{"type": "sparse"}]}
REPLAY = 500


def sweep(sizes: list[int], layers: list[dict] | None = None, ridges: tuple[float, ...] = GRID, *,
          validation: int = 2000, seed: int = 0) -> dict[int, dict]:
    """Per stream length: validation accuracy (%) per ridge, the first penalty's, and the sleep's
    choice with its accuracy."""
    x, y = fashion_mnist("train")
    order = np.random.default_rng(seed).permutation(len(x))
    held_out = order[:validation]
    xv, yv = torch.from_numpy(x[held_out]), torch.from_numpy(y[held_out])
    out: dict[int, dict] = {}
    for n in sizes:
        train = order[validation:validation + n]
        xs, ys = torch.from_numpy(x[train]), torch.from_numpy(y[train])
        brain = create("plastic", input_dim=784, num_classes=10, seed=seed, params={"layers": layers})
        for start in range(0, n, 100):
            brain.observe(xs[start:start + 100], ys[start:start + 100])
        first = (float(brain.ridge_value), _accuracy(brain, xv, yv))
        by_ridge = {}
        for ridge in ridges:
            brain.use_ridge(ridge)
            by_ridge[ridge] = _accuracy(brain, xv, yv)
        brain.use_ridge(first[0])  # the sleep starts from the penalty in use, as in the service
        replay = np.random.default_rng(seed).choice(n, size=min(REPLAY, n), replace=False)
        stats = brain.sleep(Replay(xs[replay], ys[replay]), budget=REPLAY)
        out[n] = {"ridges": by_ridge, "first": first, "sleep": (stats.extra["ridge"], _accuracy(brain, xv, yv))}
    return out


def _accuracy(brain, x: torch.Tensor, y: torch.Tensor) -> float:
    return round(100 * float((brain.predict(x).argmax(1) == y).float().mean()), 1)


def markdown(result: dict[int, dict]) -> str:
    ridges = list(next(iter(result.values()))["ridges"])
    lines = ["| samples learned | " + " | ".join(f"{r:.2g}" for r in ridges)
             + " | before the first sleep | the sleep's choice |",
             "|---|" + "---|" * (len(ridges) + 2)]
    for n, row in result.items():
        best = max(row["ridges"].values())
        cells = [f"**{a}**" if a == best else f"{a}" for a in row["ridges"].values()]
        (first, at_first), (chosen, at_chosen) = row["first"], row["sleep"]
        lines.append(f"| {n:,} | " + " | ".join(cells) + f" | {at_first} ({first:.2g}) | {at_chosen} ({chosen:.2g}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ridge", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,1000,5000", help="stream lengths, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sizes = [int(n) for n in args.sizes.split(",")]
    for name, layers in CODES.items():
        print(f"{name}: validation accuracy (%) by ridge penalty\n")
        print(markdown(sweep(sizes, layers, seed=args.seed)) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
