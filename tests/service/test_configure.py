"""PATCH /v1/brains/{name}: changing params after creation keeps what the brain learned."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.service.test_api import SMALL, clusters, make_brain, post, predict

LABELS = ["cat", "dog", "owl"]


def accuracy(client: TestClient, name: str, xs, ys) -> float:
    labels = [p["label"] for p in predict(client, name, xs)["predictions"]]
    return sum(a == b for a, b in zip(labels, ys)) / len(ys)


def versions(client: TestClient, name: str) -> list[dict]:
    return client.get(f"/v1/brains/{name}/versions").json()["versions"]


MEMORY = {**SMALL, "memory_capacity": 400}  # a changed readout is rebuilt from the episodic memory


def learned_brain(client: TestClient, name: str = "p", params: dict = MEMORY) -> tuple:
    make_brain(client, name, params=params)
    xs, ys = clusters(90, LABELS, seed=1)
    assert post(client, name, "t1", xs, ys).status_code == 202
    assert client.post(f"/v1/brains/{name}/sleep", params={"wait": True}).status_code == 202
    test_x, test_y = clusters(30, LABELS, seed=2)
    return test_x, test_y


def test_adding_a_layer_publishes_a_version_that_still_knows_every_label(client: TestClient) -> None:
    xs, ys = learned_brain(client)
    before = accuracy(client, "p", xs, ys)
    two = SMALL["layers"] + [{"hidden": 128, "k": 8}]
    r = client.patch("/v1/brains/p", json={"params": {"layers": two}})
    assert r.status_code == 200, r.text
    assert [layer["hidden"] for layer in r.json()["params"]["layers"]] == [256, 128]
    latest = versions(client, "p")[-1]
    assert latest["kind"] == "reconfigure" and latest["current"] and latest["stats"]["changed"] == ["layers"]
    assert accuracy(client, "p", xs, ys) >= before - 0.05

    # Learning goes on with the new architecture, and the old version still loads (rollback).
    more_x, more_y = clusters(30, ["eel"], seed=3)
    assert post(client, "p", "t2", more_x, more_y).status_code == 202
    assert accuracy(client, "p", more_x, more_y) > 0.9
    old = next(v["number"] for v in versions(client, "p") if v["kind"] == "sleep")
    assert client.post(f"/v1/brains/p/versions/{old}/promote").status_code == 200
    assert accuracy(client, "p", xs, ys) == before


def test_panic_mode_is_switched_through_params(client: TestClient) -> None:
    xs, ys = learned_brain(client)
    normal = accuracy(client, "p", xs, ys)
    assert client.patch("/v1/brains/p", json={"params": {"mode": "panic"}}).json()["params"]["mode"] == "panic"
    shifted_x, shifted_y = clusters(60, LABELS, seed=4)
    assert post(client, "p", "storm", -shifted_x, shifted_y).status_code == 202
    assert accuracy(client, "p", -xs, ys) > 0.8
    assert client.patch("/v1/brains/p", json={"params": {"mode": "plastic"}}).status_code == 200
    assert accuracy(client, "p", xs, ys) >= normal - 0.05


def test_unchanged_params_publish_nothing_and_the_sleep_policy_can_change(client: TestClient) -> None:
    learned_brain(client)
    count = len(versions(client, "p"))
    r = client.patch("/v1/brains/p", json={"params": {"layers": SMALL["layers"]},
                                           "sleep_policy": {"every_samples": 500}})
    assert r.status_code == 200 and r.json()["sleep_policy"]["every_samples"] == 500
    assert len(versions(client, "p")) == count


def test_bad_changes_are_refused_with_a_reason(client: TestClient) -> None:
    learned_brain(client)
    r = client.patch("/v1/brains/p", json={"params": {"layers": SMALL["layers"] * 2}})
    assert r.status_code == 200  # it has a memory to rebuild from
    learned_brain(client, "nomem", params=SMALL)
    r = client.patch("/v1/brains/nomem", json={"params": {"layers": SMALL["layers"] * 2}})
    assert r.status_code == 422 and "keeps none (memory_capacity 0)" in r.json()["detail"]
    r = client.patch("/v1/brains/p", json={"params": {"layers": SMALL["layers"] * 9}})
    assert r.status_code == 422 and "layers" in r.json()["detail"]
    r = client.patch("/v1/brains/p", json={"params": {"colour": 1}})
    assert r.status_code == 422 and "unknown parameter 'colour'" in r.json()["detail"]
    make_brain(client, "f", strategy="finetune", params={"hidden": 16})
    r = client.patch("/v1/brains/f", json={"params": {"hidden": 32}})
    assert r.status_code == 422 and "cannot change its params" in r.json()["detail"]
    assert client.get("/v1/brains/f").json()["params"]["hidden"] == 16
    assert client.patch("/v1/brains/nobody", json={"params": {}}).status_code == 404
    assert client.patch("/v1/brains/p", json={"parameters": {}}).status_code == 422
