"""bench.quality: the local path drives learners exactly as the service does, so a stream gives the
same accuracy matrix through the HTTP API; the metrics and the report hold what they claim."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bench import quality
from bench.data import FASHION_DIR
from bench.scenarios import Scenario, build

pytestmark = pytest.mark.skipif(not FASHION_DIR.exists(), reason="needs the Debian package dataset-fashion-mnist")


def tiny(setting: str = "class") -> Scenario:
    """Two tasks of Split Fashion-MNIST, 300 training and 100 test images each."""
    full = build(f"split-fmnist-{setting}", small=True)
    tasks = [type(t)(t.name, t.classes, t.x_train[:300], t.y_train[:300], t.x_test[:100], t.y_test[:100])
             for t in full.tasks[:2]]
    return Scenario(full.name, full.setting, tasks)


@pytest.mark.parametrize(("strategy", "setting"), [("plastic", "class"), ("finetune", "task")])
def test_local_and_http_give_the_same_accuracy_matrix(client: TestClient, strategy: str, setting: str) -> None:
    scenario = tiny(setting)
    params = {"hidden": 32} if strategy == "finetune" else {}
    local = quality.LocalBrain(strategy, params, seed=3, replay=50, max_labels=10)
    http = quality.HttpBrain(client, "b", strategy, params, seed=3, replay=50, max_labels=10)
    local_matrix, _ = quality.run_stream(local, scenario, epochs=1, batch=64, seed=3)
    http_matrix, _ = quality.run_stream(http, scenario, epochs=1, batch=64, seed=3)
    assert local_matrix == http_matrix
    assert local_matrix[0][1] is None and local_matrix[1][1] is not None  # tasks seen so far only
    if strategy == "plastic":
        assert min(local_matrix[1]) > 0.8  # two tasks of a class-incremental stream, both kept
    replay, replay_bytes, _stored, state_bytes = local.memory()
    assert replay == 50 and replay_bytes == 50 * (784 * 4 + 8) and state_bytes > 0


def test_a_run_reports_metrics_memory_and_writes_the_table_and_plots(tmp_path) -> None:
    args = quality.parse(["--strategies", "plastic,replay", "--seeds", "0,1", "--out", str(tmp_path)])
    runs = [quality.one_run(tiny(), strategy, seed, args, None) for strategy in ("plastic", "replay") for seed in (0, 1)]
    replay_run = next(r for r in runs if r.strategy == "replay")
    assert replay_run.stored_samples > 0  # the strategy's own memory is counted next to the buffer
    rows = quality.summarise(runs)
    plastic = next(r for r in rows if r["strategy"] == "plastic")
    assert plastic["seeds"] == 2 and plastic["average_accuracy"][1] is not None
    table = quality.markdown(rows, args)
    assert "| **plastic** |" in table and "| replay |" in table
    written = quality.plots(runs, tmp_path)
    assert {p.name for p in written} == {"split-fmnist-class-matrix.png", "split-fmnist-class-curves.png"}
    assert all(p.stat().st_size > 5000 for p in written)
    json.dumps([quality.asdict(r) for r in runs])  # the JSON report is plain data


def test_update_replaces_the_rerun_runs_and_keeps_the_others() -> None:
    def run(strategy: str, seed: int, accuracy: float) -> quality.Run:
        return quality.Run(scenario="s", setting="class", strategy=strategy, seed=seed, epochs=1, via="local",
                           matrix=[[accuracy]], metrics={"average_accuracy": accuracy}, seconds=1.0,
                           replay_samples=0, replay_bytes=0, stored_samples=0, state_bytes=0)

    earlier = [run("a", 0, 0.1), run("b", 0, 0.2), run("b", 1, 0.3)]
    merged = quality.replace_runs(earlier, [run("b", 1, 0.9), run("c", 0, 0.5)])
    assert [(r.strategy, r.seed, r.matrix[0][0]) for r in merged] == [("a", 0, 0.1), ("b", 0, 0.2), ("b", 1, 0.9), ("c", 0, 0.5)]


def test_permuted_tasks_share_labels_and_are_evaluated_ahead() -> None:
    scenario = build("permuted-fmnist", small=True)
    assert scenario.setting == "domain" and len(scenario.tasks) == 5
    first, second = scenario.tasks[0], scenario.tasks[1]
    assert set(np.unique(first.y_train)) == set(range(10)) == set(np.unique(second.y_train))
    assert not np.array_equal(first.x_test.sum(axis=0), second.x_test.sum(axis=0))  # permuted pixels
    assert scenario.chance() == [0.1] * 5


def test_from_json_redraws_an_earlier_run_with_its_own_settings(tmp_path) -> None:
    run = quality.Run(scenario="split-fmnist-class", setting="class", strategy="plastic", seed=0, epochs=5,
                      via="local", matrix=[[0.99, None], [0.95, 0.9]],
                      metrics={"average_accuracy": 0.925, "forgetting": 0.04, "backward_transfer": -0.04,
                               "forward_transfer": None},
                      seconds=1.0, replay_samples=500, replay_bytes=1, stored_samples=0, state_bytes=1)
    saved = tmp_path / "quality.json"
    saved.write_text(json.dumps({"args": ["--epochs", "5", "--replay", "200"], "runs": [quality.asdict(run)]}))
    assert quality.main(["--from-json", str(saved), "--out", str(tmp_path)]) == 0
    table = (tmp_path / "quality.md").read_text()
    assert "### split-fmnist-class (5 passes, batch 128, replay 200)" in table
    assert "| **plastic** | 92.5" in table
