"""Continual-learning metrics on hand-computed accuracy matrices."""

from __future__ import annotations

import pytest

from models.metrics import cl_metrics

R = [
    [0.9, 0.1, 0.2],
    [0.7, 0.8, 0.3],
    [0.6, 0.7, 0.9],
]


def test_standard_three_task_matrix():
    m = cl_metrics(R, [0, 1, 2], chance=[0.5, 0.5, 0.5])
    assert m["accuracy_per_task"] == [0.6, 0.7, 0.9]
    assert m["average_accuracy"] == pytest.approx((0.6 + 0.7 + 0.9) / 3)
    assert m["backward_transfer_per_task"][:2] == pytest.approx([-0.3, -0.1])
    assert m["backward_transfer_per_task"][2] is None
    assert m["backward_transfer"] == pytest.approx(-0.2)
    assert m["forward_transfer_per_task"][0] is None
    assert m["forward_transfer_per_task"][1:] == pytest.approx([0.1 - 0.5, 0.3 - 0.5])
    assert m["forward_transfer"] == pytest.approx(-0.3)
    assert m["forgetting_per_task"][:2] == pytest.approx([0.3, 0.1])
    assert m["forgetting"] == pytest.approx(0.2)


def test_forgetting_uses_the_best_earlier_accuracy_and_is_floored_at_zero():
    matrix = [
        [0.5, 0.0],
        [0.9, 0.6],  # task 0 improved after it was learned ...
        [0.7, 0.8],  # ... then dropped from its best, 0.9; task 1 got better
    ]
    m = cl_metrics(matrix, [0, 1])
    assert m["forgetting_per_task"][0] == pytest.approx(0.2)
    assert m["backward_transfer_per_task"][0] == pytest.approx(0.2)
    m = cl_metrics([[0.5], [0.9]], [0])
    assert m["forgetting"] is None  # the only task is the last one

    improved = cl_metrics([[0.5, 0.1], [0.9, 0.8]], [0, 1])
    assert improved["forgetting"] == 0.0
    assert improved["backward_transfer"] == pytest.approx(0.4)


def test_chance_defaults_to_zero():
    assert cl_metrics(R, [0, 1, 2])["forward_transfer"] == pytest.approx((0.1 + 0.3) / 2)


def test_missing_evaluations_and_unknown_learning_rows():
    matrix = [
        [0.9],  # only task 0 existed
        [None, 0.8],  # task 0 not evaluated here
        [0.6, None],  # task 1 not evaluated here
    ]
    m = cl_metrics(matrix, [0, 1])
    assert m["accuracy_per_task"] == [0.6, 0.8]  # latest evaluated
    assert m["backward_transfer_per_task"][0] == pytest.approx(-0.3)
    assert m["forgetting_per_task"][0] == pytest.approx(0.3)
    assert m["forward_transfer"] is None  # task 1 was not evaluated before it was learned

    unknown = cl_metrics(R, [None, 1, None])
    assert unknown["backward_transfer_per_task"] == [None, pytest.approx(-0.1), None]
    assert unknown["forward_transfer_per_task"] == [None, pytest.approx(0.1), None]


def test_nothing_to_compute():
    m = cl_metrics([], [])
    assert m["average_accuracy"] is None and m["backward_transfer"] is None
    assert m["forward_transfer"] is None and m["forgetting"] is None


def test_inconsistent_arguments_are_rejected():
    with pytest.raises(ValueError):
        cl_metrics(R, [0, 1, 3])
    with pytest.raises(ValueError):
        cl_metrics(R, [0, 1, 2], chance=[0.5])
