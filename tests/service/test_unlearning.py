"""Exact unlearning (issue 18): ``DELETE /v1/brains/{name}/samples`` on the embedded default.

- a mergeable brain (the image default: the conv eyes and the closed-form readout) that forgets
  samples predicts as a brain that never saw them: same labels, probabilities within 1e-4, equal
  readouts and statistics; a sleep before the forgetting changes nothing of that (the penalty a
  sleep chose goes back to a new learner's, and the next sleep chooses over the purged buffer);
- forgotten samples leave the log, the replay buffer and its snapshots, and every version that
  learned them or holds them in a snapshot, promoted ones too (a promote of them is 404, no blob
  is left);
- a brain that cannot downdate retrains from the log at its next sleep, and says so;
- a meta-trained brain that cannot downdate is refused with 422 and the reason;
- the erasure is audited: who, what (ids by their count), how many, never the data.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from models.learner import Unsupported
from models.registry import create as create_learner
from service.tables import Brain, Sample, Version
from tests.service.test_api import clusters

IMAGE = {"kind": "image", "shape": [1, 20, 20]}  # the smallest the default conv eyes read (1,024 features)
DIM = 400
LABELS = ["a", "b", "c"]


def image_brain(client: TestClient, name: str, **extra) -> None:
    r = client.post("/v1/brains", json={"name": name, "input": IMAGE, **extra})
    assert r.status_code == 201, r.text


def batch(xs, ys, ids, sources=None) -> list[dict]:
    out = []
    for i, (x, y, key) in enumerate(zip(xs, ys, ids)):
        s = {"x": np.clip(x, 0, 1).tolist(), "label": y, "id": key}
        if sources and sources[i]:
            s["source"] = sources[i]
        out.append(s)
    return out


def send(client: TestClient, name: str, task: str, samples: list[dict], **extra) -> dict:
    r = client.post(f"/v1/brains/{name}/samples", params={"wait": True}, json={"task": task, "samples": samples, **extra})
    assert r.status_code == 202 and r.json()["state"] == "succeeded", r.text
    return r.json()


def forget(client: TestClient, name: str, body: dict) -> dict:
    r = client.request("DELETE", f"/v1/brains/{name}/samples", params={"wait": True}, json=body)
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "succeeded", r.json()
    return r.json()["result"]


def predict(client: TestClient, name: str, xs) -> list[dict]:
    r = client.post(f"/v1/brains/{name}/predict", json={"inputs": [{"x": np.clip(x, 0, 1).tolist()} for x in xs]})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def learner_of(client: TestClient, name: str):
    rt = client.app.state.runtime
    with rt.db.session(read_only=True) as s:
        brain = s.scalar(select(Brain).where(Brain.name == name))
        s.expunge(brain)
    return rt.versions.load(brain, brain.current_version), brain


def data(seed: int = 0) -> tuple[list[dict], list[dict], list[dict]]:
    """Two tasks' batches: samples of source "alice" spread among them."""
    xs, ys = clusters(90, LABELS, seed=seed, dim=DIM)
    xs = (xs - xs.min()) / (xs.max() - xs.min())
    keys = [f"s{i}" for i in range(90)]
    sources = ["alice" if i % 7 == 3 else None for i in range(90)]
    first = batch(xs[:50], ys[:50], keys[:50], sources[:50])
    second = batch(xs[50:], ys[50:], keys[50:], sources[50:])
    test, _ = clusters(30, LABELS, seed=seed + 100, dim=DIM)
    test = (test - test.min()) / (test.max() - test.min())
    return first, second, [{"x": t} for t in test]


