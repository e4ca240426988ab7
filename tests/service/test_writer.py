"""One fenced writer per brain (issue 14): the lock lives as long as its holder, a holder that
lost it cannot publish, a job is never run twice at once, and no job's work grows with the
backlog."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from service import brains, schemas
from service.app import create_app
from service.jobs import JobBusy
from service.locks import BrainLockTimeout, Lease, LockLost, RedisLocks
from service.runtime import build_runtime
from service.tables import Brain, Job, Version, utcnow
from service.writer import locked_brain, writer
from tests.conftest import make_settings


@pytest.fixture
def rt(settings):
    runtime = build_runtime(settings, executor=False)
    yield runtime
    runtime.close()


@pytest.fixture
def redis_client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _brain(rt, name: str = "w") -> int:
    body = schemas.BrainCreate(name=name, input=schemas.InputSpec(kind="vector", shape=[4]))
    return brains.create_brain(rt, body=body).id


def _publish(rt, lease) -> int:
    with rt.db.session() as s:
        brain = locked_brain(s, lease)
        learner = rt.versions.load(brain, brain.current_version)
        return rt.versions.publish_over_current(s, brain, learner, kind="sleep", lease=lease,
                                                base=brain.current_version, stats={}).number


def _current(rt, brain_id: int) -> int:
    with rt.db.session(read_only=True) as s:
        return s.get(Brain, brain_id).current_version


@pytest.mark.integration
def test_a_holder_keeps_its_redis_lock_past_the_timeout(redis_client) -> None:
    """The lock expires after 1 s unless renewed; held for 2.5 s, nobody else gets it meanwhile."""
    locks = RedisLocks(redis_client, timeout=1.0)
    with locks.hold(101) as lease:
        time.sleep(2.5)
        assert not redis_client.lock("pb:lock:101", timeout=1, blocking_timeout=0.2, thread_local=False).acquire()
        assert not lease.lost
    assert redis_client.lock("pb:lock:101", timeout=1, blocking_timeout=0.2, thread_local=False).acquire()


@pytest.mark.integration
def test_a_lease_whose_lock_was_taken_is_lost_and_cannot_publish(settings, redis_url, redis_client) -> None:
    """The lock vanishes under its holder (expired during a stall, then taken): the heartbeat
    notices, and the holder's publish is refused; the version stays as it was."""
    rt = build_runtime(make_settings(settings.data_dir, redis_url=redis_url, lock_timeout_seconds=0.6),
                       executor=False)
    try:
        brain_id = _brain(rt, "lost")
        with writer(rt, brain_id) as lease:
            redis_client.delete(f"pb:lock:{brain_id}")
            deadline = time.monotonic() + 3
            while not lease.lost and time.monotonic() < deadline:
                time.sleep(0.05)
            assert lease.lost
            with pytest.raises(LockLost):
                _publish(rt, lease)
        assert _current(rt, brain_id) == 1
    finally:
        rt.close()


def test_a_lease_that_cannot_renew_for_the_locks_expiry_is_lost() -> None:
    """Redis out of reach (a partition): a renewal that fails is no proof the lock is gone, but once
    none succeeded for the lock's expiry, it is, whatever the holder can see."""
    fails = threading.Event()

    def renew() -> bool:
        if fails.is_set():
            raise ConnectionError("no route to host")
        return True

    lease = Lease(7, renew=renew, interval=0.1, expiry=0.5)
    lease.start()
    try:
        time.sleep(0.35)
        fails.set()
        time.sleep(0.3)
        assert not lease.lost  # one or two failed renewals: the lock may still be ours
        deadline = time.monotonic() + 2
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lease.lost
    finally:
        lease.stop()


