"""Drift watching in the service: served predictions and their feedback feed each brain's monitors
off the predict path; an event is recorded (GET .../drift, /metrics) and, with
``sleep_policy.on_drift``, answered by a sleep. Streams with a known change point; the watch is
drained by the test (``BRAIN_DRIFT_CHECK_SECONDS`` an hour), so that each step is deterministic."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import upgrade
from service.tables import Job
from tests.conftest import make_settings
from tests.service.test_api import clusters, make_brain, post, predict


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "var", drift_check_seconds=3600)
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        yield c


def label_served(client: TestClient, answer: dict, labels: list) -> None:
    r = client.post("/v1/brains/b/feedback", json={
        "feedback": [{"prediction": p["id"], "label": y} for p, y in zip(answer["predictions"], labels)]})
    assert r.status_code == 202, r.text


def test_the_error_signal_fires_soon_after_labels_turn_wrong_and_the_brain_sleeps(client: TestClient) -> None:
    make_brain(client, sleep_policy={"on_drift": True})
    post(client, "b", "t", *clusters(60, ["a", "b"], seed=1))
    watch = client.app.state.drift
    for k in range(10):  # 300 served predictions labelled as the brain answers them: no drift
        xs, ys = clusters(30, ["a", "b"], seed=10 + k)
        label_served(client, predict(client, "b", xs), ys)
        assert watch.drain() == []
    events = []
    for k in range(4):  # then the world flips the labels: every served prediction is wrong
        xs, ys = clusters(30, ["a", "b"], seed=30 + k)
        label_served(client, predict(client, "b", xs), ["b" if y == "a" else "a" for y in ys])
        events += watch.drain()
    assert len(events) == 1
    drift = client.get("/v1/brains/b/drift").json()
    assert drift["watched"]["error"] == 420 and drift["watched"]["confidence"] == 420
    event = drift["events"][0]
    assert event["signal"] == "error" and event["detector"] == "adwin"
    assert 300 < event["statistic"]["index"] <= 300 + 60  # within 60 labels of the change, not before
    assert event["statistic"]["before"] < 0.05 and event["statistic"]["after"] > 0.9
    job = event["sleep_job"]  # sleep_policy.on_drift
    assert job and client.get(f"/v1/jobs/{job}").json()["kind"] == "sleep"
    with client.app.state.runtime.db.session(read_only=True) as s:
        assert s.get(Job, job).payload["reason"] == "drift"
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{job}").json()["state"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert 'brain_drift_events_total{brain="b",signal="error"} 1.0' in client.get("/metrics").text


def test_an_image_brains_inputs_are_watched_and_a_change_of_brightness_is_seen(client: TestClient) -> None:
    """No labels come: the input monitor sees dark inputs turn bright; the stream before the change,
    as long again, raises nothing."""
    assert client.post("/v1/brains", json={"name": "b", "input": {"kind": "image", "shape": [1, 4, 4]}}).status_code == 201
    rng = np.random.default_rng(0)
    dark = rng.uniform(0.0, 0.4, size=(600, 16))
    r = client.post("/v1/brains/b/samples", params={"wait": "true"}, json={
        "task": "t", "samples": [{"x": x.tolist(), "label": "ab"[i % 2]} for i, x in enumerate(dark[:40])]})
    assert r.json()["state"] == "succeeded"
    watch = client.app.state.drift
    for start in range(0, 600, 50):
        predict(client, "b", dark[start:start + 50])
        assert watch.drain() == []
    bright = rng.uniform(0.5, 0.9, size=(200, 16))
    events = []
    for start in range(0, 200, 50):
        predict(client, "b", bright[start:start + 50])
        events += watch.drain()
    inputs = [e for e in events if e.signal == "input"]
    assert len(inputs) == 1 and 600 < inputs[0].statistic["index"] <= 600 + 60
    assert client.get("/v1/brains/b/drift").json()["events"][-1]["sleep_job"] is None


def test_a_vector_brain_has_no_input_signal_and_a_deleted_brain_forgets_its_monitors(client: TestClient) -> None:
    make_brain(client)
    post(client, "b", "t", *clusters(20, ["a", "b"], seed=1))
    predict(client, "b", clusters(10, ["a", "b"], seed=2)[0])
    watch = client.app.state.drift
    watch.drain()
    assert client.get("/v1/brains/b/drift").json()["watched"] == {"error": 0, "confidence": 10, "input": 0}
    brain_id = client.app.state.serving.peek("b").brain_id
    assert client.delete("/v1/brains/b").status_code == 204
    watch.drain()
    assert not [k for k in watch.fed if k[0] == brain_id]
