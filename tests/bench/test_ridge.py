"""bench.ridge: the sweep learns and scores on held-out images (needs dataset-fashion-mnist)."""

from __future__ import annotations

import pytest

from bench.data import FASHION_DIR
from bench.ridge import markdown, sweep
from models.ridge import GRID

pytestmark = pytest.mark.skipif(not FASHION_DIR.exists(), reason="dataset-fashion-mnist is not installed")


def test_a_huge_ridge_is_worse_and_the_table_marks_the_best_and_the_sleeps_choice() -> None:
    result = sweep([300], [{"type": "sparse"}], ridges=(0.01, 1e4), validation=500)
    row = result[300]
    assert 50 < row["ridges"][0.01] <= 100 and row["ridges"][1e4] < row["ridges"][0.01]
    chosen, at_chosen = row["sleep"]
    assert chosen in GRID and 50 < at_chosen <= 100
    table = markdown(result)
    assert f"**{row['ridges'][0.01]}**" in table and f"{at_chosen} ({chosen:.2g})" in table