@pytest.mark.integration
def test_a_writer_whose_lock_was_taken_over_cannot_write_the_replay_buffer(settings, redis_url, redis_client) -> None:
    """The Redis replay buffer is written under the writer's lock: once another holds it (this
    writer was cut off past the expiry), an offer or a restore is refused and changes nothing."""
    rt = build_runtime(make_settings(settings.data_dir, redis_url=redis_url, lock_timeout_seconds=5),
                       executor=False)
    try:
        brain_id = _brain(rt, "replay-guard")
        with rt.db.session(read_only=True) as s:
            brain = s.get(Brain, brain_id)
            s.expunge(brain)
        x = np.arange(12, dtype=np.float32).reshape(3, 4)
        rt.drop_replay(brain_id)  # the Redis db outlives the test's Postgres database and its brain ids
        with writer(rt, brain_id) as lease:
            buffer = rt.replay(brain, lease)
            buffer.add(x, [0, 1, 0])
            before = buffer.snapshot()
            redis_client.set(f"pb:lock:{brain_id}", b"another writer's token")  # taken over
            with pytest.raises(LockLost):
                buffer.add(x + 1, [1, 1, 1])
            with pytest.raises(LockLost):
                buffer.restore({"x": torch.zeros(0, 4), "y": torch.zeros(0, dtype=torch.long),
                                "seen": torch.tensor(0)})
            after = rt.replay(brain).snapshot()
            assert all(torch.equal(before[k], after[k]) for k in ("x", "y", "seen")) and int(after["seen"]) == 3
            redis_client.delete(f"pb:lock:{brain_id}")
    finally:
        rt.close()


def test_a_runner_that_comes_back_after_its_job_ended_changes_no_progress(rt) -> None:
    brain_id = _brain(rt, "progress")
    with rt.db.session() as s:
        s.add(Job(id="j-progress", brain_id=brain_id, kind="sleep", payload={}, events=[]))
    rt.jobs.start("j-progress")
    rt.jobs.progress("j-progress", 0.5, "half way")
    rt.jobs.finish("j-progress", result={"done": True})

    def seen() -> tuple:
        with rt.db.session(read_only=True) as s:
            job = s.get(Job, "j-progress")
            return job.state, job.progress, job.phase

    ended = seen()
    assert ended[:2] == ("succeeded", 1.0)
    rt.jobs.progress("j-progress", 0.2, "learning 1/5")  # a runner cut off from the brain, back late
    assert seen() == ended


def test_a_writer_overtaken_by_a_newer_fence_cannot_publish(rt) -> None:
    """Another writer took the brain (a newer fencing token in the row): the old holder's publish
    is refused in its own transaction; the new holder's goes through."""
    brain_id = _brain(rt)
    with writer(rt, brain_id) as old:
        with rt.db.session() as s:  # what a second holder does when it takes the lock
            s.execute(update(Brain).where(Brain.id == brain_id).values(writer_fence=Brain.writer_fence + 1))
        with pytest.raises(LockLost):
            _publish(rt, old)
    assert _current(rt, brain_id) == 1
    with writer(rt, brain_id) as new:
        assert new.fence == old.fence + 2
        assert _publish(rt, new) == 2
    with rt.db.session(read_only=True) as s:
        stats = s.scalar(select(Version.stats).where(Version.brain_id == brain_id, Version.number == 2))
    assert (stats["base"], stats["fence"]) == (1, new.fence)


def test_a_publish_on_top_of_a_version_that_is_no_longer_current_is_refused(rt) -> None:
    brain_id = _brain(rt)
    with writer(rt, brain_id) as lease:
        with rt.db.session() as s:
            brain = locked_brain(s, lease)
            learner = rt.versions.load(brain, 1)
            with pytest.raises(LockLost):
                rt.versions.publish_over_current(s, brain, learner, kind="sleep", lease=lease, base=0, stats={})


def test_a_job_running_with_a_live_heartbeat_is_not_started_twice(rt) -> None:
    brain_id = _brain(rt)
    rt.jobs.executor = type("Nothing", (), {"dispatch": lambda *a: None, "shutdown": lambda *a: None})()
    job_id = rt.jobs.submit("sleep", brain_id)
    assert rt.jobs.start(job_id).attempts == 1
    with pytest.raises(JobBusy):  # a redelivered message while the first runner lives
        rt.jobs.start(job_id)
    with rt.db.session() as s:  # the runner died: its heartbeat grows old
        s.execute(update(Job).where(Job.id == job_id).values(
            heartbeat_at=utcnow() - timedelta(seconds=rt.settings.lock_timeout_seconds + 1)))
    assert rt.jobs.start(job_id).attempts == 2


