"""bench.quality: the local path drives learners exactly as the service does, so a stream gives the
same accuracy matrix through the HTTP API; the fair protocol holds what it claims (a validation
split that is never learned, seeds that vary the stream, the gap to joint, accuracy around each
sleep, pairs with Avalanche without the service's buffer and sleep); the report shows it all."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bench import avalanche_env, quality
from bench.data import FASHION_DIR
from bench.scenarios import Scenario, build

pytestmark = pytest.mark.skipif(not FASHION_DIR.exists(), reason="needs the Debian package dataset-fashion-mnist")


def tiny(setting: str = "class", seed: int = 0) -> Scenario:
    """Two tasks of Split Fashion-MNIST, 300 training, 100 validation and 100 test images each."""
    full = build(f"split-fmnist-{setting}", small=True, seed=seed)
    tasks = [replace(t, x_train=t.x_train[:300], y_train=t.y_train[:300], x_test=t.x_test[:100],
                     y_test=t.y_test[:100], x_val=t.x_val[:100], y_val=t.y_val[:100]) for t in full.tasks[:2]]
    return Scenario(full.name, full.setting, tasks)


def rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x}


class Recorder:
    """A brain that records what it is taught and asked, and answers the first label it learned."""

    def __init__(self) -> None:
        self.learned: set[bytes] = set()
        self.asked: set[bytes] = set()
        self.sleeps = 0
        self.first: int | None = None

    def learn(self, task: str, x: np.ndarray, y: np.ndarray) -> None:
        self.learned |= rows(x)
        self.first = int(y[0]) if self.first is None else self.first

    def sleep(self) -> None:
        self.sleeps += 1

    def predict(self, x: np.ndarray, task: str | None, classes=None) -> np.ndarray:
        self.asked |= rows(x)
        return np.full(len(x), self.first)


@pytest.mark.parametrize(("strategy", "setting"), [("plastic", "class"), ("finetune", "task")])
def test_local_and_http_give_the_same_accuracy_matrix(client: TestClient, strategy: str, setting: str) -> None:
    scenario = tiny(setting)
    params = {"hidden": 32} if strategy == "finetune" else {}
    local = quality.LocalBrain(strategy, params, seed=3, replay=50, max_labels=10)
    http = quality.HttpBrain(client, "b", strategy, params, seed=3, replay=50, max_labels=10)
    by_local = quality.run_stream(local, scenario, epochs=1, batch=64, seed=3)
    by_http = quality.run_stream(http, scenario, epochs=1, batch=64, seed=3)
    assert by_local.matrix == by_http.matrix
    assert by_local.val_matrix == by_http.val_matrix and by_local.sleeps == by_http.sleeps
    assert by_local.matrix[0][1] is None and by_local.matrix[1][1] is not None  # tasks seen so far only
    if strategy == "plastic":
        assert min(by_local.matrix[1]) > 0.8  # two tasks of a class-incremental stream, both kept
    replay, replay_bytes, _stored, state_bytes = local.memory()
    assert replay == 50 and replay_bytes == 50 * (784 * 4 + 8) and state_bytes > 0


@pytest.mark.parametrize("name", ["split-fmnist-class", "permuted-fmnist", "split-mnist5k"])
def test_the_validation_split_is_held_out_of_training_and_test(name: str) -> None:
    scenario = build(name, small=True)
    trained = set().union(*(rows(t.x_train) for t in scenario.tasks))
    for task in scenario.tasks:
        assert len(task.y_val) > 0 and set(np.unique(task.y_val)) == set(task.classes)  # stratified
        assert not rows(task.x_val) & trained and not rows(task.x_val) & rows(task.x_test)


def test_the_validation_split_is_never_learned_and_is_evaluated() -> None:
    scenario = build("split-fmnist-class", small=True)
    held_out = set().union(*(rows(t.x_val) for t in scenario.tasks))
    for fit in (quality.run_stream, quality.joint_fit):
        brain = Recorder()
        out = fit(brain, scenario, epochs=2, batch=128, seed=0)
        assert brain.learned == set().union(*(rows(t.x_train) for t in scenario.tasks))
        assert not brain.learned & held_out and held_out <= brain.asked
        assert len(out.val_matrix[-1]) == len(scenario.tasks)


def test_seeds_change_the_order_within_tasks_not_the_data() -> None:
    a, b = build("split-fmnist-class", small=True, seed=0), build("split-fmnist-class", small=True, seed=1)
    for ta, tb in zip(a.tasks, b.tasks):
        assert ta.classes == tb.classes
        assert not np.array_equal(ta.y_train, tb.y_train) or not np.array_equal(ta.x_train, tb.x_train)
        assert rows(ta.x_train) == rows(tb.x_train)  # the same samples, in another order
        assert np.array_equal(ta.x_test, tb.x_test) and np.array_equal(ta.x_val, tb.x_val)


def test_a_class_order_run_permutes_the_classes_and_keeps_each_class_images() -> None:
    plain = build("split-fmnist-class", small=True, seed=0)
    shuffled = build("split-fmnist-class", small=True, seed=1, class_order=True)
    assert shuffled.name == "split-fmnist-class+class-order"
    assert [t.classes for t in shuffled.tasks] != [t.classes for t in plain.tasks]
    assert sorted(c for t in shuffled.tasks for c in t.classes) == list(range(10))

    def images(scenario: Scenario, label: int, split: str) -> set[bytes]:
        return set().union(*(rows(getattr(t, f"x_{split}")[getattr(t, f"y_{split}") == label]) for t in scenario.tasks))

    for split in ("train", "val", "test"):
        assert images(plain, 3, split) == images(shuffled, 3, split)


def test_the_default_brain_is_as_good_streamed_as_fitted_at_once() -> None:
    """Its closed-form readout does not depend on the order of what it saw: gap to joint ~0."""
    scenario = build("split-fmnist-class", small=True)
    args = quality.parse(["--seeds", "0"])
    runs = [quality.one_run(scenario, "plastic", 0, args, None, protocol)
            for protocol in (quality.SERVICE, quality.JOINT_FIT)]
    fit = runs[1]
    assert len(fit.matrix) == 1 and fit.sleeps == [] and fit.via == "local"
    service = next(r for r in quality.summarise(runs) if r["protocol"] == quality.SERVICE)
    gap, _ = service["gap_to_joint"]
    assert abs(gap) < 0.005, gap


def test_the_joint_fit_answers_each_task_among_its_classes_when_the_task_is_given() -> None:
    args = quality.parse(["--seeds", "0"])
    task_run = quality.one_run(tiny("task"), "plastic", 0, args, None, quality.JOINT_FIT)
    class_run = quality.one_run(tiny("class"), "plastic", 0, args, None, quality.JOINT_FIT)
    assert task_run.matrix[0][0] > class_run.matrix[0][0] - 1e-9  # two-way at most as hard as four-way
    assert min(task_run.matrix[0]) > 0.9


def test_the_service_run_records_validation_accuracy_around_each_sleep() -> None:
    args = quality.parse(["--seeds", "0"])
    scenario = tiny()
    for strategy in ("plastic", "finetune"):
        run = quality.one_run(scenario, strategy, 0, args, None)
        assert len(run.sleeps) == len(scenario.tasks)
        for i, (before, after) in enumerate(run.sleeps):
            assert 0 <= before <= 1 and after == pytest.approx(np.mean(run.val_matrix[i][: i + 1]))
        if strategy == "finetune":  # its sleep does nothing: exactly no gain
            assert all(before == after for before, after in run.sleeps)
    row = quality.summarise([run])[0]
    assert row["sleep_gain"] == (0.0, 0.0) and len(row["sleeps"]) == len(scenario.tasks)


def test_a_pair_run_has_no_service_buffer_and_no_service_sleep(monkeypatch) -> None:
    sleeps: list[int] = []  # the service buffer's size at each sleep
    original = quality.LocalBrain.sleep

    def spy(self) -> None:
        sleeps.append(len(self.buffer))
        original(self)

    monkeypatch.setattr(quality.LocalBrain, "sleep", spy)
    args = quality.parse(["--seeds", "0"])
    scenario = tiny()
    replay = quality.one_run(scenario, "replay", 0, args, None, quality.PAIR)
    assert sleeps == [] and replay.sleeps == [] and replay.replay_samples == 0
    assert replay.stored_samples == 500  # its own memory, as Avalanche's mem_size
    mygo = quality.one_run(scenario, "mygo", 0, args, None, quality.PAIR)  # its own sleep, dreams only
    assert sleeps == [0, 0] and len(mygo.sleeps) == 2 and mygo.replay_samples == 0
    service = quality.one_run(scenario, "replay", 0, args, None)
    assert sleeps[2:] == [300, 500] and service.replay_samples == 500  # the buffer fills up
    assert quality.protocols("plastic", args) == [quality.SERVICE, quality.JOINT_FIT]  # no counterpart


def test_avalanche_gets_each_seed_stream_and_our_memory_sizes(tmp_path, monkeypatch) -> None:
    seen = []

    def fake_run(npz, config, python):
        data = np.load(npz)
        seen.append((config, data["y_train_0"].copy(), len(data["x_train_0"])))
        return {"results": [{"strategy": "replay", "seed": config["seeds"][0], "matrix": [[0.9, 0.1], [0.8, 0.7]],
                             "train_seconds": 1.0, "memory_samples": 500}]}

    monkeypatch.setattr(avalanche_env, "ensure_env", lambda path: path)
    monkeypatch.setattr(avalanche_env, "run", fake_run)
    args = quality.parse(["--seeds", "0,1"])
    for seed in (0, 1):
        runs = quality.run_avalanche(tiny(seed=seed), ["replay", "gem", "agem", "plastic"], seed, args, tmp_path)
        assert runs[0].protocol == quality.AVALANCHE and runs[0].matrix == [[0.9, None], [0.8, 0.7]]
    (first, y0, n0), (second, y1, _) = seen
    assert first["seeds"] == [0] and second["seeds"] == [1]
    assert np.array_equal(y0, tiny(seed=0).tasks[0].y_train) and np.array_equal(y1, tiny(seed=1).tasks[0].y_train)
    assert n0 == 300  # the training samples only: the validation split is learned by nobody
    assert first["replay"] == {"mem_size": 500}
    assert first["gem"] == {"patterns_per_exp": 100} and first["agem"] == {"patterns_per_exp": 100, "sample_size": 128}


def fake(strategy: str, protocol: str, accuracy: float, seed: int = 0, seconds: float = 1.0, **extra) -> quality.Run:
    return quality.Run(scenario="s", setting="class", strategy=strategy, seed=seed, epochs=1, via="local",
                       matrix=[[accuracy]], metrics={"average_accuracy": accuracy, "forgetting": 0.0,
                                                     "backward_transfer": 0.0, "forward_transfer": None},
                       seconds=seconds, replay_samples=0, replay_bytes=0, stored_samples=500, state_bytes=0,
                       protocol=protocol, **extra)


def test_the_report_has_the_gap_to_joint_the_sleep_gain_and_the_pairs(tmp_path) -> None:
    args = quality.parse(["--strategies", "plastic,replay", "--seeds", "0", "--out", str(tmp_path)])
    runs = [
        fake("plastic", quality.SERVICE, 0.90, sleeps=[[0.5, 0.6], [0.7, 0.7]], val_matrix=[[0.8]]),
        fake("plastic", quality.JOINT_FIT, 0.91),
        fake("replay", quality.SERVICE, 0.80), fake("replay", quality.JOINT_FIT, 0.85),
        fake("replay", quality.PAIR, 0.78, seconds=2.0),
        fake("avalanche:replay", quality.AVALANCHE, 0.75, seconds=4.0),
        fake("avalanche:naive", quality.AVALANCHE, 0.2),
    ]
    summary = quality.summarise(runs)
    plastic = next(r for r in summary if r["strategy"] == "plastic" and r["protocol"] == quality.SERVICE)
    assert plastic["gap_to_joint"][0] == pytest.approx(-0.01) and plastic["sleep_gain"][0] == pytest.approx(0.05)
    assert plastic["sleeps"] == [[0.5, 0.6], [0.7, 0.7]]
    table = quality.markdown(summary, args)
    assert "| **plastic** | 90.0 ± 0.0 | 80.0 | 0.0 | 0.0 | - | -1.0 | +5.0 |" in table
    assert "| replay | 80.0 ± 0.0 | - | 0.0 | 0.0 | - | -5.0 | - |" in table
    assert "| replay | 78.0 ± 0.0 | 500 | 2.0 | replay | 75.0 ± 0.0 | 500 | +3.0 | 0.50 | 80.0 ± 0.0 |" in table
    assert "| - | - | - | - | naive | 20.0 ± 0.0 |" in table
    assert "hindsight" not in table and "floor" not in table


def test_a_run_writes_the_table_and_plots(tmp_path) -> None:
    args = quality.parse(["--strategies", "plastic,replay", "--seeds", "0,1", "--out", str(tmp_path)])
    runs = [quality.one_run(tiny(seed=seed), strategy, seed, args, None)
            for strategy in ("plastic", "replay") for seed in (0, 1)]
    replay_run = next(r for r in runs if r.strategy == "replay")
    assert replay_run.stored_samples > 0  # the strategy's own memory is counted next to the buffer
    rows_ = quality.summarise(runs)
    plastic = next(r for r in rows_ if r["strategy"] == "plastic")
    assert plastic["seeds"] == 2 and plastic["average_accuracy"][1] is not None
    table = quality.markdown(rows_, args)
    assert "| **plastic** |" in table and "| replay |" in table
    written = quality.plots(runs, tmp_path)
    assert {p.name for p in written} == {"split-fmnist-class-matrix.png", "split-fmnist-class-curves.png"}
    assert all(p.stat().st_size > 5000 for p in written)
    json.dumps([quality.asdict(r) for r in runs])  # the JSON report is plain data


def test_update_replaces_the_rerun_runs_and_keeps_the_others() -> None:
    earlier = [fake("a", quality.SERVICE, 0.1), fake("b", quality.SERVICE, 0.2), fake("b", quality.SERVICE, 0.3, seed=1),
               fake("b", quality.PAIR, 0.4, seed=1)]
    merged = quality.replace_runs(earlier, [fake("b", quality.SERVICE, 0.9, seed=1), fake("c", quality.SERVICE, 0.5)])
    assert [(r.strategy, r.seed, r.protocol, r.matrix[0][0]) for r in merged] == [
        ("a", 0, "service", 0.1), ("b", 0, "service", 0.2), ("b", 1, "service", 0.9), ("b", 1, "pair", 0.4),
        ("c", 0, "service", 0.5)]


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
