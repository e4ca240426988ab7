"""A sharded wake (issue 17) through the service's own code, on real Postgres and Redis (db
``TEST_REDIS_DB``) without a Celery worker: an executor that records the fan-out stands in for the
chord, and the test runs the shards one after the other and then the merge, as the Celery tasks
would (tests/integration/test_shards.py runs them on real worker processes).

- a sharded wake publishes what one worker's wake publishes: readout statistics, predictions and the
  replay buffer (offered the samples in log order and batches);
- when the brain's version moved between the shards and the merge, the shards' statistics are not
  published: the merge learns the log in one place instead;
- a brain whose strategy cannot merge (and the embedded default, whatever its settings) is never
  sharded.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from service import sharding
from service.app import create_app
from service.brains import ingest
from service.db import upgrade
from service.jobs import BrainBusy
from service.orchestration import merge_shards, run_job
from service.runtime import Runtime, build_runtime
from service.schemas import SamplesIn
from service.settings import Settings
from service.sharding import shard
from service.tables import Brain, Job, Sample, Version, utcnow
from tests.conftest import make_settings
from tests.integration.synthetic import Clusters

pytestmark = pytest.mark.integration

LABELS = ["a", "b", "c", "d"]
DIM = 144  # read as a 12 x 12 image by the conv eyes
EYES = {"layers": [{"type": "conv", "filters": 16, "size": 3, "pool": 2}]}  # mergeable; small for a CPU test


class Fans:
    """An executor that can fan out: it records what it is handed, and runs nothing."""

    fans_out = True

    def __init__(self) -> None:
        self.dispatched: list[tuple[str, str]] = []
        self.plans: list[tuple[str, dict]] = []

    def dispatch(self, job_id: str, kind: str) -> None:
        self.dispatched.append((job_id, kind))

    def fan_out(self, job_id: str, plan: dict) -> None:
        self.plans.append((job_id, plan))

    def shutdown(self) -> None:
        pass


@pytest.fixture
def settings(pg_url: str, redis_url: str, tmp_path: Path) -> Settings:
    upgrade(pg_url)
    return make_settings(tmp_path / "var", database_url=pg_url, redis_url=redis_url, device="cpu",
                         wake_shards=2, wake_shard_min_samples=50)


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = build_runtime(settings, executor=False, role="worker")
    runtime.jobs.executor = Fans()
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _brain(api: TestClient, rt: Runtime, name: str, *, strategy: str = "plastic", params: dict | None = None) -> int:
    body = {"name": name, "input": {"kind": "vector", "shape": [DIM]}, "strategy": strategy,
            "params": EYES if params is None else params}
    assert api.post("/v1/brains", json=body).status_code == 201
    for seed in (1, 2):  # a backlog of 2 x 4 x 40 samples in two batches of two tasks
        ingest(rt, name=name, body=SamplesIn(task=f"t{seed}", samples=Clusters(LABELS, dim=DIM, seed=3).samples(
            LABELS, 40, seed=seed)))
    with rt.db.session(read_only=True) as s:
        return s.scalar(select(Brain.id).where(Brain.name == name))


def _job(rt: Runtime, job_id: str) -> Job:
    with rt.db.session(read_only=True) as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def _wake(rt: Runtime, brain_id: int) -> str:
    job_id = rt.jobs.submit("wake", brain_id, {"samples": 320})
    run_job(rt, job_id)
    return job_id


def _sharded(rt: Runtime, brain_id: int, *, pieces: int = 0) -> tuple[str, dict, list[dict]]:
    """A wake job that planned shards, and the shards' answers, run here one after the other: the
    first claims every piece but the last ``pieces`` (a worker that went on to other work), which
    the second claims."""
    job_id = _wake(rt, brain_id)
    assert _job(rt, job_id).state == "running"  # handed to its shards; the merge will end it
    planned = [plan for job, plan in rt.jobs.executor.plans if job == job_id]
    assert len(planned) == 1
    plan = planned[0]
    claim = sharding._claim
    left = len(plan["pieces"]) - pieces

    def first_claims(rt: Runtime, plan: dict) -> int | None:
        nonlocal left
        left -= 1
        return claim(rt, plan) if left >= 0 else None

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sharding, "_claim", first_claims)
        answers = [shard(rt, job_id, plan, 0)]
    return job_id, plan, answers + [shard(rt, job_id, plan, i) for i in range(1, plan["shards"])]


def _state(rt: Runtime, brain_id: int) -> tuple[Brain, dict[str, torch.Tensor], Version]:
    with rt.db.session(read_only=True) as s:
        brain = s.get(Brain, brain_id)
        version = s.scalar(select(Version).where(Version.brain_id == brain_id, Version.number == brain.current_version))
        s.expunge_all()
    return brain, rt.versions.load(brain, brain.current_version).state_dict(), version


def _replay(rt: Runtime, brain_id: int) -> tuple[int, dict[bytes, bytes], dict[bytes, bytes]]:
    prefix = f"pb:replay:{brain_id}"
    return (int(rt.redis.get(f"{prefix}:seen")), rt.redis.hgetall(f"{prefix}:x"), rt.redis.hgetall(f"{prefix}:y"))


def test_a_sharded_wake_publishes_what_one_worker_publishes(api, rt, settings):
    one = _brain(api, rt, "shards-one")
    many = _brain(api, rt, "shards-many")
    rt.settings = settings.model_copy(update={"wake_shards": 1})
    assert _job(rt, _wake(rt, one)).result == {"learned": 320, "version": 2, "left": 0}
    rt.settings = settings

    job_id, plan, answers = _sharded(rt, many, pieces=1)
    assert [r[2] for r in plan["pieces"]] == [160, 160] and (plan["shards"], plan["samples"]) == (2, 320)
    assert [a["pieces"] for a in answers] == [[0], [1]]
    assert all("key" in a and rt.redis.ttl(a["key"]) > 0 for a in answers)
    result = merge_shards(rt, job_id, plan, answers)
    assert result == {"learned": 320, "version": 2, "left": 0, "shards": 2}
    job = _job(rt, job_id)
    assert (job.state, job.result) == ("succeeded", result)
    assert not any(rt.redis.exists(a["key"]) for a in answers)  # merged, then dropped

    (b1, s1, v1), (b2, s2, v2) = _state(rt, one), _state(rt, many)
    assert (b1.samples_learned, v1.tasks_seen) == (320, 2)
    assert (b2.samples_learned, b2.samples_since_sleep, v2.tasks_seen) == (320, 320, 2)
    assert v2.stats["shards"] == 2 and "shards" not in v1.stats
    for name in ("stat_a", "stat_b"):
        assert torch.allclose(s1[name], s2[name], rtol=1e-5, atol=1e-4), name
    assert torch.equal(s1["class_counts"], s2["class_counts"])
    assert float((s1["w_core"] - s2["w_core"]).norm() / s1["w_core"].norm()) < 1e-3
    assert _replay(rt, one) == _replay(rt, many)  # the same samples kept, in the same slots

    probe, _ = Clusters(LABELS, dim=DIM, seed=3).inputs(LABELS, 10, seed=9)
    p1 = api.post("/v1/brains/shards-one/predict", json={"inputs": probe}).json()["predictions"]
    p2 = api.post("/v1/brains/shards-many/predict", json={"inputs": probe}).json()["predictions"]
    assert [p["label"] for p in p1] == [p["label"] for p in p2]
    assert all(p["confidence"] == pytest.approx(q["confidence"], abs=1e-3) for p, q in zip(p1, p2))


def test_a_plans_ranges_cut_the_backlog_into_consecutive_shards(api, rt, settings):
    brain_id = _brain(api, rt, "shards-cuts")
    rt.settings = settings.model_copy(update={"wake_shards": 3})
    with rt.db.session(read_only=True) as s:
        ids = list(s.scalars(select(Sample.id).where(Sample.brain_id == brain_id).order_by(Sample.id)))
        brain = s.get(Brain, brain_id)
        s.expunge(brain)
    plan = sharding.plan(rt, brain, len(ids))
    assert (plan["start"], plan["end"], plan["samples"]) == (0, ids[-1], 320)
    assert plan["pieces"] == [[0, ids[106], 107], [ids[106], ids[212], 106], [ids[212], ids[319], 107]]
    rt.settings = settings.model_copy(update={"wake_shards": 3, "wake_max_samples": 200})  # the job's cap
    plan = sharding.plan(rt, brain, len(ids))
    assert plan["pieces"] == [[0, ids[66], 67], [ids[66], ids[132], 66], [ids[132], ids[199], 67]]
    assert (plan["end"], plan["samples"], plan["pending"]) == (ids[199], 200, 320)


def test_a_plan_reads_whether_the_learner_merges_from_its_versions_record(api, rt):
    """The plan loads no learner: a version's publish records ``mergeable``; a version published
    before that record is loaded to ask."""
    brain_id = _brain(api, rt, "shards-record")
    with rt.db.session() as s:
        brain = s.get(Brain, brain_id)
        version = s.scalar(select(Version).where(Version.brain_id == brain_id, Version.number == 1))
        assert version.stats["mergeable"] is True
        s.expunge(brain)
    assert sharding.plan(rt, brain, 320) is not None

    def record(stats: dict) -> None:
        with rt.db.session() as s:
            s.execute(update(Version).where(Version.brain_id == brain_id, Version.number == 1).values(stats=stats))

    record({**version.stats, "mergeable": False})  # what the record says goes
    assert sharding.plan(rt, brain, 320) is None
    record({k: v for k, v in version.stats.items() if k != "mergeable"})  # an older version: asked
    assert sharding.plan(rt, brain, 320) is not None


def test_shards_of_a_version_that_is_no_longer_current_are_not_published(api, rt):
    brain_id = _brain(api, rt, "shards-moved")
    # something learned and a snapshot taken first, so that a sleep has something to change
    job_id, plan, answers = _sharded(rt, brain_id)
    merge_shards(rt, job_id, plan, answers)
    for seed in (3, 4):
        ingest(rt, name="shards-moved", body=SamplesIn(task="t3", samples=Clusters(LABELS, dim=DIM, seed=3).samples(
            LABELS, 40, seed=seed)))
    job_id, plan, answers = _sharded(rt, brain_id)
    assert plan["base"] == 2 and all("key" in a for a in answers[:1])

    slept = rt.jobs.submit("sleep", brain_id)  # another writer publishes between the shards and the merge
    with pytest.raises(BrainBusy):  # not while the wake's shards beat its heartbeat (issue 17: one job a brain)
        run_job(rt, slept)
    with rt.db.session() as s:  # but once its heartbeat is older than the lock timeout (the wake looks dead)
        s.execute(update(Job).where(Job.id == job_id).values(
            heartbeat_at=utcnow() - timedelta(seconds=rt.settings.lock_timeout_seconds + 1)))
    assert run_job(rt, slept)["version"] == 3
    # a shard that starts now refuses at once
    late = shard(rt, job_id, plan, 0)
    assert "key" not in late and "no longer current" in late["refused"]

    result = merge_shards(rt, job_id, plan, answers)
    assert "moved on" in result["shards_refused"] and "shards" not in result
    assert (result["learned"], result["version"]) == (320, 4)
    brain, state, version = _state(rt, brain_id)
    assert version.stats["base"] == 3 and "shards" not in version.stats  # learned in one place, on the sleep
    assert version.stats["loss"] is not None
    assert brain.samples_learned == 640 and brain.current_version == 4
    assert int(state["class_counts"].sum()) == 640
    assert not any(rt.redis.exists(a["key"]) for a in answers if "key" in a)


def test_a_shard_answer_that_is_missing_makes_the_merge_learn_in_one_place(api, rt):
    brain_id = _brain(api, rt, "shards-lost")
    job_id, plan, answers = _sharded(rt, brain_id, pieces=1)
    rt.redis.delete(answers[1]["key"])  # expired, or Redis lost it
    result = merge_shards(rt, job_id, plan, answers)
    assert "gone" in result["shards_refused"] and result["learned"] == 320
    assert merge_shards(rt, job_id, plan, answers) is None  # a redelivered callback: the job has ended


def test_the_shards_claim_pieces_until_none_is_left_and_a_lost_claim_is_not_merged(api, rt, settings, monkeypatch):
    """Shards claim the backlog's pieces one at a time: one that finds none left stores nothing and
    the merge publishes what one worker would; pieces claimed by a shard that was lost (its worker
    died: its redelivered task finds none left) make the merge learn the log in one place."""
    monkeypatch.setattr(sharding, "PIECE_ROWS", 80)
    one = _brain(api, rt, "pieces-one")
    rt.settings = settings.model_copy(update={"wake_shards": 1})
    _wake(rt, one)
    rt.settings = settings
    brain_id = _brain(api, rt, "pieces")
    job_id, plan, answers = _sharded(rt, brain_id)  # the first shard claims all 4
    assert len(plan["pieces"]) == 4 and [a["pieces"] for a in answers] == [[0, 1, 2, 3], []]
    assert "key" not in answers[1] and answers[1]["samples"] == 0
    result = merge_shards(rt, job_id, plan, answers)
    assert result == {"learned": 320, "version": 2, "left": 0, "shards": 2}
    (_, s1, _), (_, s2, version) = _state(rt, one), _state(rt, brain_id)
    assert torch.allclose(s1["stat_a"], s2["stat_a"], rtol=1e-5, atol=1e-4) and version.stats["shard_pieces"] == [4, 0]
    assert _replay(rt, one) == _replay(rt, brain_id)

    lost = _brain(api, rt, "pieces-lost")
    job_id = _wake(rt, lost)
    plan = rt.jobs.executor.plans[-1][1]
    assert sharding._claim(rt, plan) == 0  # a shard claimed piece 0, and its worker died
    answers = [shard(rt, job_id, plan, 0), shard(rt, job_id, plan, 1)]  # the redelivered shard too
    assert sorted(p for a in answers for p in a["pieces"]) == [1, 2, 3]
    result = merge_shards(rt, job_id, plan, answers)
    assert "pieces of the backlog are missing" in result["shards_refused"] and result["learned"] == 320
    assert not any(rt.redis.exists(a["key"]) for a in answers if "key" in a)


@pytest.mark.parametrize(("strategy", "params"), [
    ("plastic", {}),  # the vector default: one sparse layer, whose code learns
    ("plastic", {**EYES, "memory_capacity": 40}),
    ("replay", {"hidden": 32}),
])
def test_a_brain_whose_wake_cannot_merge_is_not_sharded(api, rt, strategy, params):
    name = f"no-shards-{strategy}-{len(params)}"
    brain_id = _brain(api, rt, name, strategy=strategy, params=params)
    job = _job(rt, _wake(rt, brain_id))
    assert (job.state, job.result) == ("succeeded", {"learned": 320, "version": 2, "left": 0})
    assert rt.jobs.executor.plans == []


def test_the_embedded_default_never_shards(tmp_path: Path):
    settings = make_settings(tmp_path / "var", wake_shards=4, wake_shard_min_samples=10)
    upgrade(settings.database_url)
    data = Clusters(LABELS, dim=DIM, seed=3)
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/brains", json={"name": "e", "input": {"kind": "vector", "shape": [DIM]},
                                          "params": EYES}).status_code == 201
        body = c.post("/v1/brains/e/samples", params={"wait": "true"},
                      json={"task": "t1", "samples": data.samples(LABELS, 40, seed=1)}).json()
        assert body["state"] == "succeeded" and body["version"] == 2
        versions = c.get("/v1/brains/e/versions").json()["versions"]
        assert "shards" not in versions[-1]["stats"] and versions[-1]["stats"]["learned"] == 160
