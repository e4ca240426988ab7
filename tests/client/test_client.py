"""brain_client against the real app (in-process, through an httpx transport): the same calls
sync and async, inputs sent compactly, errors with the service's reason, retries that never learn
a sample twice, and API keys."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from brain_client import (
    NO_RETRY,
    AsyncClient,
    Client,
    Forbidden,
    Invalid,
    JobFailed,
    NotFound,
    RetryPolicy,
    Unauthorized,
    Unavailable,
    encode_inputs,
)
from service.app import create_app
from service.db import upgrade
from tests.conftest import make_settings
from tests.service.test_api import DIM, SMALL, clusters

FAST = RetryPolicy(attempts=3, backoff=0.001, jitter=0.0)


class Recorder:
    """An httpx transport that hands each request to the app (a TestClient) and can replace the
    answer: ``fail(request, answer) -> httpx.Response | Exception | None``."""

    def __init__(self, app_client: TestClient, fail: Callable | None = None) -> None:
        self.app_client, self.fail, self.requests = app_client, fail, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.app_client.request(request.method, request.url.path, params=request.url.params,
                                         content=request.content, headers=dict(request.headers))
        replaced = self.fail(request, answer) if self.fail else None
        if isinstance(replaced, Exception):
            raise replaced
        if replaced is not None:
            return replaced
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "var")
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        yield c


def client_on(app_client: TestClient, fail: Callable | None = None, **kw) -> tuple[Client, Recorder]:
    recorder = Recorder(app_client, fail)
    http = httpx.Client(transport=httpx.MockTransport(recorder), base_url="http://brain")
    return Client(http=http, retry=kw.pop("retry", FAST), **kw), recorder


def test_sync_client_learns_predicts_sleeps_and_reports(app_client: TestClient) -> None:
    client, recorder = client_on(app_client)
    made = client.create_brain("b", kind="vector", shape=[DIM], params=SMALL)
    assert made.name == "b" and made.samples_learned == 0
    brain = client.brain("b")
    x, y = clusters(60, ["cat", "dog", "eel"], seed=0)
    learned = brain.learn(x, y, task="t1", wait=True, chunk=25)  # 3 requests, the last one waits
    assert (learned.accepted, learned.duplicates) == (60, 0)
    assert learned.version is not None and len(set(learned.ids)) == 60
    sent = [r for r in recorder.requests if r.url.path.endswith("/samples")]
    assert len(sent) == 3 and b'"x_b64"' in sent[0].content and b'"x":' not in sent[0].content
    assert brain.info().samples_learned == 60

    tx, ty = clusters(30, ["cat", "dog", "eel"], seed=1)
    out = brain.predict(tx)
    assert out.version == learned.version
    assert np.mean([p.label == t for p, t in zip(out.predictions, ty)]) > 0.9
    assert [p.label for p in brain.predict(tx[:3].tolist()).predictions] == [p.label for p in out.predictions[:3]]

    assert brain.evaluate(tx, ty, task="t1").accuracy > 0.9
    job = brain.sleep(wait=True)
    assert job.state == "succeeded" and job.kind == "sleep"
    assert [t.name for t in brain.tasks()] == ["t1"]
    versions = brain.versions()
    assert versions.current == job.result["version"] and len(versions.versions) >= 2
    assert brain.metrics().tasks == ["t1"]
    assert [b.name for b in client.brains()] == ["b"]


def test_the_client_tags_sources_and_forgets_them(app_client: TestClient) -> None:
    client, recorder = client_on(app_client)
    client.create_brain("b", kind="vector", shape=[DIM], params=SMALL)
    brain = client.brain("b")
    x, y = clusters(20, ["cat", "dog"], seed=0)
    brain.learn(x[:8], y[:8], task="t1", source="alice", wait=True)
    brain.learn(x[8:], y[8:], task="t1", wait=True)
    job = brain.forget(source="alice", wait=True)
    assert job.kind == "forget" and job.result["forgotten"] == 8 and job.result["how"] == "retrain at next sleep"
    assert [r.method for r in recorder.requests if r.url.path.endswith("/samples")][-1] == "DELETE"
    assert brain.forget(task="t9").job
    with pytest.raises(ValueError):
        brain.forget(task="t1", source="alice")
    assert brain.info().samples_learned == 12


def test_errors_carry_the_service_reason(app_client: TestClient) -> None:
    client, _ = client_on(app_client)
    with pytest.raises(NotFound) as missing:
        client.brain("nope").info()
    assert missing.value.status == 404 and "nope" in str(missing.value.detail)
    client.create_brain("b", kind="vector", shape=[DIM], params=SMALL)
    with pytest.raises(Invalid) as wrong:
        client.brain("b").learn(np.zeros((2, DIM + 1)), [0, 1], task="t1")
    assert wrong.value.status == 422 and str(DIM) in str(wrong.value.detail)
    with pytest.raises(ValueError, match="as many"):
        client.brain("b").learn(np.zeros((2, DIM)), [0], task="t1")  # caught before anything is sent


def test_brain_options_are_checked_by_the_service_and_wire_models_go_back(app_client: TestClient) -> None:
    client, _ = client_on(app_client)
    with pytest.raises(Invalid) as unknown:  # the client sends options as given; the service refuses
        client.create_brain("b", kind="vector", shape=[DIM], strategy_name="plastic")
    assert unknown.value.status == 422 and "strategy_name" in str(unknown.value.detail)
    made = client.create_brain("b", kind="vector", shape=np.array([DIM]), params=SMALL,
                               sleep_policy={"every_samples": 50})
    other = client.create_brain("c", kind="vector", shape=[DIM], params=SMALL, sleep_policy=made.sleep_policy)
    assert other.sleep_policy.every_samples == 50
    changed = made.sleep_policy.model_copy(update={"every_samples": 70})
    assert client.brain("c").update(sleep_policy=changed).sleep_policy.every_samples == 70


def test_a_lost_answer_is_retried_with_the_same_ids_and_learned_once(app_client: TestClient) -> None:
    lost = []

    def lose_first_samples_answer(request: httpx.Request, answer) -> Exception | None:
        if request.url.path.endswith("/samples") and not lost:
            lost.append(request)
            return httpx.ReadError("connection reset after the service logged the batch", request=request)
        return None

    client, recorder = client_on(app_client, lose_first_samples_answer)
    client.create_brain("b", kind="vector", shape=[DIM], params=SMALL)
    x, y = clusters(40, ["a", "b"], seed=0)
    learned = client.brain("b").learn(x, y, task="t1", wait=True)
    sent = [r for r in recorder.requests if r.url.path.endswith("/samples")]
    assert len(sent) == 2 and sent[0].content == sent[1].content  # the same body, ids included
    assert (learned.accepted, learned.duplicates) == (0, 40)  # the first try was logged; the retry found them
    info = client.brain("b").info()
    assert (info.samples_learned, info.samples_pending) == (40, 0)


def test_503_is_retried_then_reported_and_unsafe_calls_are_not_retried_blindly(app_client: TestClient) -> None:
    def busy(request: httpx.Request, answer):
        return httpx.Response(503, json={"detail": "redis is down"}, headers={"retry-after": "0"})

    client, recorder = client_on(app_client, busy)
    with pytest.raises(Unavailable) as down:
        client.brains()
    assert down.value.detail == "redis is down" and len(recorder.requests) == FAST.attempts

    def gateway(request: httpx.Request, answer):
        return httpx.Response(502, json={"detail": "bad gateway"}) if request.method == "POST" else None

    client, recorder = client_on(app_client, gateway)
    client_plain, _ = client_on(app_client)
    client_plain.create_brain("b", kind="vector", shape=[DIM], params=SMALL)
    with pytest.raises(Unavailable):
        client.brain("b").sleep()  # a 502 may have started a sleep: not sent again
    assert len(recorder.requests) == 1
    with pytest.raises(Unavailable):
        client.brain("b").predict(np.zeros((1, DIM)))  # pure: retried
    assert len(recorder.requests) == 1 + FAST.attempts

    client, recorder = client_on(app_client, busy, retry=NO_RETRY)
    with pytest.raises(Unavailable):
        client.brains()
    assert len(recorder.requests) == 1


def test_a_failed_job_raises(app_client: TestClient) -> None:
    def failed_job(request: httpx.Request, answer):
        if request.url.path.startswith("/v1/jobs/"):
            body = answer.json() | {"state": "failed", "error": "out of memory"}
            return httpx.Response(200, json=body)
        return None

    client, _ = client_on(app_client, failed_job)
    client.create_brain("b", kind="vector", shape=[DIM], params=SMALL)
    client.brain("b").learn(*clusters(10, ["a", "b"], seed=0), task="t1", wait=True)
    with pytest.raises(JobFailed, match="out of memory"):
        client.brain("b").sleep(wait=True)


def test_async_client_does_the_same(app_client: TestClient) -> None:
    recorder = Recorder(app_client)

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        return await asyncio.to_thread(recorder, request)

    async def main() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://brain")
        async with AsyncClient(http=http, retry=FAST) as client:
            await client.create_brain("b", kind="vector", shape=[DIM], params=SMALL)
            brain = client.brain("b")
            x, y = clusters(40, ["a", "b"], seed=0)
            learned = await brain.learn(x, y, task="t1", wait=True)
            again = await brain.learn(x, y, task="t1", ids=learned.ids, wait=True)
            assert (again.accepted, again.duplicates, again.version) == (0, 40, learned.version)
            out = await brain.predict(x[:10])
            assert [p.label for p in out.predictions] == y[:10]
            job = await brain.sleep(wait=True)
            assert job.state == "succeeded"
            assert (await brain.versions()).current == job.result["version"]
            with pytest.raises(NotFound):
                await client.brain("nope").metrics()
        await http.aclose()

    asyncio.run(main())


def test_api_keys_are_sent_and_scoped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "var", admin_key="admin-secret")
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as app_client:
        admin, _ = client_on(app_client, api_key="admin-secret")
        anonymous, _ = client_on(app_client)
        with pytest.raises(Unauthorized):
            anonymous.brains()
        admin.create_brain("a", kind="vector", shape=[DIM], params=SMALL)
        admin.create_brain("b", kind="vector", shape=[DIM], params=SMALL)
        key = admin.create_key("reader", brains={"a": "read"})
        reader, _ = client_on(app_client, api_key=key.key)
        assert [b.name for b in reader.brains()] == ["a"]
        with pytest.raises(Forbidden):
            reader.brain("a").learn(np.zeros((1, DIM)), [0], task="t1")
        with pytest.raises(Forbidden):
            reader.brain("b").info()
        admin.revoke_key(key.id)
        with pytest.raises(Unauthorized):
            reader.brains()


def test_encode_inputs_forms() -> None:
    rows = encode_inputs(np.arange(6, dtype=np.float64).reshape(2, 3))
    assert [np.frombuffer(__import__("base64").b64decode(r["x_b64"]), "<f4").tolist() for r in rows] == [[0, 1, 2], [3, 4, 5]]
    assert encode_inputs(["a text", b"\x89PNG", [1, 2], {"x": [3]}]) == [
        {"text": "a text"}, {"image": "iVBORw=="}, {"x": [1, 2]}, {"x": [3]}]
    with pytest.raises(ValueError):
        encode_inputs(np.zeros(3))  # one vector is not a batch
    with pytest.raises(TypeError):
        encode_inputs("not a batch")
