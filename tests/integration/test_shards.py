"""A sharded wake (issue 17) on the full stack for real: Postgres, Redis (db ``TEST_REDIS_DB``) and
``brain worker`` processes. The same backlog is learned by one worker without shards and by two
worker processes in shards (a Celery chord whose shards hand their statistics over Redis): the two
brains answer the same predictions, hold the same readout and the same replay buffer.
(tests/service/test_sharding.py covers a moved base, lost statistics and brains that never shard.)"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from service.tables import Brain, Version
from tests.integration.synthetic import Clusters
from tests.integration.test_full_stack import Stack, _learn, _ok, _predict, shared  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
LABELS = ["a", "b", "c", "d"]
DIM = 144  # read as a 12 x 12 image by the conv eyes
EYES = {"layers": [{"type": "conv", "filters": 16, "size": 3, "pool": 2}]}


def _learned(stack: Stack, name: str, samples: list[dict], probe: list[dict]) -> dict:
    """Create ``name``, learn ``samples`` in one POST (wait=true); what the test compares."""
    with stack.api() as api:
        _ok(api.post("/v1/brains", json={"name": name, "input": {"kind": "vector", "shape": [DIM]}, "params": EYES}), 201)
        body = _learn(api, name, "t1", samples)
        assert body["version"] == 2, body
        version, predictions = _predict(api, name, probe)
        assert version == 2
        rt = api.app.state.runtime
        with rt.db.session(read_only=True) as s:
            brain = s.scalar(select(Brain).where(Brain.name == name))
            row = s.scalar(select(Version).where(Version.brain_id == brain.id, Version.number == 2))
            s.expunge_all()
        prefix = f"pb:replay:{brain.id}"
        return {"predictions": predictions, "stats": row.stats, "job": _ok(api.get(f"/v1/jobs/{body['job']}")),
                "state": rt.versions.load(brain, 2).state_dict(),
                "replay": (int(stack.redis.get(f"{prefix}:seen")), stack.redis.hgetall(f"{prefix}:x"),
                           stack.redis.hgetall(f"{prefix}:y"))}


def test_a_backlog_learned_in_shards_by_two_workers_equals_one_workers(shared, tmp_path: Path, request) -> None:  # noqa: F811
    data = Clusters(LABELS, dim=DIM, seed=3)
    samples = data.samples(LABELS, 150, seed=1)  # 600
    probe, _ = data.inputs(LABELS, 10, seed=9)
    logs = []
    request.node.service_logs = lambda: [entry for stack in logs for entry in stack.logs()]

    one = Stack(tmp_path / "one", *shared)
    logs.append(one)
    (tmp_path / "one").mkdir()
    try:
        one.start_worker()
        alone = _learned(one, f"shards-one-{RUN}", samples, probe)
    finally:
        one.close()

    many = Stack(tmp_path / "many", *shared)
    logs.append(many)
    (tmp_path / "many").mkdir()
    many.configure(wake_shards=2, wake_shard_min_samples=100)
    try:
        many.start_worker()
        many.start_worker()
        sharded = _learned(many, f"shards-many-{RUN}", samples, probe)
    finally:
        many.close()

    assert "shards" not in alone["stats"] and alone["job"]["result"] == {"learned": 600, "version": 2, "left": 0}
    assert sharded["job"]["result"] == {"learned": 600, "version": 2, "left": 0, "shards": 2}
    assert sharded["stats"]["shards"] == 2 and len(sharded["stats"]["shard_workers"]) == 2
    assert sharded["job"]["state"] == "succeeded"
    a, b = alone["state"], sharded["state"]
    for name in ("stat_a", "stat_b"):
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-4), name
    assert torch.equal(a["class_counts"], b["class_counts"]) and int(a["class_counts"].sum()) == 600
    assert float((a["w_core"] - b["w_core"]).norm() / a["w_core"].norm()) < 1e-3
    p, q = alone["predictions"], sharded["predictions"]
    assert [x["label"] for x in p] == [x["label"] for x in q]
    assert all(x["confidence"] == pytest.approx(y["confidence"], abs=1e-3) for x, y in zip(p, q))
    assert alone["replay"] == sharded["replay"]  # 600 offered to a buffer of 500, in the same order
    assert alone["replay"][0] == 600 and len(alone["replay"][2]) == 500
