"""How much the default brain's accuracy depends on its readout's ridge penalty, by stream length.

The plastic brain's closed-form readout is ``(A + ridge·I)⁻¹ B`` with a fixed ``ridge`` (0.01).
This sweep learns ``n`` Fashion-MNIST training images (flat 784-vectors, one pass in batches of
100, default params otherwise) for each ridge and reports accuracy on a validation set of
training images the brain never saw (never the test split: this measures what a sleep could
choose from held-out data, issue 15). ``python -m bench.ridge`` prints a Markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.data import fashion_mnist
from models.registry import create

RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def sweep(sizes: list[int], ridges: tuple[float, ...] = RIDGES, *, validation: int = 2000,
          seed: int = 0) -> dict[int, dict[float, float]]:
    """Validation accuracy (%) per stream length and ridge."""
    x, y = fashion_mnist("train")
    order = np.random.default_rng(seed).permutation(len(x))
    held_out = order[:validation]
    xv, yv = torch.from_numpy(x[held_out]), torch.from_numpy(y[held_out])
    out: dict[int, dict[float, float]] = {}
    for n in sizes:
        train = order[validation:validation + n]
        xs, ys = torch.from_numpy(x[train]), torch.from_numpy(y[train])
        out[n] = {}
        for ridge in ridges:
            brain = create("plastic", input_dim=784, num_classes=10, seed=seed, params={"ridge": ridge})
            for start in range(0, n, 100):
                brain.observe(xs[start:start + 100], ys[start:start + 100], "t")
            out[n][ridge] = round(100 * float((brain.predict(xv).argmax(1) == yv).float().mean()), 1)
    return out


def markdown(result: dict[int, dict[float, float]]) -> str:
    ridges = list(next(iter(result.values())))
    lines = ["| samples learned | " + " | ".join(f"ridge {r:g}" for r in ridges) + " |",
             "|---|" + "---|" * len(ridges)]
    for n, row in result.items():
        best = max(row.values())
        cells = [f"**{a}**" if a == best else f"{a}" for a in row.values()]
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ridge", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,1000,5000", help="stream lengths, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(markdown(sweep([int(n) for n in args.sizes.split(",")], seed=args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
