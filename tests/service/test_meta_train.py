"""``POST /v1/brains/{name}/meta-train``: a meta-trainable brain ("anml") meta-learns on a
background set that never enters its labels, tasks or sample log, publishes a version of kind
"meta", and goes on learning; other strategies and bad background sets are refused with a reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import upgrade
from service.jobs import CeleryJobs
from service.tables import Brain
from tests.conftest import make_settings
from tests.service.test_api import clusters, make_brain, post, predict

ANML = {"hidden": 64, "nm_hidden": 32, "meta_lr": 0.003}
BACKGROUND = [f"bg{i}" for i in range(6)]


def background(n: int = 120, labels: list | None = None, seed: int = 5) -> list[dict]:
    xs, ys = clusters(n, labels or BACKGROUND, seed=seed)
    return [{"x": x.tolist(), "label": y} for x, y in zip(xs, ys)]


def meta_train(client: TestClient, name: str = "m", **body):
    body = {"samples": background(), "steps": 30, "inner_steps": 3, **body}
    return client.post(f"/v1/brains/{name}/meta-train", params={"wait": True}, json=body)


def nm_weights(client: TestClient, name: str, version: int) -> torch.Tensor:
    rt = client.app.state.runtime
    with rt.db.session() as s:
        brain = s.query(Brain).filter_by(name=name).one()
        s.expunge(brain)
    return rt.versions.load(brain, version).state_dict()["nm.0.weight"]


def meta_sets(client: TestClient, name: str) -> list[str]:
    """The background sets stored for the brain (blobs)."""
    rt = client.app.state.runtime
    with rt.db.session() as s:
        brain_id = s.query(Brain).filter_by(name=name).one().id
    return rt.blobs.keys(f"{brain_id}/meta/")


def test_meta_training_publishes_a_meta_version_and_the_brain_still_learns(client: TestClient) -> None:
    make_brain(client, "m", strategy="anml", params=ANML)
    r = meta_train(client)
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["state"] == "succeeded", out
    assert out["result"]["version"] == 2 and out["result"]["classes"] == 6
    assert out["result"]["samples"] == 120 and out["result"]["steps"] == 30

    job = client.get(f"/v1/jobs/{out['job']}").json()
    assert job["kind"] == "meta_train" and job["progress"] == 1.0
    versions = client.get("/v1/brains/m/versions").json()["versions"]
    assert [v["kind"] for v in versions] == ["init", "meta"]
    stats = versions[-1]["stats"]
    assert stats["gate_mean_after"] != pytest.approx(stats["gate_mean_before"], abs=1e-4)
    assert not torch.equal(nm_weights(client, "m", 1), nm_weights(client, "m", 2))  # the gate learned

    # the background set left no trace in the brain's data: no labels, tasks, samples or file
    brain = client.get("/v1/brains/m").json()
    assert brain["labels"] == [] and brain["samples_learned"] == 0 and brain["samples_pending"] == 0
    assert client.get("/v1/brains/m/tasks").json()["tasks"] == []
    assert meta_sets(client, "m") == []

    # normal learning goes on from the meta version, with the gate fixed
    xs, ys = clusters(40, ["a", "b"], seed=1)
    r = post(client, "m", "t1", xs, ys)
    assert r.json()["state"] == "succeeded" and r.json()["version"] == 3
    assert client.get("/v1/brains/m").json()["labels"] == ["a", "b"]
    assert torch.equal(nm_weights(client, "m", 2), nm_weights(client, "m", 3))
    answers = predict(client, "m", xs)["predictions"]
    assert sum(p["label"] == y for p, y in zip(answers, ys)) / len(ys) > 0.8


@pytest.fixture
def db_blobs_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "var", blobs="database")
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        yield c


def test_the_background_set_goes_through_the_blob_store(db_blobs_client: TestClient, monkeypatch) -> None:
    """With database blobs the set is a blob that the job reads and deletes; nothing touches the disk."""
    from service.blobs import DatabaseBlobs

    client = db_blobs_client
    make_brain(client, "m", strategy="anml", params=ANML)
    stored: list[str] = []
    real = DatabaseBlobs.put
    monkeypatch.setattr(DatabaseBlobs, "put", lambda self, key, data, **kw: (stored.append(key), real(self, key, data, **kw))[1])
    out = meta_train(client).json()
    assert out["state"] == "succeeded" and out["result"]["version"] == 2
    assert [k.split("/")[1] for k in stored] == ["meta", "v000002", "v000002", "v000002"]
    assert meta_sets(client, "m") == []  # deleted by the job
    assert not client.app.state.runtime.settings.checkpoint_dir.exists()
    assert not torch.equal(nm_weights(client, "m", 1), nm_weights(client, "m", 2))


def test_a_strategy_that_cannot_meta_train_is_refused(client: TestClient) -> None:
    make_brain(client, "f", strategy="finetune", params={"hidden": 16})
    r = meta_train(client, "f")
    assert r.status_code == 422
    assert "cannot be meta-trained" in r.json()["detail"] and "anml" in r.json()["detail"]
    assert [v["kind"] for v in client.get("/v1/brains/f/versions").json()["versions"]] == ["init"]


def test_a_single_class_background_is_refused(client: TestClient) -> None:
    make_brain(client, "m", strategy="anml", params=ANML)
    r = meta_train(client, samples=background(20, ["only"]))
    assert r.status_code == 422 and "two distinct labels" in r.json()["detail"]
    r = meta_train(client, samples=background(20, [3, "3"]))  # "3" and 3 are two labels
    assert r.status_code == 202 and r.json()["state"] == "succeeded"


def test_bad_background_samples_are_refused_without_leaving_a_file(client: TestClient) -> None:
    make_brain(client, "m", strategy="anml", params=ANML)
    samples = background(10)
    samples[3]["x"] = samples[3]["x"][:-1]
    r = meta_train(client, samples=samples)
    assert r.status_code == 422 and "samples[3]" in r.json()["detail"]
    assert meta_sets(client, "m") == []
    assert meta_train(client, samples=background(10), steps=0).status_code == 422
    assert meta_train(client, "nobody").status_code == 404


@pytest.fixture
def small_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "var", max_meta_samples=50)
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        yield c


def test_too_many_background_samples_are_refused(small_client: TestClient) -> None:
    make_brain(small_client, "m", strategy="anml", params=ANML)
    r = meta_train(small_client, samples=background(51))
    assert r.status_code == 422 and "limit is 50" in r.json()["detail"]
    assert meta_train(small_client, samples=background(50)).json()["state"] == "succeeded"


def test_celery_sends_meta_training_to_the_sleep_queue() -> None:
    sent = []

    class App:
        def send_task(self, name: str, args: list, queue: str, ignore_result: bool) -> None:
            assert ignore_result  # a job's outcome is its row, not a Celery result
            sent.append(queue)

    jobs = CeleryJobs.__new__(CeleryJobs)
    jobs.app = App()
    for kind in ("meta_train", "sleep", "wake"):
        jobs.dispatch("id", kind)
    assert sent == ["sleep", "sleep", "wake"]
