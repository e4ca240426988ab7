"""Many brains, many workers, fairly (issue 17), on the full stack: real ``brain worker`` processes
on Redis and Postgres (the :class:`~tests.integration.test_full_stack.Stack` of test_full_stack).

- one worker, one brain with a backlog of many wake jobs: another brain's small batch is learned
  after at most one of them, not after the whole backlog (a wake's continuation queues behind it);
- two workers, one brain busy with a long job and more work queued for it: that work does not hold
  the second worker (waiting for the brain's lock), which learns another brain's batch meanwhile;
  both brains run at once, never two jobs on one brain.

The embedded job process keeps the same promises: tests/service/test_fairness.py.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from bench.history.faults import slow_sleep_budget
from service.tables import Brain, Job, Version
from tests.integration import test_full_stack
from tests.integration.synthetic import Clusters
from tests.integration.test_full_stack import Stack, _create, _ok, _poll

pytestmark = pytest.mark.integration
shared, stack = test_full_stack.shared, test_full_stack.stack  # its fixtures

RUN = uuid.uuid4().hex[:8]
LABELS = ["a", "b", "c"]


def _job(rt, job_id: str) -> Job:
    with rt.db.session(read_only=True) as s:
        return s.get(Job, job_id)


def _brain_row(rt, name: str) -> Brain:
    with rt.db.session(read_only=True) as s:
        return s.scalar(select(Brain).where(Brain.name == name))


def _published(rt, *names: str) -> list[tuple[str, int, str]]:
    """(brain, number, kind) of every version of these brains after the first, in publish order."""
    with rt.db.session(read_only=True) as s:
        rows = s.execute(select(Brain.name, Version.number, Version.kind).join(Brain, Brain.id == Version.brain_id)
                         .where(Brain.name.in_(names), Version.number > 1).order_by(Version.id)).all()
    return [tuple(r) for r in rows]


def _jobs_of(rt, name: str) -> list[Job]:
    with rt.db.session(read_only=True) as s:
        return list(s.scalars(select(Job).join(Brain, Brain.id == Job.brain_id)
                              .where(Brain.name == name).order_by(Job.started_at)))


def assert_one_at_a_time(jobs: list[Job]) -> None:
    """The jobs of one brain ran one after another: each started after the one before finished."""
    ran = [j for j in jobs if j.started_at is not None]
    for before, after in zip(ran, ran[1:]):
        assert after.started_at >= before.finished_at, (before.kind, before.events, after.kind, after.events)


PER_JOB = 150  # wake_max_samples of the backlog scenario


def backlog_holds_another_brain_back_by_one_job_at_most(c, backlogs: list[str], b: str) -> None:
    """Each brain of ``backlogs`` (as many as there are executors: each could keep one busy) has a
    backlog of ten wake jobs (``wake_max_samples`` = :data:`PER_JOB`); brain B's batch, sent while
    their first jobs run, starts after at most one more job of each, not after their last."""
    rt = c.app.state.runtime
    assert rt.settings.wake_max_samples == PER_JOB
    data = Clusters(LABELS, seed=11)
    for name in (*backlogs, b):
        _create(c, name)
    backlog = data.samples(LABELS, 10 * PER_JOB // len(LABELS), seed=1)
    first = [_ok(c.post(f"/v1/brains/{a}/samples", json={"task": "t", "samples": backlog}), 202)["job"] for a in backlogs]
    _poll(lambda: all(_job(rt, job).state != "queued" for job in first), "the backlogs' first wake jobs to start")
    _ok(c.post(f"/v1/brains/{b}/samples", json={"task": "t", "samples": data.samples(LABELS, 2, seed=2)}), 202)
    _poll(lambda: all(_brain_row(rt, a).samples_learned == len(backlog) for a in backlogs)
          and _brain_row(rt, b).samples_learned == 6, "every brain to learn everything", timeout=240)
    published = _published(rt, *backlogs, b)
    (job_b,) = _jobs_of(rt, b)
    overtook = []
    for a in backlogs:
        jobs_a = _jobs_of(rt, a)
        assert [p[2] for p in published if p[0] == a] == ["wake"] * 10
        assert_one_at_a_time(jobs_a)
        later = [j for j in jobs_a if j.started_at > job_b.created_at]
        assert len(later) >= 3, f"{a}'s backlog was learned before B's batch came: nothing tested ({published})"
        overtook += [j for j in jobs_a if job_b.created_at < j.started_at < job_b.started_at]
    # B's job was queued behind at most one job of each backlog: the continuation its running job submitted
    assert len(overtook) <= len(backlogs), f"{len(overtook)} backlog jobs started while B's waited: {published}"


def busy_brain_does_not_hold_back_another(c, a: str, b: str) -> None:
    """Brain A sleeps for seconds on one executor; a wake job for A, sent meanwhile, must wait for
    that sleep, but not on a second executor (a worker, a job thread): brain B's batch, sent after
    it, is learned there while A still sleeps. A's jobs never overlap; B's overlaps A's sleep."""
    rt = c.app.state.runtime
    data = Clusters(LABELS, dim=20, seed=5)
    _create(c, a, strategy="replay", params={})
    _create(c, b)
    _ok(c.post(f"/v1/brains/{a}/samples", params={"wait": "true"},
               json={"task": "t1", "samples": data.samples(LABELS, 20, seed=1)}), 202)
    budget = slow_sleep_budget(20, 100, seconds=4.0)  # measured on this machine
    # 503 while a writer holds A: a worker that starts late submits a (redundant) recovery wake
    _poll(lambda: c.patch(f"/v1/brains/{a}", json={"sleep_policy": {"budget": budget}}).status_code == 200,
          "A's sleep policy to be set")
    sleep_job = _ok(c.post(f"/v1/brains/{a}/sleep"), 202)["job"]
    _poll(lambda: _job(rt, sleep_job).state == "running", "A's sleep to start")
    wake_a = _ok(c.post(f"/v1/brains/{a}/samples", json={"task": "t2", "samples": data.samples(LABELS, 5, seed=2)}), 202)["job"]
    # an executor has taken A's wake (and deferred it; before issue 17 it waited there for A's lock)
    _poll(lambda: any(e["event"] in ("deferred", "started") for e in _job(rt, wake_a).events), "A's wake to be taken")
    wake_b = _ok(c.post(f"/v1/brains/{b}/samples", json={"task": "t", "samples": data.samples(LABELS, 2, seed=3)}), 202)["job"]
    _poll(lambda: _job(rt, wake_b).state == "succeeded", "B's wake to finish", timeout=120)
    sleeping = _job(rt, sleep_job).state
    _poll(lambda: _job(rt, wake_a).state == "succeeded", "A's wake to finish", timeout=120)
    published = _published(rt, a, b)
    jobs_a, (job_b,) = _jobs_of(rt, a), _jobs_of(rt, b)
    assert sleeping == "running", f"B's batch waited for A's sleep: {published}"
    assert [p[2] for p in published if p[0] == a][-2:] == ["sleep", "wake"]
    assert_one_at_a_time(jobs_a)  # never two on one brain
    with rt.db.session(read_only=True) as s:  # each of A's versions written on top of the one before
        stats = s.scalars(select(Version.stats).join(Brain, Brain.id == Version.brain_id)
                          .where(Brain.name == a, Version.number > 1).order_by(Version.number)).all()
    assert [v["base"] for v in stats] == list(range(1, len(stats) + 1))
    assert [v["fence"] for v in stats] == sorted({v["fence"] for v in stats})
    sleep_row = next(j for j in jobs_a if j.id == sleep_job)
    assert sleep_row.started_at < job_b.started_at and job_b.finished_at < sleep_row.finished_at  # both at once


def test_a_backlog_of_many_jobs_holds_another_brain_back_by_one_job_at_most(stack: Stack) -> None:
    """One worker: each wake's continuation is queued behind what was sent meanwhile (this fails a
    worker that drains one brain's continuations before it takes another job)."""
    stack.configure(wake_max_samples=PER_JOB)
    stack.start_worker()
    with stack.api() as c:
        backlog_holds_another_brain_back_by_one_job_at_most(c, [f"backlog-{RUN}"], f"small-{RUN}")


def test_a_busy_brain_does_not_hold_a_second_worker_from_another_brain(stack: Stack) -> None:
    """Two workers: a job whose brain is busy is deferred, not held by a worker waiting for the
    brain's lock (before issue 17 it held the second worker until A's sleep ended)."""
    stack.start_worker()
    stack.start_worker()
    with stack.api() as c:
        busy_brain_does_not_hold_back_another(c, f"busy-{RUN}", f"other-{RUN}")
