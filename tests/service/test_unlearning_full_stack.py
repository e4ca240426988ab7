"""Exact unlearning on the full stack's stores: Postgres (log, versions, blobs in the database) and
the Redis replay store (db ``TEST_REDIS_DB``); jobs run in the test (as a Celery worker would run
them): the Redis buffer is purged, the "forget" version's snapshot holds none of the samples (a
flushed Redis is restored from it), the deleted versions' blobs are gone from the database, and the
erasure names the caller's key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from bench.unlearn import Recorder
from service import unlearning
from service.auth import Principal
from service.brains import create_brain, ingest
from service.db import upgrade
from service.orchestration import _ensure_replay, run_job
from service.runtime import Runtime, build_runtime
from service.schemas import BrainCreate, ForgetIn, SamplesIn
from service.settings import Settings
from service.tables import Brain, Erasure, Job
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def rt(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[Runtime]:
    upgrade(pg_url)
    settings: Settings = make_settings(tmp_path / "var", database_url=pg_url, redis_url=redis_url, device="cpu",
                                       wake_shards=1)
    runtime = build_runtime(settings, executor=False, role="worker")
    runtime.jobs.executor = Recorder()  # runs nothing: the test runs the jobs
    try:
        yield runtime
    finally:
        runtime.close()


def _brain(rt: Runtime) -> Brain:
    with rt.db.session(read_only=True) as s:
        brain = s.scalar(select(Brain).where(Brain.name == "forget-stack"))
        s.expunge(brain)
    return brain


def _redis_inputs(rt: Runtime, brain_id: int) -> set[bytes]:
    return set(rt.redis.hgetall(f"pb:replay:{brain_id}:x").values())


def test_the_redis_replay_store_and_database_blobs_are_purged(rt: Runtime) -> None:
    create_brain(rt, body=BrainCreate.model_validate({"name": "forget-stack", "input": {"kind": "image", "shape": [1, 20, 20]}}))
    rng = np.random.default_rng(0)
    xs = rng.random((60, 400), dtype=np.float32)
    sources = ["alice" if i % 5 == 0 else "bob" for i in range(60)]
    for start in (0, 30):  # two wakes: versions 2 and 3
        ingest(rt, name="forget-stack", body=SamplesIn.model_validate({"task": "t", "samples": [
            {"x": xs[i].tolist(), "label": i % 3, "source": sources[i]} for i in range(start, start + 30)]}))
        run_job(rt, rt.jobs.submit("wake", _brain(rt).id, {}))
    brain = _brain(rt)
    alice = {xs[i].astype("<f4").tobytes() for i in range(60) if sources[i] == "alice"}
    assert alice <= _redis_inputs(rt, brain.id)

    job_id = unlearning.submit(rt, name="forget-stack", body=ForgetIn(source="alice"),
                               caller=Principal(name="key 'ops'", key_id=7))
    run_job(rt, job_id)
    with rt.db.session(read_only=True) as s:
        result = s.get(Job, job_id).result
        erasure = s.scalar(select(Erasure).where(Erasure.job == job_id))
    assert result["forgotten"] == 12 and result["how"] == "downdated" and result["replay_removed"] == 12
    assert result["version"] == 4 and result["versions_deleted"] == [2, 3]
    assert (erasure.key_id, erasure.key_name, erasure.selector, erasure.rows) == (7, None, {"source": "alice"}, 12)  # no such key row
    assert not alice & _redis_inputs(rt, brain.id) and len(_redis_inputs(rt, brain.id)) == 48
    assert int(rt.redis.get(f"pb:replay:{brain.id}:seen")) == 48
    for number in (2, 3):
        assert rt.versions.blobs.keys(rt.versions.folder(brain.id, number)) == []

    rt.redis.delete(*(f"pb:replay:{brain.id}:{k}" for k in ("x", "y", "seen")))  # a lost Redis
    brain = _brain(rt)
    buffer = rt.replay(brain)
    _ensure_replay(rt, brain, buffer)
    assert len(buffer) == 48 and not alice & _redis_inputs(rt, brain.id)
