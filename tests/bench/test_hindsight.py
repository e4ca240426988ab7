"""bench.hindsight: each row answers among the classes seen so far, so a model that knows
everything from the start still shows the forgetting of a question that grows harder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bench import quality
from bench.data import FASHION_DIR, Task
from bench.hindsight import seen_class_matrix
from bench.scenarios import Scenario, build
from models.metrics import cl_metrics


class Confuses(nn.Module):
    """Reads the true label from input column 0. Class 0 scores 1 on itself and 2 on class 2 (a
    later task's class); every other class scores 1 on itself only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = x[:, 0].long()
        logits = nn.functional.one_hot(label, 4).float()
        logits[label == 0, 2] = 2.0
        return logits


def task(name: str, classes: tuple[int, int]) -> Task:
    y = np.repeat(np.array(classes), 5)
    x = np.zeros((10, 3), dtype=np.float32)
    x[:, 0] = y
    return Task(name, classes, x, y, x, y)


def test_rows_answer_among_the_classes_seen_so_far() -> None:
    scenario = Scenario("toy", "class", [task("t0", (0, 1)), task("t1", (2, 3))])
    matrix = seen_class_matrix(Confuses(), scenario)
    # Row 0 knows classes 0 and 1 only: class 0 cannot be mistaken for class 2 yet.
    assert matrix == [[1.0, None], [0.5, 1.0]]
    assert cl_metrics(matrix, [0, 1])["forgetting"] == 0.5


@pytest.mark.skipif(not FASHION_DIR.exists(), reason="needs the Debian package dataset-fashion-mnist")
def test_the_hindsight_run_of_a_class_incremental_scenario() -> None:
    args = quality.parse(["--hindsight-epochs", "1", "--seeds", "0"])
    run = quality.hindsight_run(build("split-fmnist-class", small=True), 0, args)
    assert run.strategy == "hindsight" and run.stored_samples == 5_000 and run.seconds > 0
    first = [row[0] for row in run.matrix]
    assert first[0] > 0.9 and first[0] > first[-1]  # two-way at first, ten-way at the end
    assert run.metrics["average_accuracy"] > 0.6 and run.metrics["forgetting"] > 0
