"""The predict fast path: no database while nothing changed, changes heard at once (in-process and
through Redis), shared forward passes, and pydantic's own JSON parsing with FastAPI's errors."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import torch
from fastapi.testclient import TestClient
from sqlalchemy import event

from models.registry import create
from service.changes import BrainChanges
from service.serving import MicroBatcher, Serving
from tests.service.test_api import answers, clusters, make_brain, post, predict


def test_predictions_skip_the_database_until_the_brain_changes(client: TestClient) -> None:
    make_brain(client)
    xs, ys = clusters(40, ["a", "b"], seed=1)
    post(client, "b", "t", xs, ys)
    first = predict(client, "b", xs[:4])
    statements: list[str] = []
    engine = client.app.state.runtime.db.engine

    def seen(*args) -> None:
        if threading.current_thread().name != "sleep-scheduler":  # it checks policies on its own
            statements.append(args[2])

    event.listen(engine, "before_cursor_execute", seen)
    for _ in range(5):
        assert answers(predict(client, "b", xs[:4])) == answers(first)
        assert predict(client, "b", xs[:4], task="t")["version"] == first["version"]
    assert statements == []
    post(client, "b", "t2", *clusters(40, ["c", "d"], seed=2))  # a wake job publishes a version
    after = predict(client, "b", xs[:4])
    assert after["version"] > first["version"]  # seen on the very next request
    assert predict(client, "b", xs[:4], task="t2")["version"] == after["version"]


def test_an_unknown_task_and_an_unknown_brain_are_404_from_the_cache_too(client: TestClient) -> None:
    make_brain(client)
    post(client, "b", "t", *clusters(20, ["a", "b"], seed=1))
    x = {"x": [0.0] * 8}
    assert client.post("/v1/brains/b/predict", json={"inputs": [x]}).status_code == 200
    r = client.post("/v1/brains/b/predict", json={"inputs": [x], "task": "nope"})
    assert r.status_code == 404 and "no task 'nope'" in r.json()["detail"]
    client.delete("/v1/brains/b")
    assert client.post("/v1/brains/b/predict", json={"inputs": [x]}).status_code == 404


def test_predict_parses_its_body_with_fastapis_errors_and_documents_it(client: TestClient) -> None:
    make_brain(client)
    r = client.post("/v1/brains/b/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = client.post("/v1/brains/b/predict", json={"inputs": [{"x": [1.0], "text": "two inputs"}]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][:3] == ["body", "inputs", 0]
    doc = client.get("/openapi.json").json()
    body = doc["paths"]["/v1/brains/{name}/predict"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/PredictIn"
    assert {"PredictIn", "InputIn", "PredictOut"} <= set(doc["components"]["schemas"])


def test_predict_is_one_route_and_the_document_describes_it(client: TestClient) -> None:
    from starlette.routing import Match

    scope = {"type": "http", "method": "POST", "path": "/v1/brains/b/predict", "root_path": ""}
    answering = [r for r in client.app.router.routes if r.matches(scope)[0] == Match.FULL]
    assert len(answering) == 1  # no second handler behind the first, never run
    op = client.get("/openapi.json").json()["paths"]["/v1/brains/{name}/predict"]["post"]
    assert [p["name"] for p in op["parameters"] if p["in"] == "path"] == ["name"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/PredictOut"
    assert "security" in op and op["tags"] == ["learning"]


def _serving(forward_calls: list[int]) -> Serving:
    learner = create("finetune", input_dim=4, num_classes=3, seed=0)
    entry = Serving(brain_id=1, name="b", kind="vector", shape=[4], encoder="flatten", labels=["a", "b", "c"],
                    tasks={}, version=1, learner=learner)
    plain = entry.forward

    def counted(x: np.ndarray, mask: torch.Tensor):
        forward_calls.append(len(x))
        time.sleep(0.01)  # a forward pass that takes a while: requests pile up behind it
        return plain(x, mask)

    entry.forward = counted  # type: ignore[method-assign]
    return entry


def test_concurrent_predictions_share_forward_passes_and_get_their_own_rows() -> None:
    calls: list[int] = []
    entry = _serving(calls)
    batcher = MicroBatcher()
    xs = [np.random.default_rng(i).normal(size=(1 + i % 3, 4)).astype(np.float32) for i in range(40)]

    async def all_at_once():
        return await asyncio.gather(*(batcher.predict(entry, None, x) for x in xs))

    try:
        answers = asyncio.run(all_at_once())
    finally:
        batcher.close()
    assert sum(calls) == sum(len(x) for x in xs)
    assert len(calls) < len(xs) / 4  # batched, not one pass per request
    mask = entry.mask(None)
    for x, (idx, conf) in zip(xs, answers):
        alone = entry.learner.predict(torch.from_numpy(x), mask).max(dim=1)
        assert idx.tolist() == alone.indices.tolist()
        assert np.allclose(conf, alone.values.numpy(), atol=1e-6)


def test_a_failed_forward_pass_fails_its_requests_and_not_the_next() -> None:
    calls: list[int] = []
    entry = _serving(calls)
    batcher = MicroBatcher()

    async def scenario():
        bad = await asyncio.gather(batcher.predict(entry, None, np.zeros((2, 5), np.float32)),
                                   return_exceptions=True)
        good = await batcher.predict(entry, None, np.zeros((2, 4), np.float32))
        return bad, good

    try:
        bad, good = asyncio.run(scenario())
    finally:
        batcher.close()
    assert isinstance(bad[0], ValueError) and "shape" in str(bad[0])
    assert len(good[0]) == 2


def test_brain_changes_reach_other_processes_through_redis(redis_url: str) -> None:
    import redis

    heard: list[int | None] = []
    got = threading.Event()
    clients = [redis.Redis.from_url(redis_url) for _ in range(2)]
    here, there = BrainChanges(clients[0]), BrainChanges(clients[1])
    mine: list[int | None] = []
    here.listen(mine.append)

    def hear(brain_id: int | None) -> None:
        heard.append(brain_id)
        if brain_id is not None:
            got.set()

    there.listen(hear)
    there.subscribe()
    try:
        deadline = time.monotonic() + 10
        while None not in heard:  # subscribed (a fresh subscription forgets everything)
            assert time.monotonic() < deadline, "no subscription"
            time.sleep(0.02)
        here.announce({7, 9})
        assert got.wait(10)
        time.sleep(0.1)
        assert sorted(i for i in heard if i is not None) == [7, 9]
        assert sorted(mine) == [7, 9]  # told at once in its own process
    finally:
        there.close()
        here.close()
        for c in clients:
            c.close()
