"""The forgetting that a learner with perfect hindsight still shows in a class-incremental stream.

Forgetting (Chaudhry et al.) is a task's best accuracy since it was learned minus its accuracy at
the end. In a class-incremental scenario the question changes between the two. Right after Split
Fashion-MNIST's first task, a T-shirt only has to be told from a trouser, the only other class
there is. At the end it must be told from nine classes, shirts and pullovers among them. Accuracy
on task 1 then drops even for a learner that lost no knowledge.

This module measures that part alone. The benchmark's MLP (784-400-400-10, Adam 1e-3, batch 128)
is trained jointly on the whole stream, for ``epochs`` shuffled passes. Five passes is Avalanche's
Joint, the figure the 88% target was set from. Row ``i`` of its accuracy matrix answers among the
classes of tasks ``0..i`` only, as any learner at that point must. The model already knows, at
every row, everything it ever will. So the forgetting of this matrix is only the questions growing
harder, and it is a floor for any learner that answers every row as well as this model does.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from bench.scenarios import Scenario
from models.network import build_mlp
from models.optim import adam


def joint_mlp(scenario: Scenario, *, epochs: int, batch: int, seed: int) -> tuple[nn.Module, float]:
    """The MLP trained on every task at once; returns it and the training seconds."""
    x = torch.from_numpy(np.concatenate([t.x_train for t in scenario.tasks]))
    y = torch.from_numpy(np.concatenate([t.y_train for t in scenario.tasks])).long()
    classes = 1 + max(c for t in scenario.tasks for c in t.classes)
    net = build_mlp(x.shape[1], 400, classes, seed)
    optimizer = adam(net.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        for index in torch.randperm(len(y), generator=order).split(batch):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x[index]), y[index]).backward()
            optimizer.step()
    return net, time.perf_counter() - started


@torch.no_grad()
def seen_class_matrix(net: nn.Module, scenario: Scenario) -> list[list[float | None]]:
    """``R[i][j]``: accuracy on task ``j``'s test images (``j <= i``) answering among the classes of
    tasks ``0..i`` only."""
    logits = [net(torch.from_numpy(t.x_test)) for t in scenario.tasks]
    matrix: list[list[float | None]] = []
    seen: list[int] = []
    for i, task in enumerate(scenario.tasks):
        seen += task.classes
        row: list[float | None] = []
        for j, other in enumerate(scenario.tasks):
            if j > i:
                row.append(None)
                continue
            predicted = torch.tensor(seen)[logits[j][:, seen].argmax(dim=1)]
            row.append(float((predicted.numpy() == other.y_test).mean()))
        matrix.append(row)
    return matrix
