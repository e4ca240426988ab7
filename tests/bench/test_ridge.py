"""bench.ridge: the sweep learns and scores on held-out images (needs dataset-fashion-mnist)."""

from __future__ import annotations

import pytest

from bench.data import FASHION_DIR
from bench.ridge import markdown, sweep

pytestmark = pytest.mark.skipif(not FASHION_DIR.exists(), reason="dataset-fashion-mnist is not installed")


def test_a_huge_ridge_is_worse_than_the_default_and_the_table_marks_the_best() -> None:
    result = sweep([300], ridges=(0.01, 1e4), validation=500)
    row = result[300]
    assert 50 < row[0.01] <= 100 and row[1e4] < row[0.01]
    assert f"**{row[0.01]}**" in markdown(result)