def test_wake_learns_a_big_backlog_in_bounded_jobs(tmp_path) -> None:
    settings = make_settings(tmp_path / "var", wake_max_samples=10)
    from service.db import upgrade

    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/brains", json={"name": "big", "input": {"kind": "vector", "shape": [2]}}).status_code == 201
        samples = [{"x": [float(i), 1.0], "label": i % 3} for i in range(25)]
        assert c.post("/v1/brains/big/samples", json={"task": "t", "samples": samples}).status_code == 202
        deadline = time.monotonic() + 30
        while c.get("/v1/brains/big").json()["samples_learned"] < 25:
            assert time.monotonic() < deadline, "the backlog was not learned"
            time.sleep(0.1)
        rt = c.app.state.runtime
        with rt.db.session(read_only=True) as s:
            wakes = s.scalars(select(Version).where(Version.kind == "wake").order_by(Version.number)).all()
    assert [v.stats["learned"] for v in wakes] == [10, 10, 5]
    assert [(v.stats["log_from"], v.log_position) for v in wakes] == [(0, 10), (10, 20), (20, 25)]


def test_promote_answers_503_with_retry_after_while_a_writer_holds_the_brain(tmp_path) -> None:
    settings = make_settings(tmp_path / "var", busy_wait_seconds=0.2)
    from service.db import upgrade

    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/brains", json={"name": "p", "input": {"kind": "vector", "shape": [2]}}).status_code == 201
        rt = c.app.state.runtime
        held, release = threading.Event(), threading.Event()

        def job() -> None:
            with rt.locks.hold(1):
                held.set()
                release.wait(10)

        thread = threading.Thread(target=job)
        thread.start()
        try:
            held.wait(5)
            started = time.monotonic()
            promote = c.post("/v1/brains/p/versions/1/promote")
            patch = c.patch("/v1/brains/p", json={"sleep_policy": {"every_samples": 10}})
            assert time.monotonic() - started < 3
        finally:
            release.set()
            thread.join()
        for r in (promote, patch):
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert "busy" in r.json()["detail"]
        assert c.post("/v1/brains/p/versions/1/promote").status_code == 200


def test_concurrent_writers_publish_in_fence_order(rt) -> None:
    """Writers in many threads: every published version's fence is above its base's."""
    brain_id = _brain(rt)
    errors: list[BaseException] = []

    def publish_some() -> None:
        try:
            for _ in range(5):
                with writer(rt, brain_id) as lease:
                    _publish(rt, lease)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=publish_some) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with rt.db.session(read_only=True) as s:
        versions = s.scalars(select(Version).where(Version.brain_id == brain_id).order_by(Version.number)).all()
    fences = [v.stats["fence"] for v in versions[1:]]
    assert fences == sorted(fences) and len(set(fences)) == len(fences)
    assert all(v.stats["base"] == v.number - 1 for v in versions[1:])
    with pytest.raises(BrainLockTimeout), rt.locks.hold(brain_id), rt.locks.hold(brain_id, wait=0.1):
        pass


def test_an_embedded_job_that_waited_too_long_for_its_brain_is_retried_not_failed(tmp_path) -> None:
    """A wake job finds its brain held for longer than the lock timeout: it is queued again and
    run once the brain is free (before, it failed, and its samples waited for the next batch)."""
    settings = make_settings(tmp_path / "var", lock_timeout_seconds=0.5)
    from service.db import upgrade

    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/brains", json={"name": "r", "input": {"kind": "vector", "shape": [2]}}).status_code == 201
        rt = c.app.state.runtime
        with rt.locks.hold(1):  # another writer, for longer than the lock timeout
            job_id = c.post("/v1/brains/r/samples", json={"task": "t", "samples": [
                {"x": [0.0, 1.0], "label": "a"}, {"x": [1.0, 0.0], "label": "b"}]}).json()["job"]
            time.sleep(1.5)
        deadline = time.monotonic() + 30
        while (job := c.get(f"/v1/jobs/{job_id}").json())["state"] != "succeeded":
            assert job["state"] != "failed" and time.monotonic() < deadline, job
            time.sleep(0.1)
        events = [e["event"] for e in job["events"]]
        assert c.get("/v1/brains/r").json()["samples_learned"] == 2
    assert events.count("retrying") >= 1 and events[-1] == "succeeded", events