def assert_same_brain(client: TestClient, forgot: str, never: str, test: list[dict]) -> None:
    xs = [t["x"] for t in test]
    a, b = predict(client, forgot, xs), predict(client, never, xs)
    assert [p["label"] for p in a] == [p["label"] for p in b]
    assert np.allclose([p["confidence"] for p in a], [p["confidence"] for p in b], atol=1e-4)
    la, _ = learner_of(client, forgot)
    lb, _ = learner_of(client, never)
    assert torch.equal(la.class_counts, lb.class_counts)
    assert torch.allclose(la.stat_a, lb.stat_a, atol=1e-3) and torch.allclose(la.stat_b, lb.stat_b, atol=1e-3)
    assert float(la.ridge_value) == float(lb.ridge_value)
    core_a, core_b = la._core(), lb._core()
    print("readout max diff", float((core_a - core_b).abs().max()), "of", float(core_b.abs().max()))
    assert torch.allclose(core_a, core_b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("slept", [False, True])
def test_a_downdated_brain_predicts_as_one_that_never_saw_the_samples(client: TestClient, slept: bool) -> None:
    first, second, test = data()
    image_brain(client, "forgot")
    image_brain(client, "never")
    send(client, "forgot", "t1", first)
    if slept:  # a sleep chooses the ridge over a replay that holds alice's samples
        r = client.post("/v1/brains/forgot/sleep", params={"wait": True})
        assert r.json()["state"] == "succeeded", r.text
    send(client, "forgot", "t2", second)
    send(client, "never", "t1", [s for s in first if s.get("source") != "alice"])
    send(client, "never", "t2", [s for s in second if s.get("source") != "alice"])
    la, _ = learner_of(client, "forgot")
    assert la.mergeable()

    result = forget(client, "forgot", {"source": "alice"})
    alice = sum(s.get("source") == "alice" for s in first + second)
    assert result["forgotten"] == result["learned"] == alice and result["how"] == "downdated"
    assert_same_brain(client, "forgot", "never", test)
    assert client.get("/v1/brains/forgot").json()["samples_learned"] == 90 - alice

    later, _, _ = data(seed=5)  # and it goes on learning as that brain does
    for name in ("forgot", "never"):
        send(client, name, "t3", [{**s, "id": f"later-{s['id']}"} for s in later[:20]])
    assert_same_brain(client, "forgot", "never", test)

    if slept:  # the next sleep chooses the ridge again, over the purged buffer
        r = client.post("/v1/brains/forgot/sleep", params={"wait": True})
        assert r.json()["state"] == "succeeded" and r.json()["result"]["replayed"] == 90 - alice + 20


def test_a_batch_source_is_the_default_of_its_samples(client: TestClient) -> None:
    first, second, _ = data()
    image_brain(client, "b")
    send(client, "b", "t1", [{k: v for k, v in s.items() if k != "source"} for s in first], source="device-1")
    send(client, "b", "t2", second, source="device-2")  # alice's samples name their own source
    alice = sum(s.get("source") == "alice" for s in second)
    assert forget(client, "b", {"source": "device-2"})["forgotten"] == 40 - alice
    assert forget(client, "b", {"source": "device-1"})["forgotten"] == 50
    assert forget(client, "b", {"source": "alice"})["forgotten"] == alice
    assert client.get("/v1/brains/b").json()["samples_learned"] == 0


def test_forgotten_samples_leave_the_log_the_replay_its_snapshots_and_the_versions(client: TestClient) -> None:
    first, second, _ = data()
    image_brain(client, "b")
    send(client, "b", "t1", first[:25])  # v2
    send(client, "b", "t1", first[25:])  # v3: holds the samples to forget
    send(client, "b", "t2", second)  # v4
    for number in (2, 4):  # promoted versions: v2 learned none of them, v4 did
        assert client.post(f"/v1/brains/b/versions/{number}/promote").status_code == 200
    gone = [s["id"] for s in first[30:34]]
    rt = client.app.state.runtime
    _, brain = learner_of(client, "b")
    forgotten = {(np.asarray(s["x"], dtype="<f4").tobytes()) for s in first[30:34]}
    assert forgotten <= {row.tobytes() for row in rt.replay(brain).snapshot()["x"].numpy()}

    result = forget(client, "b", {"ids": [*gone, "no-such-id"]})
    assert result == {**result, "forgotten": 4, "how": "downdated", "version": 5, "versions_deleted": [3, 4]}
    numbers = [v["number"] for v in client.get("/v1/brains/b/versions").json()["versions"]]
    assert numbers == [1, 2, 5]
    for number in (3, 4):  # a rollback cannot bring them back, and no byte of them is left
        assert client.post(f"/v1/brains/b/versions/{number}/promote").status_code == 404
        assert rt.versions.blobs.keys(rt.versions.folder(brain.id, number)) == []
    with rt.db.session(read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(Sample).where(Sample.sample_key.in_(gone))) == 0
        assert s.scalar(select(func.count()).select_from(Sample).where(Sample.brain_id == brain.id)) == 86
    _, brain = learner_of(client, "b")
    live = {row.tobytes() for row in rt.replay(brain).snapshot()["x"].numpy()}
    assert len(live) == 86 and not forgotten & live
    for number in (2, 5):  # the snapshots that remain
        snap = rt.versions.load_replay(brain.id, number)
        assert snap is not None and not forgotten & {row.tobytes() for row in snap["x"].numpy()}
    assert client.get("/v1/brains/b/tasks").status_code == 200

    erasures = client.get("/v1/brains/b/erasures")
    assert erasures.status_code == 200
    (row,) = erasures.json()["erasures"]
    assert row["selector"] == {"ids": 5} and row["rows"] == 4 and row["how"] == "downdated"
    assert row["key"] is None and row["versions_deleted"] == [3, 4] and row["job"]
    assert not any(key in erasures.text for key in gone)


def test_identical_copies_leave_the_replay_buffer_too(client: TestClient) -> None:
    first, _, _ = data()
    image_brain(client, "b")
    copy = {**first[0], "id": "copy"}
    send(client, "b", "t1", [*first[:10], copy])
    assert forget(client, "b", {"ids": ["copy"]})["replay_removed"] == 2  # the copy and s0: same x, same label
    _, brain = learner_of(client, "b")
    assert len(client.app.state.runtime.replay(brain)) == 9


def test_a_brain_that_cannot_downdate_retrains_at_its_next_sleep(client: TestClient) -> None:
    xs, ys = clusters(60, LABELS, seed=1, dim=8)
    r = client.post("/v1/brains", json={"name": "v", "input": {"kind": "vector", "shape": [8]}})
    assert r.status_code == 201, r.text
    send(client, "v", "t1", [{"x": x.tolist(), "label": y, "id": f"s{i}"} for i, (x, y) in enumerate(zip(xs, ys))])
    learner, _ = learner_of(client, "v")
    assert not learner.mergeable()  # the vector default: a sparse layer that learns

    result = forget(client, "v", {"label": "a"})
    assert result["forgotten"] == 20 and result["how"] == "retrain at next sleep"
    assert result["versions_deleted"] == [] and result["version"] == 3
    _, brain = learner_of(client, "v")
    assert brain.retrain_from is not None
    assert client.get("/v1/brains/v/erasures").json()["erasures"][0]["how"] == "retrain at next sleep"

    r = client.post("/v1/brains/v/sleep", params={"wait": True})
    assert r.json()["state"] == "succeeded", r.text
    slept = r.json()["result"]
    assert slept["retrained"] == 40 and slept["versions_deleted"] == [1, 2, 3] and slept["version"] == 4
    assert [v["number"] for v in client.get("/v1/brains/v/versions").json()["versions"]] == [4]
    learner, brain = learner_of(client, "v")
    assert brain.retrain_from is None and int(learner.class_counts[0]) == 0 and int(learner.class_counts.sum()) == 40
    assert all(p["label"] != "a" for p in predict(client, "v", xs))
    (row,) = client.get("/v1/brains/v/erasures").json()["erasures"]
    assert row["how"] == "retrained" and row["versions_deleted"] == [1, 2, 3] and row["selector"] == {"label": "a"}


def test_a_meta_trained_anml_brain_is_refused(client: TestClient) -> None:
    from tests.service.test_api import make_brain, post
    from tests.service.test_meta_train import ANML, meta_train

    make_brain(client, "m", strategy="anml", params=ANML)
    assert meta_train(client).json()["state"] == "succeeded"
    post(client, "m", "t1", *clusters(10, LABELS, seed=1))
    r = client.request("DELETE", "/v1/brains/m/samples", json={"task": "t1"})
    assert r.status_code == 422 and "meta-trained" in r.json()["detail"] and "anml" in r.json()["detail"]


def test_a_meta_trained_brain_that_cannot_downdate_is_refused(client: TestClient) -> None:
    r = client.post("/v1/brains", json={"name": "m", "input": {"kind": "vector", "shape": [8]}})
    assert r.status_code == 201
    xs, ys = clusters(10, LABELS, seed=1, dim=8)
    send(client, "m", "t1", [{"x": x.tolist(), "label": y} for x, y in zip(xs, ys)])
    rt = client.app.state.runtime
    with rt.db.session() as s:  # as if a meta-training had published it
        s.execute(update(Version).where(Version.number == 2).values(kind="meta"))
    r = client.request("DELETE", "/v1/brains/m/samples", json={"label": "a"})
    assert r.status_code == 422 and "meta-trained" in r.json()["detail"]
    assert client.get("/v1/brains/m/erasures").json()["erasures"] == []


@pytest.mark.parametrize("body", [{}, {"ids": []}, {"task": "t1", "label": "a"}, {"ids": "s1"}, {"what": 1}])
def test_a_selector_is_exactly_one_of_ids_task_label_source(client: TestClient, body: dict) -> None:
    image_brain(client, "b")
    r = client.request("DELETE", "/v1/brains/b/samples", json=body)
    assert r.status_code == 422, r.text


def test_nothing_matched_is_a_job_that_forgets_nothing(client: TestClient) -> None:
    image_brain(client, "b")
    first, _, _ = data()
    send(client, "b", "t1", first[:5])
    for body in ({"label": "zebra"}, {"task": "t9"}, {"ids": ["nope"]}, {"source": "bob"}):
        result = forget(client, "b", body)
        assert result["forgotten"] == 0 and result["versions_deleted"] == [] and result["version"] == 2
    assert client.request("DELETE", "/v1/brains/nobody/samples", json={"task": "t"}).status_code == 404


def test_unlearn_guards_class_counts_and_needs_a_mergeable_learner() -> None:
    learner = create_learner("plastic", input_dim=400, num_classes=3, seed=0, params={}, input_shape=[1, 20, 20])
    x, y = torch.rand(6, 400), torch.tensor([0, 0, 1, 1, 2, 2])
    learner.observe(x, y)
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    with pytest.raises(ValueError):
        learner.unlearn(torch.rand(3, 400), torch.tensor([0, 0, 0]))
    assert all(torch.equal(before[k], v) for k, v in learner.state_dict().items())
    learner.unlearn(x[:2], y[:2])
    assert learner.class_counts.tolist() == [0, 2, 2]
    sparse = create_learner("plastic", input_dim=8, num_classes=3, seed=0, params={})  # a vector: a sparse layer
    sparse.observe(torch.rand(3, 8), torch.tensor([0, 1, 2]))
    with pytest.raises(Unsupported):
        sparse.unlearn(torch.rand(1, 8), torch.tensor([0]))


def test_unlearning_takes_back_a_penalty_a_sleep_chose() -> None:
    """A sleep chose the penalty in use over a replay that held the samples (``use_ridge`` stands
    in for its choice here: a choice away from the first penalty needs thousands of samples):
    unlearning goes back to a new learner's, and then equals a learner that never saw them."""
    def make():
        return create_learner("plastic", input_dim=400, num_classes=3, seed=0, params={}, input_shape=[1, 20, 20])

    rng = np.random.default_rng(0)
    x, y = torch.from_numpy(rng.random((40, 400), dtype=np.float32)), torch.arange(40) % 3
    forgot, never = make(), make()
    forgot.observe(x, y)
    forgot.use_ridge(7.5)
    never.observe(x[10:], y[10:])
    forgot.unlearn(x[:10], y[:10])
    assert float(forgot.ridge_value) == float(never.ridge_value) == forgot.first_ridge
    probe = torch.from_numpy(rng.random((20, 400), dtype=np.float32))
    assert torch.allclose(forgot.predict(probe), never.predict(probe), atol=1e-4)


def test_a_version_whose_replay_snapshot_holds_them_goes_though_it_never_learned_them(client: TestClient) -> None:
    first, _, _ = data()
    image_brain(client, "b")
    send(client, "b", "t1", first[:25])  # v2
    send(client, "b", "t1", first[25:])  # v3
    assert client.post("/v1/brains/b/versions/2/promote").status_code == 200
    r = client.post("/v1/brains/b/sleep", params={"wait": True})  # v4: v2's learner, the live buffer's snapshot
    assert r.json()["result"]["version"] == 4
    result = forget(client, "b", {"ids": [s["id"] for s in first[25:]]})
    assert result["learned"] == 0 and result["forgotten"] == 25 and result["versions_deleted"] == [3, 4]
    assert [v["number"] for v in client.get("/v1/brains/b/versions").json()["versions"]] == [1, 2, 5]


def test_forgetting_needs_write_access_and_the_audit_names_the_key(tmp_path) -> None:
    from service.app import create_app
    from tests.service.test_auth import ADMIN, bearer, make_key, secured_settings

    with TestClient(create_app(secured_settings(tmp_path / "var"))) as api:
        r = api.post("/v1/brains", json={"name": "b", "input": IMAGE}, headers=ADMIN)
        assert r.status_code == 201, r.text
        reader = make_key(api, name="reader", brains={"b": "read"})["key"]
        writer = make_key(api, name="writer", brains={"b": "write"})
        body = {"source": "alice"}
        assert api.request("DELETE", "/v1/brains/b/samples", json=body).status_code == 401
        assert api.request("DELETE", "/v1/brains/b/samples", json=body, headers=bearer(reader)).status_code == 403
        assert api.get("/v1/brains/b/erasures", headers=bearer(reader)).status_code == 403
        r = api.request("DELETE", "/v1/brains/b/samples", params={"wait": True}, json=body,
                        headers=bearer(writer["key"]))
        assert r.status_code == 202 and r.json()["result"]["forgotten"] == 0, r.text
        (row,) = api.get("/v1/brains/b/erasures", headers=bearer(writer["key"])).json()["erasures"]
        assert (row["key"], row["key_id"], row["how"]) == ("writer", writer["id"], "nothing matched")
        assert len(api.get("/v1/brains/b/erasures", headers=ADMIN).json()["erasures"]) == 1
