"""Feedback on served predictions: a prediction's id and its true label make a sample, learned like
any other, and a point of the brain's prequential accuracy; inputs are kept for a bounded window."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from service import feedback
from service.app import create_app
from service.db import upgrade
from service.errors import Gone, NotFound
from tests.conftest import make_settings
from tests.service.test_api import clusters, make_brain, post, predict


def served_ids(answer: dict) -> list[str]:
    return [p["id"] for p in answer["predictions"]]


def test_feedback_turns_served_inputs_into_samples_and_counts_prequential_accuracy(client: TestClient) -> None:
    make_brain(client)
    post(client, "b", "t", *clusters(40, ["a", "b"], seed=1))
    xs, ys = clusters(10, ["a", "b"], seed=2)
    answer = predict(client, "b", xs)
    ids = served_ids(answer)
    assert len(set(ids)) == 10
    right = [p["label"] == y for p, y in zip(answer["predictions"], ys)]
    # the truth, with two labels flipped: those predictions were right, the brain is told they were not
    truth = list(ys)
    for i in (0, 1):
        truth[i] = "b" if ys[i] == "a" else "a"
        right[i] = answer["predictions"][i]["label"] == truth[i]
    r = client.post("/v1/brains/b/feedback", params={}, json={
        "feedback": [{"prediction": pid, "label": label} for pid, label in zip(ids, truth)]})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert (accepted["accepted"], accepted["duplicates"]) == (10, 0) and accepted["job"]
    brain = client.get("/v1/brains/b").json()
    learned = 40 + 10
    deadline = time.monotonic() + 30
    while brain["samples_learned"] < learned:  # learned like any other sample
        assert time.monotonic() < deadline
        time.sleep(0.05)
        brain = client.get("/v1/brains/b").json()
    tasks = {t["name"]: t for t in client.get("/v1/brains/b/tasks").json()["tasks"]}
    assert tasks[feedback.FEEDBACK_TASK]["samples"] == 10  # asked without a task: the feedback task

    preq = client.get("/v1/brains/b/metrics").json()["prequential"]
    assert preq["labelled"] == 10 and preq["accuracy"] == pytest.approx(sum(right) / 10)
    assert preq["per_version"] == [{"version": answer["version"], "at": None, "labelled": 10,
                                    "accuracy": pytest.approx(sum(right) / 10)}]
    assert sum(p["labelled"] for p in preq["over_time"]) == 10

    # the same feedback again: nothing learned twice, nothing counted twice
    again = client.post("/v1/brains/b/feedback", json={"feedback": [{"prediction": ids[3], "label": truth[3]}]})
    assert again.status_code == 202 and (again.json()["accepted"], again.json()["duplicates"]) == (0, 1)
    assert client.get("/v1/brains/b/metrics").json()["prequential"]["labelled"] == 10
    metrics = client.get("/metrics").text
    assert f'brain_feedback_total{{brain="b",outcome="correct"}} {float(sum(right))}' in metrics
    assert f'brain_feedback_total{{brain="b",outcome="wrong"}} {float(10 - sum(right))}' in metrics


def test_the_sample_made_from_feedback_is_the_served_input(client: TestClient) -> None:
    """A brain taught only by feedback learns the inputs it served: asked again, it answers the
    labels it was given."""
    make_brain(client)
    post(client, "b", "t", *clusters(20, ["a", "b"], seed=1))
    xs, ys = clusters(30, ["c", "d"], seed=3)  # labels it has never seen
    answer = predict(client, "b", xs, task="t")
    r = client.post("/v1/brains/b/feedback", params={}, json={
        "task": "t2", "feedback": [{"prediction": pid, "label": y} for pid, y in zip(served_ids(answer), ys)]})
    assert r.status_code == 202
    job = client.get(f"/v1/jobs/{r.json()['job']}").json()
    deadline = time.monotonic() + 30
    while job["state"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
        job = client.get(f"/v1/jobs/{r.json()['job']}").json()
    assert job["state"] == "succeeded", job
    again = predict(client, "b", xs)
    assert sum(p["label"] == y for p, y in zip(again["predictions"], ys)) >= 27
    assert {t["name"] for t in client.get("/v1/brains/b/tasks").json()["tasks"]} == {"t", "t2"}


@pytest.mark.parametrize(("prediction", "status", "reason"), [
    (None, 422, "no feedback"),
    ("nonsense", 422, "not a prediction id"),
    (0, 404, "no such prediction"),  # an id of now that was never served
    (-7200, 410, "no longer kept"),  # an id of two hours ago
])
def test_bad_feedback_is_refused_with_a_reason(client: TestClient, prediction: str | int | None, status: int,
                                               reason: str) -> None:
    make_brain(client)
    post(client, "b", "t", *clusters(10, ["a", "b"], seed=1))
    if isinstance(prediction, int):
        prediction = feedback.request_id(time.time() + prediction) + "-0"
    body = {"feedback": [] if prediction is None else [{"prediction": prediction, "label": "a"}]}
    r = client.post("/v1/brains/b/feedback", json=body)
    assert r.status_code == status and reason in r.text, r.text
    assert client.get("/v1/brains/b").json()["samples_learned"] == 10  # nothing appended


def test_feedback_on_another_brains_prediction_or_an_index_it_never_served_is_404(client: TestClient) -> None:
    for name in ("b", "c"):
        make_brain(client, name)
        post(client, name, "t", *clusters(10, ["a", "b"], seed=1))
    pid = served_ids(predict(client, "b", clusters(2, ["a"], seed=2)[0]))[0]
    assert client.post("/v1/brains/c/feedback", json={"feedback": [{"prediction": pid, "label": "a"}]}).status_code == 404
    beyond = pid.rsplit("-", 1)[0] + "-2"
    assert client.post("/v1/brains/b/feedback", json={"feedback": [{"prediction": beyond, "label": "a"}]}).status_code == 404


def test_served_inputs_are_kept_for_the_window_and_at_most_max_kept() -> None:
    import numpy as np

    kept = feedback.ServedPredictions(window=60, max_kept=4)
    now = time.time()
    ids = []
    for k in range(3):  # 2 predictions each: 6 > 4, the first request goes
        rid = feedback.request_id(now + k * 0.01)
        kept.keep(rid, feedback.Served(brain_id=1, version=1, task=None, at=now + k * 0.01, x=np.zeros((2, 3)),
                                       predicted=[0, 1], confidence=[0.5, 0.5]))
        ids.append((rid, now + k * 0.01))
    with pytest.raises(Gone):
        kept.get(*ids[0], brain_id=1)  # evicted for room: gone, not unknown
    assert kept.get(*ids[2], brain_id=1).predicted == [0, 1]
    old = feedback.ServedPredictions(window=0.05, max_kept=100)
    rid = feedback.request_id(time.time())
    old.keep(rid, feedback.Served(brain_id=1, version=1, task=None, at=time.time(), x=np.zeros((1, 3)),
                                  predicted=[0], confidence=[1.0]))
    time.sleep(0.1)
    with pytest.raises(Gone):
        old.get(rid, int(rid[:11], 16) / 1000, brain_id=1)
    with pytest.raises(NotFound):  # served now, by no one
        old.get(feedback.request_id(time.time()), time.time(), brain_id=1)


def test_a_prediction_served_before_a_restart_is_gone(tmp_path) -> None:
    settings = make_settings(tmp_path / "var")
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        make_brain(c)
        post(c, "b", "t", *clusters(10, ["a", "b"], seed=1))
        pid = served_ids(predict(c, "b", clusters(1, ["a"], seed=2)[0]))[0]
    time.sleep(0.01)
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/brains/b/feedback", json={"feedback": [{"prediction": pid, "label": "a"}]})
        assert r.status_code == 410 and "no longer kept" in r.text


def test_with_redis_any_api_process_takes_feedback_on_what_another_served(redis_url: str) -> None:
    """Full stack: each API process writes what it served to Redis (no pickle), so feedback may
    reach another process, or the same one after a restart."""
    import numpy as np
    import redis

    clients = [redis.Redis.from_url(redis_url) for _ in range(2)]
    here = feedback.SharedServedPredictions(window=60, max_kept=100, redis=clients[0])
    there = feedback.SharedServedPredictions(window=60, max_kept=100, redis=clients[1])
    try:
        now = time.time()
        rid = feedback.request_id(now)
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        here.keep(rid, feedback.Served(brain_id=4, version=2, task="t", at=now, x=x, predicted=[1, 0],
                                       confidence=[0.75, 0.5]))
        here.flush()
        got = there.get(rid, now, brain_id=4)
        assert (got.version, got.task, got.predicted, got.confidence) == (2, "t", [1, 0], [0.75, 0.5])
        assert np.array_equal(got.x, x)
        with pytest.raises(NotFound):
            there.get(rid, now, brain_id=5)  # another brain's prediction
        assert 0 < clients[0].ttl(f"pb:served:{rid}") <= 61  # gone from Redis with the window
        junk = feedback.request_id(now)
        clients[0].set(f"pb:served:{junk}", b"\x00\x00\x00\x05junk!")
        with pytest.raises(NotFound):  # what Redis holds is parsed, never trusted or unpickled
            there.get(junk, now, brain_id=4)
    finally:
        here.close()
        there.close()
        for c in clients:
            c.close()


def test_served_requests_round_trip_through_bytes() -> None:
    import numpy as np

    served = feedback.Served(brain_id=1, version=3, task=None, at=1.5, x=np.ones((1, 4), np.float32), predicted=[2],
                             confidence=[0.9])
    back = feedback.decode_served(feedback.encode_served(served))
    assert back.task is None and back.predicted == [2] and np.array_equal(back.x, served.x)
    with pytest.raises(ValueError):
        feedback.decode_served(b"\x00\x00\x00\x02{}")
