"""Every registered strategy can be created over HTTP, learns a stream, sleeps and survives a
restart of the service with identical predictions."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from models import STRATEGIES, param_schema
from service.app import create_app
from tests.models.test_contract import SMALL
from tests.service.test_api import DIM, answers, clusters, post, predict


def params(strategy: str) -> dict:
    """The contract suite's small settings; network strategies take several steps per batch, as
    this stream is only a few batches long."""
    small = dict(SMALL.get(strategy, {}))
    if "epochs_per_batch" in param_schema(strategy)["properties"]:
        small["epochs_per_batch"] = 10
    return small


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_strategy_learns_sleeps_and_survives_restart(settings, strategy: str) -> None:
    probe, probe_y = clusters(20, ["a", "b", "c", "d"], seed=9)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/brains", json={"name": "s", "strategy": strategy, "params": params(strategy),
                                            "input": {"kind": "vector", "shape": [DIM]}})
        assert r.status_code == 201, r.text
        for task, labels, seed in (("t1", ["a", "b"], 1), ("t2", ["c", "d"], 2)):
            for rep in range(3):
                r = post(client, "s", task, *clusters(40, labels, seed=seed * 10 + rep))
                assert r.json()["state"] == "succeeded", r.text
            sleep = client.post("/v1/brains/s/sleep", params={"wait": True}).json()
            assert sleep["state"] == "succeeded", sleep
        before = predict(client, "s", probe)
        task_answers = predict(client, "s", probe[1::4][:5], task="t2")  # inputs of class "b"
        assert {p["label"] for p in task_answers["predictions"]} <= {"c", "d"}
    latest = [(p["label"], y) for p, y in zip(before["predictions"], probe_y) if y in ("c", "d")]
    accuracy = sum(p == y for p, y in latest) / len(latest)
    assert accuracy > 0.8, f"{strategy}: accuracy {accuracy} on the task it learned last"
    with TestClient(create_app(settings)) as client:  # a restarted service
        assert answers(predict(client, "s", probe)) == answers(before)


def test_the_strategies_a_client_can_ask_for_are_listed_with_their_params(settings) -> None:
    with TestClient(create_app(settings)) as client:
        listed = client.get("/v1/strategies").json()["strategies"]
        assert [s["name"] for s in listed] == sorted(STRATEGIES)
        by_name = {s["name"]: s for s in listed}
        assert [s["name"] for s in listed if s["default"]] == ["plastic"]
        assert [s["name"] for s in listed if s["meta_trainable"]] == ["anml"]
        # a sharded wake (issue 17): plastic alone, and it says under which params
        assert [s["name"] for s in listed if s["mergeable"]] == ["plastic"]
        assert "closed_form" in by_name["plastic"]["mergeable_when"]
        assert all(s["mergeable_when"] is None for s in listed if s["name"] != "plastic")
        assert all(s["settings"] == list(STRATEGIES[s["name"]].settings) for s in listed)
        # the schema is the one params are validated against: its default is what a brain gets
        lr = by_name["finetune"]["params"]["properties"]["lr"]
        assert lr["default"] == 1e-3 and lr["exclusiveMinimum"] == 0.0
        r = client.post("/v1/brains", json={"name": "f", "strategy": "finetune", "params": {"lr": 0},
                                            "input": {"kind": "vector", "shape": [DIM]}})
        assert r.status_code == 422 and "lr" in r.text
