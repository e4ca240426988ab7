"""Every endpoint of the v1 contract on the embedded default, good input and bad."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

SMALL = {"layers": [{"hidden": 256, "k": 16}]}
DIM = 8


def clusters(n: int, labels: list, seed: int, dim: int = DIM) -> tuple[np.ndarray, list]:
    """Well separated Gaussian clusters, one per label, in a fixed direction per label."""
    rng = np.random.default_rng(seed)
    centres = {str(label): np.random.default_rng(zlib.crc32(str(label).encode())).normal(size=dim) * 3
               for label in labels}
    ys = [labels[i % len(labels)] for i in range(n)]
    xs = np.stack([centres[str(y)] + rng.normal(scale=0.3, size=dim) for y in ys])
    return xs, ys


def make_brain(client: TestClient, name: str = "b", **extra) -> dict:
    body = {"name": name, "input": {"kind": "vector", "shape": [DIM]}, "params": SMALL, **extra}
    r = client.post("/v1/brains", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def post(client: TestClient, name: str, task: str, xs, ys, ids=None, wait=True):
    samples = [{"x": x.tolist(), "label": y} for x, y in zip(xs, ys)]
    for s, i in zip(samples, ids or []):
        s["id"] = i
    return client.post(f"/v1/brains/{name}/samples", params={"wait": wait}, json={"task": task, "samples": samples})


def answers(predicted: dict) -> dict:
    """A predict answer without its prediction ids (new for every request)."""
    return {**predicted, "predictions": [{k: v for k, v in p.items() if k != "id"} for p in predicted["predictions"]]}


def predict(client: TestClient, name: str, xs, task=None) -> dict:
    body = {"inputs": [{"x": x.tolist()} for x in xs]}
    if task:
        body["task"] = task
    r = client.post(f"/v1/brains/{name}/predict", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_create_get_list_delete(client: TestClient) -> None:
    created = make_brain(client, "alpha")
    assert created["strategy"] == "plastic" and created["current_version"] == 1
    assert created["params"]["layers"][0]["hidden"] == 256  # defaults filled, given values kept
    assert client.get("/v1/brains/alpha").json()["name"] == "alpha"
    make_brain(client, "beta")
    assert [b["name"] for b in client.get("/v1/brains").json()["brains"]] == ["alpha", "beta"]
    assert client.delete("/v1/brains/alpha").status_code == 204
    assert client.get("/v1/brains/alpha").status_code == 404
    assert [b["name"] for b in client.get("/v1/brains").json()["brains"]] == ["beta"]


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"input": {"kind": "vector", "shape": [4]}}, 422, "name"),
        ({"name": "bad name!", "input": {"kind": "vector", "shape": [4]}}, 422, "pattern"),
        ({"name": "x", "input": {"kind": "audio", "shape": [4]}}, 422, "kind"),
        ({"name": "x", "input": {"kind": "image", "shape": [2, 28, 28]}}, 422, "C 1 or 3"),
        ({"name": "x", "input": {"kind": "text", "shape": [3]}}, 422, "shape is [1]"),
        ({"name": "x", "input": {"kind": "text", "shape": [1]}, "encoder": "flatten"}, 422, "does not take text"),
        ({"name": "x", "input": {"kind": "vector", "shape": [0]}}, 422, "greater than or equal"),
        ({"name": "x", "input": {"kind": "vector"}}, 422, "a vector brain needs a shape"),
        ({"name": "x", "input": {"kind": "image", "shape": []}}, 422, "an image brain needs a shape"),
        ({"name": "x", "input": {"kind": "vector", "shape": [100000, 100000]}}, 422, "limit"),
        ({"name": "x", "input": {"kind": "vector", "shape": [4]}, "strategy": "nope"}, 422, "unknown strategy"),
        ({"name": "x", "input": {"kind": "vector", "shape": [4]}, "params": {"bogus": 1}}, 422, "bogus"),
        ({"name": "x", "input": {"kind": "vector", "shape": [4]}, "params": {"layers": [{"k": -3}]}}, 422, "layers.0.sparse.k"),
        ({"name": "x", "input": {"kind": "vector", "shape": [4]}, "encoder": "resnet"}, 422, "encoder"),
        ({"name": "x", "input": {"kind": "vector", "shape": [4]}, "sleep_policy": {"every_samples": 0}}, 422, "every_samples"),
    ],
)
def test_create_rejects_bad_input(client: TestClient, body: dict, status: int, reason: str) -> None:
    r = client.post("/v1/brains", json=body)
    assert r.status_code == status
    assert reason in str(r.json()["detail"])


@pytest.mark.parametrize("spec", [{"kind": "text"}, {"kind": "text", "shape": []}, {"kind": "text", "shape": [1]}])
def test_a_text_brain_needs_no_shape(client: TestClient, spec: dict) -> None:
    r = client.post("/v1/brains", json={"name": "words", "input": spec})
    assert r.status_code == 201, r.text
    assert r.json()["input"] == {"kind": "text", "shape": [1]}


def test_duplicate_name_conflicts(client: TestClient) -> None:
    make_brain(client, "dup")
    r = client.post("/v1/brains", json={"name": "dup", "input": {"kind": "vector", "shape": [DIM]}})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]


def test_learn_predict_and_labels_come_back_as_given(client: TestClient) -> None:
    make_brain(client)
    xs, ys = clusters(60, ["cat", "dog"], seed=1)
    r = post(client, "b", "animals", xs, ys)
    assert r.status_code == 202
    assert r.json()["accepted"] == 60 and r.json()["state"] == "succeeded" and r.json()["version"] == 2
    xs2, ys2 = clusters(60, [3, 7], seed=2)
    assert post(client, "b", "digits", xs2, ys2).json()["version"] == 3
    tx, ty = clusters(40, ["cat", "dog", 3, 7], seed=3)
    out = predict(client, "b", tx)
    assert out["version"] == 3
    got = [p["label"] for p in out["predictions"]]
    assert np.mean([g == y for g, y in zip(got, ty)]) > 0.9
    assert {type(g) for g in got} == {str, int}  # integers stay integers
    assert all(0.0 <= p["confidence"] <= 1.0 for p in out["predictions"])


def test_task_restricts_labels(client: TestClient) -> None:
    make_brain(client)
    xs, ys = clusters(40, ["a", "b"], seed=1)
    post(client, "b", "t1", xs, ys)
    xs2, ys2 = clusters(40, ["c", "d"], seed=2)
    post(client, "b", "t2", xs2, ys2)
    # inputs of task 2, restricted to task 1's labels, can only answer task 1's labels
    labels = {p["label"] for p in predict(client, "b", xs2[:10], task="t1")["predictions"]}
    assert labels <= {"a", "b"}
    assert client.post("/v1/brains/b/predict", json={"inputs": [{"x": xs[0].tolist()}], "task": "zzz"}).status_code == 404


def test_duplicate_sample_ids_are_not_learned_twice(client: TestClient) -> None:
    make_brain(client)
    xs, ys = clusters(10, ["a", "b"], seed=1)
    ids = [f"s{i}" for i in range(10)]
    assert post(client, "b", "t", xs, ys, ids).json()["accepted"] == 10
    again = post(client, "b", "t", xs, ys, ids).json()
    assert again == {"accepted": 0, "duplicates": 10, "job": None, "version": None, "state": None}
    # a batch repeating an id inside itself keeps the first
    r = post(client, "b", "t", xs[:2], ys[:2], ["new", "new"]).json()
    assert r["accepted"] == 1 and r["duplicates"] == 1
    assert client.get("/v1/brains/b").json()["samples_learned"] == 11
    assert client.get("/v1/brains/b/tasks").json()["tasks"][0]["samples"] == 11


@pytest.mark.parametrize(
    ("samples", "reason"),
    [
        ([], "empty"),
        ([{"x": [1.0] * (DIM - 1), "label": "a"}], "expected shape"),
        ([{"x": [1.0] * DIM + [2.0], "label": "a"}], "expected shape"),
        ([{"x": [[1.0, 2.0], [3.0]], "label": "a"}], "ragged"),
        ([{"x": ["a"] * DIM, "label": "a"}], "non-numeric"),
        ([{"x": [1e39] + [1.0] * (DIM - 1), "label": "a"}], "fit in float32"),
        ([{"x": [1.0] * DIM}], "label"),
        ([{"x": [1.0] * DIM, "label": "a", "image": "Zm9v"}], "exactly one"),
        ([{"x": [1.0] * DIM, "label": ""}], "label"),
        ([{"image": "Zm9v", "label": "a"}], "takes 'x'"),
    ],
)
def test_samples_reject_bad_input(client: TestClient, samples: list, reason: str) -> None:
    make_brain(client)
    r = client.post("/v1/brains/b/samples", json={"task": "t", "samples": samples})
    assert r.status_code == 422, r.text
    assert reason in str(r.json()["detail"])
    assert client.get("/v1/brains/b").json()["samples_pending"] == 0  # nothing half-written


def b64(values) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def test_x_b64_is_the_same_input_as_x(client: TestClient) -> None:
    make_brain(client)
    xs, ys = clusters(60, ["a", "b"], seed=1)
    samples = [{"x_b64": b64(x), "label": y} for x, y in zip(xs, ys)]
    assert client.post("/v1/brains/b/samples", params={"wait": True},
                       json={"task": "t", "samples": samples}).status_code == 202
    tx, _ = clusters(10, ["a", "b"], seed=2)
    as_list = predict(client, "b", tx)
    as_b64 = client.post("/v1/brains/b/predict", json={"inputs": [{"x_b64": b64(x)} for x in tx]}).json()
    assert answers(as_b64) == answers(as_list)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b64([1.0] * (DIM - 1)), "float32 values take"),
        (b64([1.0] * (DIM + 1)), "float32 values take"),
        ("not base64!", "not valid base64"),
        (b64([float("nan")] + [1.0] * (DIM - 1)), "finite"),
        ("A" * 10_000, "longer than"),
    ],
)
def test_bad_x_b64_is_refused_with_a_reason(client: TestClient, value: str, reason: str) -> None:
    make_brain(client)
    r = client.post("/v1/brains/b/samples", json={"task": "t", "samples": [{"x_b64": value, "label": "a"}]})
    assert r.status_code == 422 and reason in r.json()["detail"]
    r = client.post("/v1/brains/b/predict", json={"inputs": [{"x_b64": value, "x": [1.0] * DIM}]})
    assert r.status_code == 422 and "exactly one" in str(r.json()["detail"])


def test_nan_and_infinity_rejected(client: TestClient) -> None:
    make_brain(client)
    for bad in ("NaN", "Infinity", "-Infinity"):
        body = '{"task": "t", "samples": [{"x": [%s, 1, 1, 1, 1, 1, 1, 1], "label": "a"}]}' % bad
        r = client.post("/v1/brains/b/samples", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "finite" in r.json()["detail"]
        r = client.post("/v1/brains/b/predict", content=body.replace('"task": "t", "samples"', '"inputs"'),
                        headers={"content-type": "application/json"})
        assert r.status_code == 422


def test_oversized_batch_and_body(client: TestClient, settings) -> None:
    make_brain(client)
    n = settings.max_batch + 1
    r = client.post("/v1/brains/b/samples", json={"task": "t", "samples": [{"x": [0.0] * DIM, "label": 1}] * n})
    assert r.status_code == 422 and "limit" in r.json()["detail"]
    huge = b'{"task": "t", "samples": [' + b" " * (settings.max_body_bytes + 1) + b"]}"
    r = client.post("/v1/brains/b/samples", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds" in r.json()["detail"]


def test_too_many_labels(client: TestClient, settings) -> None:
    make_brain(client)
    limit = settings.max_labels
    samples = [{"x": [float(i)] * DIM, "label": f"l{i}"} for i in range(limit + 1)]
    r = client.post("/v1/brains/b/samples", json={"task": "t", "samples": samples})
    assert r.status_code == 422 and "at most" in r.json()["detail"]


def test_a_brain_can_hold_fewer_labels_than_the_service_allows(client: TestClient, settings) -> None:
    brain = make_brain(client, max_labels=3)
    assert brain["max_labels"] == 3
    assert make_brain(client, "default")["max_labels"] == settings.max_labels
    samples = [{"x": [float(i)] * DIM, "label": f"l{i}"} for i in range(4)]
    r = client.post("/v1/brains/b/samples", json={"task": "t", "samples": samples})
    assert r.status_code == 422 and "at most 3" in r.json()["detail"]
    r = client.post("/v1/brains", json={"name": "big", "input": {"kind": "vector", "shape": [DIM]},
                                        "max_labels": settings.max_labels + 1})
    assert r.status_code == 422 and "BRAIN_MAX_LABELS" in r.json()["detail"]


def test_unknown_brain_everywhere(client: TestClient) -> None:
    x = {"x": [0.0] * DIM}
    for method, path, body in [
        ("get", "/v1/brains/ghost", None),
        ("delete", "/v1/brains/ghost", None),
        ("post", "/v1/brains/ghost/samples", {"task": "t", "samples": [{**x, "label": 1}]}),
        ("post", "/v1/brains/ghost/predict", {"inputs": [x]}),
        ("post", "/v1/brains/ghost/evaluate", {"task": "t", "samples": [{**x, "label": 1}]}),
        ("post", "/v1/brains/ghost/sleep", None),
        ("get", "/v1/brains/ghost/tasks", None),
        ("get", "/v1/brains/ghost/versions", None),
        ("post", "/v1/brains/ghost/versions/1/promote", None),
        ("get", "/v1/brains/ghost/metrics", None),
    ]:
        r = client.request(method, path, json=body)
        assert r.status_code == 404, (path, r.text)
        assert "ghost" in r.json()["detail"]
    assert client.get("/v1/jobs/nope").status_code == 404


def test_predict_before_learning_is_a_clear_conflict(client: TestClient) -> None:
    make_brain(client)
    r = client.post("/v1/brains/b/predict", json={"inputs": [{"x": [0.0] * DIM}]})
    assert r.status_code == 409 and "not learned" in r.json()["detail"]
    assert client.post("/v1/brains/b/predict", json={"inputs": []}).status_code == 422


def test_jobs_sleep_versions_promote(client: TestClient) -> None:
    make_brain(client)
    xs, ys = clusters(40, ["a", "b"], seed=1)
    job_id = post(client, "b", "t1", xs, ys).json()["job"]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["kind"] == "wake" and job["brain"] == "b"
    assert job["progress"] == 1.0 and job["result"]["learned"] == 40
    r = client.post("/v1/brains/b/sleep", params={"wait": True})
    assert r.status_code == 202
    sleep = r.json()
    assert sleep["state"] == "succeeded" and sleep["result"]["version"] == 3
    assert sleep["result"]["replayed"] == 40
    versions = client.get("/v1/brains/b/versions").json()
    assert versions["current"] == 3
    assert [v["kind"] for v in versions["versions"]] == ["init", "wake", "sleep"]
    before = predict(client, "b", xs)
    xs2, ys2 = clusters(40, ["c", "d"], seed=2)
    post(client, "b", "t2", xs2, ys2)
    assert predict(client, "b", xs)["version"] == 4
    promoted = client.post("/v1/brains/b/versions/3/promote").json()
    assert promoted["current"] and promoted["promoted"] and promoted["number"] == 3
    rolled_back = predict(client, "b", xs)
    assert answers(rolled_back) == answers(before)  # same version, same answers
    assert client.post("/v1/brains/b/versions/99/promote").status_code == 404
    # rolling back does not make the brain learn task 2's samples again
    assert client.get("/v1/brains/b").json()["samples_pending"] == 0


def test_async_post_then_poll(client: TestClient) -> None:
    make_brain(client)
    xs, ys = clusters(20, ["a", "b"], seed=1)
    r = post(client, "b", "t", xs, ys, wait=False)
    assert r.status_code == 202 and r.json()["version"] is None
    job_id = r.json()["job"]
    import time

    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{job_id}").json()["state"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.get("/v1/brains/b").json()["samples_learned"] == 20


def test_evaluate_and_metrics(client: TestClient) -> None:
    make_brain(client)
    tasks = {"t1": ["a", "b"], "t2": ["c", "d"], "t3": ["e", "f"]}
    held_out = {t: clusters(30, labels, seed=100 + i) for i, (t, labels) in enumerate(tasks.items())}
    for i, (t, labels) in enumerate(tasks.items()):
        xs, ys = clusters(60, labels, seed=i)
        post(client, "b", t, xs, ys)
        client.post("/v1/brains/b/sleep", params={"wait": True})
        for name, (hx, hy) in held_out.items():
            r = client.post("/v1/brains/b/evaluate", json={
                "task": name, "samples": [{"x": x.tolist(), "label": y} for x, y in zip(hx, hy)]})
            assert r.status_code == 200, r.text
    m = client.get("/v1/brains/b/metrics").json()
    assert m["tasks"] == ["t1", "t2", "t3"]
    assert len(m["accuracy_matrix"]) == 3 and all(len(row) == 3 for row in m["accuracy_matrix"])
    r = m["accuracy_matrix"]
    assert r[0][1] == 0.0 and r[0][2] == 0.0  # unseen labels are never predicted
    assert r[2][0] > 0.9 and r[2][1] > 0.9 and r[2][2] > 0.9
    assert m["average_accuracy"] == pytest.approx(np.mean(r[2]))
    assert m["backward_transfer"] == pytest.approx(np.mean([r[2][0] - r[0][0], r[2][1] - r[1][1]]))
    assert m["forgetting"] >= 0.0
    assert m["forward_transfer"] == pytest.approx(0.0)  # class-incremental: nothing before learning
    assert [h["version"] for h in m["history"]] == m["versions"]
    task_mode = client.post("/v1/brains/b/evaluate", json={
        "task": "t1", "mode": "task", "samples": [{"x": x.tolist(), "label": y} for x, y in zip(*held_out["t1"])]})
    assert task_mode.json()["mode"] == "task"
    assert client.get("/v1/brains/b/metrics", params={"mode": "task"}).json()["tasks"] == ["t1", "t2", "t3"]


def test_health_ready_metrics_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    make_brain(client)
    text = client.get("/metrics").text
    assert 'brain_http_requests_total{method="POST",route="/v1/brains",status="201"} 1.0' in text
    spec = client.get("/openapi.json").json()
    for path in ["/v1/brains", "/v1/brains/{name}", "/v1/brains/{name}/samples", "/v1/brains/{name}/predict",
                 "/v1/brains/{name}/evaluate", "/v1/brains/{name}/sleep", "/v1/jobs/{job_id}",
                 "/v1/brains/{name}/tasks", "/v1/brains/{name}/versions",
                 "/v1/brains/{name}/versions/{number}/promote", "/v1/brains/{name}/metrics",
                 "/healthz", "/readyz"]:
        assert path in spec["paths"], path
    assert client.get("/docs").status_code == 200
