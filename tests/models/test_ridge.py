"""models.ridge: exact leave-one-out predictions of a ridge readout, and the penalty they choose."""

from __future__ import annotations

import torch

from models import ridge


def problem(n: int = 40, hidden: int = 12, classes: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randn(n, hidden, generator=gen, dtype=torch.float64)
    labels = torch.randint(classes, (n,), generator=gen)
    codes[torch.arange(n), labels] += 2.0  # a signal the readout can find
    targets = torch.nn.functional.one_hot(labels, classes).double()
    return codes, labels, targets, codes.T @ codes, codes.T @ targets


def test_leave_one_out_scores_equal_a_refit_without_the_sample() -> None:
    codes, _, targets, stat_a, stat_b = problem()
    penalties = (0.01, 1.0, 30.0)
    fast = ridge.leave_one_out(stat_a, stat_b, codes, targets, penalties)
    for penalty, scores in zip(penalties, fast):
        for i in (0, 7, 39):
            keep = torch.arange(len(codes)) != i
            a, b = codes[keep].T @ codes[keep], codes[keep].T @ targets[keep]
            w = torch.linalg.solve(a + penalty * torch.eye(a.shape[0], dtype=a.dtype), b)
            torch.testing.assert_close(scores[i], codes[i] @ w, rtol=1e-9, atol=1e-9)


def test_the_choice_is_the_penalty_whose_held_out_predictions_are_most_often_right() -> None:
    codes, labels, targets, stat_a, stat_b = problem(n=30, hidden=40)  # more units than samples
    allowed = torch.ones(3, dtype=torch.bool)
    choice = ridge.choose(stat_a, stat_b, codes, labels, allowed)
    accuracy = {}
    for penalty, scores in zip(ridge.GRID, ridge.leave_one_out(stat_a, stat_b, codes, targets, ridge.GRID)):
        accuracy[penalty] = float((scores.argmax(dim=1) == labels).double().mean())
    assert choice.accuracy == max(accuracy.values()) and accuracy[choice.ridge] == choice.accuracy
    assert choice.accuracy > min(accuracy.values())  # the grid's ends differ: the choice matters
    # a class outside ``allowed`` is never predicted
    only = torch.tensor([True, True, False])
    narrowed = ridge.choose(stat_a, stat_b, codes, labels, only)
    assert narrowed.accuracy <= (labels != 2).double().mean().item()


def test_the_penalty_in_use_is_kept_unless_another_is_clearly_better() -> None:
    codes, labels, targets, stat_a, stat_b = problem(n=60, hidden=40)
    allowed = torch.ones(3, dtype=torch.bool)
    free = ridge.choose(stat_a, stat_b, codes, labels, allowed)
    accuracy = {p: float((s.argmax(dim=1) == labels).double().mean())
                for p, s in zip(ridge.GRID, ridge.leave_one_out(stat_a, stat_b, codes, targets, ridge.GRID))}
    # a neighbour of the best that is a sample or two behind it stays in use
    close = min((p for p in ridge.GRID if p != free.ridge and free.accuracy - accuracy[p] <= 2 / 60),
                key=lambda p: abs(p - free.ridge))
    assert ridge.choose(stat_a, stat_b, codes, labels, allowed, current=close).ridge == close
    # with more units than samples, a penalty far from the best is clearly worse: it is replaced
    codes, labels, targets, stat_a, stat_b = problem(n=60, hidden=200)
    free = ridge.choose(stat_a, stat_b, codes, labels, allowed)
    worse = ridge.leave_one_out(stat_a, stat_b, codes, targets, (1.0,))[0]
    assert float((worse.argmax(dim=1) == labels).double().mean()) < free.accuracy - 0.2
    assert ridge.choose(stat_a, stat_b, codes, labels, allowed, current=1.0).ridge == free.ridge
