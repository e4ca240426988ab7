"""Orchestration: idempotent wake from the sample log, sleep policies, recovery."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from service.orchestration import SLEEP_BUDGET_RANGE, sleep_budget, wake
from service.scheduling import recover
from service.tables import Job
from tests.conftest import make_settings
from tests.service.test_api import clusters, make_brain, post


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def versions(client: TestClient, name: str = "b") -> list[dict]:
    return client.get(f"/v1/brains/{name}/versions").json()["versions"]


def test_a_rerun_wake_job_learns_nothing_twice(client: TestClient) -> None:
    make_brain(client)
    xs, ys = clusters(30, ["a", "b"], seed=1)
    job_id = post(client, "b", "t", xs, ys).json()["job"]
    rt = client.app.state.runtime
    with rt.db.session() as s:
        job = s.get(Job, job_id)
    assert wake(rt, job) == {"learned": 0, "version": 2}  # redelivered: nothing left to learn
    assert client.get("/v1/brains/b").json()["samples_learned"] == 30
    assert len(versions(client)) == 2


def test_every_samples_policy_triggers_sleep(client: TestClient) -> None:
    make_brain(client, sleep_policy={"every_samples": 50})
    xs, ys = clusters(30, ["a", "b"], seed=1)
    post(client, "b", "t", xs, ys)
    time.sleep(0.5)
    assert [v["kind"] for v in versions(client)] == ["init", "wake"]
    post(client, "b", "t", *clusters(30, ["a", "b"], seed=2))
    wait_until(lambda: versions(client)[-1]["kind"] == "sleep")
    assert versions(client)[-1]["stats"]["reason"] == "every_samples"
    assert client.get("/v1/brains/b").json()["samples_learned"] == 60


def test_every_seconds_policy_triggers_sleep(client: TestClient) -> None:
    make_brain(client, sleep_policy={"every_seconds": 1})
    post(client, "b", "t", *clusters(20, ["a", "b"], seed=1))
    wait_until(lambda: versions(client)[-1]["kind"] == "sleep", timeout=15)
    assert versions(client)[-1]["stats"]["reason"] == "schedule"
    n = len(versions(client))
    time.sleep(1.5)  # nothing new learned: no further sleep
    assert len(versions(client)) == n


def test_recovery_learns_acknowledged_samples(client: TestClient) -> None:
    """Samples in the log that no job learned (the process died first) are learned on restart."""
    make_brain(client)
    rt = client.app.state.runtime
    from service import brains, schemas

    xs, ys = clusters(12, ["a", "b"], seed=1)
    body = schemas.SamplesIn(task="t", samples=[schemas.SampleIn(x=x.tolist(), label=y) for x, y in zip(xs, ys)])
    brains.ingest(rt, name="b", body=body)  # acknowledged, but no job submitted
    assert client.get("/v1/brains/b").json()["samples_pending"] == 12
    jobs = recover(rt, orphaned_jobs=False)
    assert len(jobs) == 1
    wait_until(lambda: client.get("/v1/brains/b").json()["samples_pending"] == 0)
    assert client.get("/v1/brains/b").json()["samples_learned"] == 12


def test_sleep_on_empty_brain_is_skipped(client: TestClient) -> None:
    make_brain(client)
    r = client.post("/v1/brains/b/sleep", params={"wait": True}).json()
    assert r["state"] == "succeeded" and r["result"]["skipped"] == "nothing learned yet"
    assert len(versions(client)) == 1


def test_the_sleep_budget_follows_what_was_learned_unless_the_policy_sets_it() -> None:
    low, high = SLEEP_BUDGET_RANGE
    assert sleep_budget({}, 10) == low
    assert sleep_budget({}, low + 500) == low + 500
    assert sleep_budget({}, 10 * high) == high
    assert sleep_budget({"budget": 7}, 10 * high) == 7


def test_a_sleep_rehearses_its_budget(client: TestClient) -> None:
    make_brain(client, "r", strategy="replay", params={"hidden": 16, "sleep_share": 1.0})  # all of it
    post(client, "r", "t", *clusters(30, ["a", "b"], seed=1))
    first = client.post("/v1/brains/r/sleep", params={"wait": True}).json()["result"]
    assert first["samples"] == SLEEP_BUDGET_RANGE[0]  # 30 learned: the floor
    client.patch("/v1/brains/r", json={"sleep_policy": {"budget": 300}})
    post(client, "r", "t", *clusters(30, ["a", "b"], seed=2))
    second = client.post("/v1/brains/r/sleep", params={"wait": True}).json()["result"]
    assert second["samples"] == 300


def test_a_brain_without_a_replay_buffer_sleeps_on_its_own_memory(client: TestClient) -> None:
    # An empty buffer hands the learner an empty replay of the brain's width, not a [0, 0] one.
    make_brain(client, "r0", strategy="replay", params={"hidden": 16, "sleep_share": 1.0},
               replay={"size": 0, "policy": "reservoir"})
    post(client, "r0", "t", *clusters(30, ["a", "b"], seed=1))
    job = client.post("/v1/brains/r0/sleep", params={"wait": True}).json()
    assert job["state"] == "succeeded", job
    assert job["result"]["samples"] == SLEEP_BUDGET_RANGE[0]  # rehearsed from its own memory


class _Held:
    """An executor that runs nothing until told: jobs stay queued."""

    def __init__(self) -> None:
        self.dispatched: list[str] = []

    def dispatch(self, job_id: str, kind: str) -> None:
        self.dispatched.append(job_id)

    def shutdown(self) -> None:
        pass


def test_posts_join_a_queued_wake_job_instead_of_queueing_one_each(client: TestClient) -> None:
    make_brain(client)
    rt = client.app.state.runtime
    real, held = rt.jobs.executor, _Held()
    rt.jobs.executor = held
    try:
        ids = [post(client, "b", "t", *clusters(10, ["a", "b"], seed=i), wait=False).json()["job"]
               for i in range(4)]
        assert len(set(ids)) == 1 and held.dispatched == ids[:1]
        with rt.db.session() as s:
            job = s.get(Job, ids[0])
            assert job.payload["samples"] == 40
            job.state = "running"  # once it runs, it may have read the log: a new job is needed
        later = post(client, "b", "t", *clusters(10, ["a", "b"], seed=9), wait=False).json()["job"]
        assert later != ids[0] and held.dispatched == [ids[0], later]
    finally:
        rt.jobs.executor = real
    with rt.db.session() as s:
        s.get(Job, ids[0]).state = "queued"
    for job_id in held.dispatched:  # now run them: every sample is learned once
        real.dispatch(job_id, "wake")
    wait_until(lambda: all(client.get(f"/v1/jobs/{j}").json()["state"] == "succeeded" for j in held.dispatched))
    assert sum(client.get(f"/v1/jobs/{j}").json()["result"]["learned"] for j in held.dispatched) == 50
    assert client.get("/v1/brains/b").json()["samples_learned"] == 50


def test_in_process_jobs_run_at_a_lower_priority_than_serving() -> None:
    import os
    import threading

    from service.jobs import InProcessJobs

    seen: list[int] = []
    jobs = InProcessJobs(lambda job_id: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
    jobs.dispatch("job", "wake")
    jobs.shutdown()
    assert seen == [min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)]


def test_celery_job_threads_run_at_the_configured_lower_priority(tmp_path) -> None:
    import os
    import threading

    from workers.tasks import _ProcessRuntime

    def priority_after_get(nice: int) -> int:
        seen: list[int] = []

        def job() -> None:
            runtime = _ProcessRuntime(make_settings(tmp_path / f"var{nice}", job_nice=nice))
            runtime._rt, runtime._pid = object(), os.getpid()  # no runtime to build: only the priority
            runtime.get()
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

        thread = threading.Thread(target=job)
        thread.start()
        thread.join()
        return seen[0]

    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert priority_after_get(0) == base
    assert priority_after_get(7) == min(19, base + 7)


def test_a_jobs_record_holds_its_events_in_order(client: TestClient) -> None:
    make_brain(client, "b")
    x, y = clusters(20, ["a", "b"], seed=0)
    job_id = post(client, "b", "t1", x, y).json()["job"]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert [e["event"] for e in job["events"]] == ["queued", "started", "succeeded"]
    assert job["attempts"] == 1 and job["events"][1]["attempt"] == 1
    assert all(e["by"].startswith("api@") for e in job["events"])  # the embedded executor
    stamps = [e["at"] for e in job["events"]]
    assert stamps == sorted(stamps)

    from service.jobs import MAX_EVENTS

    rt = client.app.state.runtime
    for i in range(MAX_EVENTS + 5):  # e.g. a message redelivered again and again: bounded
        rt.jobs.event(job_id, "received", n=i)
    events = client.get(f"/v1/jobs/{job_id}").json()["events"]
    assert len(events) == MAX_EVENTS and events[0]["event"] == "queued" and events[-1]["n"] == MAX_EVENTS + 4


def test_a_failed_job_records_why(client: TestClient, monkeypatch) -> None:
    import service.orchestration

    make_brain(client, "b")
    x, y = clusters(20, ["a", "b"], seed=0)
    post(client, "b", "t1", x, y)

    def broken(rt, job):
        raise RuntimeError("the disk is full")

    monkeypatch.setitem(service.orchestration.__dict__, "sleep", broken)
    job_id = client.post("/v1/brains/b/sleep").json()["job"]
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["state"] == "failed")
    events = client.get(f"/v1/jobs/{job_id}").json()["events"]
    assert [e["event"] for e in events] == ["queued", "started", "failed"]
    assert "the disk is full" in events[-1]["error"]


def test_a_due_sleep_names_its_policy_and_a_lost_queued_one_is_sent_again(settings) -> None:
    """maybe_sleep: the reason is the policy that made the sleep due; a queued sleep is joined, and
    an executor that can lose messages gets it again once it waited longer than the lock timeout
    (before, a sleep queued by an API that died before sending it held every later sleep back)."""
    from datetime import timedelta

    from sqlalchemy import update

    from service import brains, schemas
    from service.runtime import build_runtime
    from service.scheduling import maybe_sleep
    from service.tables import Brain, utcnow

    rt = build_runtime(settings, executor=False)
    try:
        sent: list[str] = []
        rt.jobs.executor = type("Lossy", (), {"redispatch_joined": True, "shutdown": lambda self: None,
                                              "dispatch": lambda self, job_id, kind: sent.append(job_id)})()
        body = schemas.BrainCreate(name="s", input=schemas.InputSpec(kind="vector", shape=[2]),
                                   sleep_policy=schemas.SleepPolicy(every_seconds=60))
        brain_id = brains.create_brain(rt, body=body).id
        with rt.db.session() as s:
            s.execute(update(Brain).where(Brain.id == brain_id).values(
                samples_since_sleep=5, created_at=utcnow() - timedelta(seconds=61)))
        first = maybe_sleep(rt, brain_id)
        with rt.db.session(read_only=True) as s:
            assert s.get(Job, first).payload["reason"] == "schedule"
        assert maybe_sleep(rt, brain_id) == first and sent == [first]  # joined, not sent twice at once
        with rt.db.session() as s:
            s.execute(update(Job).where(Job.id == first).values(
                created_at=utcnow() - timedelta(seconds=rt.settings.lock_timeout_seconds + 1)))
        assert maybe_sleep(rt, brain_id) == first and sent == [first, first]
    finally:
        rt.close()


def test_a_new_brain_never_gets_the_trained_learner_of_a_deleted_one(settings) -> None:
    """SQLite reuses the id of a deleted brain: the learner a process kept from training the old
    brain must not be handed to the new one (before, the cache was keyed by id and version)."""
    from service import brains, schemas
    from service.runtime import build_runtime
    from service.tables import Brain

    rt = build_runtime(settings, executor=False)
    try:
        rt.jobs.executor = type("Nothing", (), {"dispatch": lambda *a: None, "shutdown": lambda *a: None})()

        def create(strategy: str) -> int:
            body = schemas.BrainCreate(name="same", input=schemas.InputSpec(kind="vector", shape=[4]), strategy=strategy)
            return brains.create_brain(rt, body=body).id

        old = create("plastic")
        job = rt.jobs.start(rt.jobs.submit("wake", old))
        assert wake(rt, job)["learned"] == 0  # the old brain's learner is kept, as of version 1
        brains.delete_brain(rt, name="same")
        new = create("finetune")
        assert new == old  # the id was reused
        with rt.db.session(read_only=True) as s:
            brain = s.get(Brain, new)
            s.expunge(brain)
        learner = rt.training.checkout(rt.versions, brain, rt.device)
        assert type(learner).__name__ == type(rt.versions.load(brain, 1)).__name__ != "Plastic"
    finally:
        rt.close()


def test_after_an_executor_died_its_queued_jobs_run_and_its_running_ones_fail(client: TestClient) -> None:
    """Recovery (embedded: a restart, or a job process that died) hands a job that was queued but
    never started to the executor that replaces the dead one: a job accepted is not failed for
    having been dispatched a moment too early. A job that was running is failed (interrupted)."""
    make_brain(client)
    post(client, "b", "t", *clusters(20, ["a", "b"], seed=1))
    rt = client.app.state.runtime
    live, rt.jobs.executor = rt.jobs.executor, _Held()  # the executor that dies with its jobs
    try:
        queued = client.post("/v1/brains/b/sleep").json()["job"]
        running = rt.jobs.submit("sleep", rt_brain_id(rt, "b"), {"reason": "test"})
        assert rt.jobs.start(running) is not None  # started by the executor that died
    finally:
        rt.jobs.executor = live
    recover(rt, orphaned_jobs=True, reason="interrupted: the job process died")
    wait_until(lambda: client.get(f"/v1/jobs/{queued}").json()["state"] == "succeeded")
    interrupted = client.get(f"/v1/jobs/{running}").json()
    assert interrupted["state"] == "failed" and "job process died" in interrupted["error"]


def rt_brain_id(rt, name: str) -> int:
    from service.brains import get_brain

    with rt.db.session(read_only=True) as s:
        return get_brain(s, name).id
