"""The ``brain`` client commands against a real HTTP server (uvicorn in a thread), and the demo."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from brain_cli.main import app as brain
from brain_client import Client
from brain_client.demo import load_tasks, run_demo
from brain_client.fashion import FASHION_DIR
from tests.service.test_api import DIM, SMALL, clusters

runner = CliRunner()


@pytest.fixture
def server(live_server: str) -> str:
    return live_server


def run(*args: str, url: str) -> str:
    result = runner.invoke(brain, [*args, "--url", url])
    assert result.exit_code == 0, result.output
    return result.stdout  # progress bars go to stderr


def test_brains_learn_predict_sleep_job_from_the_command_line(server: str, tmp_path: Path) -> None:
    import json

    run("brains", "create", "b", "--shape", str(DIM), "--params", json.dumps(SMALL), url=server)
    x, y = clusters(60, ["cat", "dog"], seed=0)
    csv = tmp_path / "train.csv"
    header = ",".join([f"f{i}" for i in range(DIM)] + ["label"])
    csv.write_text(header + "\n" + "\n".join(",".join([*map(str, row), label]) for row, label in zip(x, y)) + "\n")
    learned = run("learn", "b", str(csv), "--task", "t1", "--chunk", "25", url=server)
    assert "60 samples accepted, 0 duplicates, learned into version" in learned
    again = run("learn", "b", str(csv), "--task", "t1", url=server)  # the same file: new ids, learned again
    assert "60 samples accepted" in again

    npz = tmp_path / "test.npz"
    tx, ty = clusters(10, ["cat", "dog"], seed=1)
    np.savez(npz, x=tx, y=np.array(ty))
    predicted = run("predict", "b", str(npz), "--json", url=server)
    labels = [p["label"] for p in json.loads(predicted)["predictions"]]
    assert labels == ty
    one = run("predict", "b", "--x", ",".join(map(str, tx[0])), url=server)
    assert ty[0] in one

    slept = run("sleep", "b", "--wait", url=server)
    assert "slept: version" in slept
    listed = run("brains", "list", url=server)
    assert "b" in listed and "plastic" in listed and "120" in listed  # 120 samples learned

    with Client(server) as client:
        last = client.brain("b").versions().versions[0]
        sleep_job = client.brain("b").sleep()
    followed = run("job", sleep_job.job, "--wait", url=server)
    assert json.loads(followed)["state"] == "succeeded" and last.number >= 1

    run("brains", "delete", "b", "--yes", url=server)
    assert "b " not in run("brains", "list", url=server)


def test_errors_are_one_line_and_exit_1(server: str, tmp_path: Path) -> None:
    missing = runner.invoke(brain, ["sleep", "nope", "--url", server])
    assert missing.exit_code == 1 and "404" in missing.output and "nope" in missing.output
    bad = tmp_path / "bad.txt"
    bad.write_text("1,2")
    wrong = runner.invoke(brain, ["learn", "x", str(bad), "--task", "t", "--url", server])
    assert wrong.exit_code == 1 and "expected a .csv or .npz" in wrong.output
    down = runner.invoke(brain, ["brains", "list", "--url", "http://127.0.0.1:9"])
    assert down.exit_code == 1 and "cannot reach the service" in down.output


@pytest.mark.skipif(not FASHION_DIR.exists(), reason="Fashion-MNIST (Debian dataset-fashion-mnist) not installed")
def test_demo_shows_the_fine_tune_brain_forgetting_and_ours_not(server: str) -> None:
    tasks = load_tasks(train_per_task=1200, test_per_task=100, seed=0)
    seen: list[str] = []
    with Client(server, timeout=httpx.Timeout(120.0)) as client:
        ours, fine = run_demo(client, tasks=tasks, prefix="t", on_update=lambda brains, status: seen.append(status))
        metrics = client.brain("t-plastic").metrics()
    assert [len(r) for r in ours.rows] == [1, 2, 3, 4, 5] and [len(r) for r in fine.rows] == [1, 2, 3, 4, 5]
    # measured (seed 0): ours 90% on average, forgetting 4 points; fine-tune 21%, forgetting 47 points
    assert fine.forgetting() > 0.3
    assert ours.forgetting() < 0.1
    assert ours.average() > fine.average() + 0.4
    assert metrics.tasks == [t.name for t in tasks] and len(metrics.accuracy_matrix) >= 5
    assert seen[-1] == "after task 5/5"


@pytest.mark.skipif(not FASHION_DIR.exists(), reason="Fashion-MNIST (Debian dataset-fashion-mnist) not installed")
def test_demo_command_prints_the_table_and_summary(server: str) -> None:
    out = run("demo", "--train-per-task", "100", "--test-per-task", "40", "--no-sleep", "--prefix", "cli", url=server)
    assert "fine-tune" in out and "task 5" in out and "ours keeps" in out and "/ui" in out


def test_brain_bench_hands_its_arguments_to_the_benchmark() -> None:
    helped = runner.invoke(brain, ["bench", "serve", "--help"])
    assert helped.exit_code == 0 and "usage: python -m bench.serve" in helped.output and "--quick" in helped.output
    wrong = runner.invoke(brain, ["bench", "soak", "--no-such-option"])
    assert wrong.exit_code == 2 and "unrecognized arguments: --no-such-option" in wrong.output
    unknown = runner.invoke(brain, ["bench", "nope"])
    assert unknown.exit_code == 2 and "no benchmark 'nope'" in unknown.output
