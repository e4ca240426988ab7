"""Many brains, fairly (issue 17), embedded: the jobs of one brain run one at a time, and a job
whose brain runs another is deferred (it stays queued; its executor takes the next job), then
dispatched again, behind what was queued meanwhile, when that one ends (``service.jobs``).

The same scenarios as on the full stack (tests/integration/test_fairness.py), here in the embedded
default: the API's job process (``service.job_child``), which runs jobs on two threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service import brains, schemas
from service.app import create_app
from service.db import upgrade
from service.jobs import BrainBusy
from service.runtime import build_runtime
from service.tables import Job, utcnow
from tests.conftest import make_settings
from tests.integration.test_fairness import (
    PER_JOB,
    backlog_holds_another_brain_back_by_one_job_at_most,
    busy_brain_does_not_hold_back_another,
)
from tests.service.test_learning import _Held


@pytest.fixture
def rt(settings):
    runtime = build_runtime(settings, executor=False)
    runtime.jobs.executor = _Held()  # records what it is asked to run
    yield runtime
    runtime.close()


def _brain(rt, name: str) -> int:
    body = schemas.BrainCreate(name=name, input=schemas.InputSpec(kind="vector", shape=[4]))
    return brains.create_brain(rt, body=body).id


def _events(rt, job_id: str) -> list[str]:
    with rt.db.session(read_only=True) as s:
        return [e["event"] for e in s.get(Job, job_id).events]


def test_a_job_whose_brain_runs_another_is_deferred_and_sent_again_when_that_one_ends(rt) -> None:
    a, b = _brain(rt, "a"), _brain(rt, "b")
    sleep_a = rt.jobs.submit("sleep", a)
    wake_a = rt.jobs.submit("wake", a)
    wake_b = rt.jobs.submit("wake", b)
    assert rt.jobs.start(sleep_a) is not None
    with pytest.raises(BrainBusy) as busy:
        rt.jobs.start(wake_a)
    assert (busy.value.behind, busy.value.kind) == (sleep_a, "wake")
    assert rt.jobs.start(wake_b) is not None  # another brain runs at the same time
    rt.jobs.finish(wake_b, result={})
    assert _events(rt, wake_a)[-1] == "deferred"
    sent = list(rt.jobs.executor.dispatched)
    # a later wake joins the deferred job, which is still queued
    assert rt.jobs.submit("wake", a, {"samples": 3}, join_queued=True) == wake_a
    rt.jobs.finish(sleep_a, result={})
    assert rt.jobs.executor.dispatched[len(sent):] == [wake_a]  # sent again once, when A's sleep ended
    assert _events(rt, wake_a)[-1] == "resumed"
    assert rt.jobs.start(wake_a).attempts == 1
    rt.jobs.finish(wake_a, result={})
    assert rt.jobs.executor.dispatched[len(sent):] == [wake_a]  # nothing else was waiting


def test_a_job_interrupted_for_a_retry_lets_its_brains_deferred_jobs_go(rt) -> None:
    a = _brain(rt, "a")
    first, second = rt.jobs.submit("sleep", a), rt.jobs.submit("wake", a)
    rt.jobs.start(first)
    with pytest.raises(BrainBusy):
        rt.jobs.start(second)
    rt.jobs.requeue(first, ConnectionError("redis went away"))
    assert rt.jobs.executor.dispatched[-1] == second
    assert rt.jobs.start(second) is not None


def test_a_running_job_whose_runner_died_holds_nothing_back(rt) -> None:
    """A running job whose heartbeat is older than the lock timeout has lost its runner: the
    brain's next job starts (and the dead one, redelivered, is deferred behind it)."""
    a = _brain(rt, "a")
    dead, fresh = rt.jobs.submit("wake", a), rt.jobs.submit("wake", a)
    rt.jobs.start(dead)
    with rt.db.session() as s:
        s.execute(update(Job).where(Job.id == dead).values(
            heartbeat_at=utcnow() - timedelta(seconds=rt.settings.lock_timeout_seconds + 1)))
    assert rt.jobs.start(fresh) is not None
    with pytest.raises(BrainBusy):
        rt.jobs.start(dead)
    with rt.db.session(read_only=True) as s:
        assert s.get(Job, dead).state == "queued"


@pytest.fixture
def child(tmp_path: Path) -> Iterator[TestClient]:
    """The embedded default: jobs in the API's job process, on two threads."""
    settings = make_settings(tmp_path / "var", jobs="child", wake_max_samples=PER_JOB)
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        yield c


def test_embedded_a_backlog_holds_another_brain_back_by_one_job_at_most(child: TestClient) -> None:
    """Two job threads, two brains with a backlog: a third brain's batch is not held back by the
    backlogs (this fails a job thread that drains one brain's continuations before it takes another job)."""
    backlog_holds_another_brain_back_by_one_job_at_most(child, ["backlog1", "backlog2"], "small")


def test_embedded_a_busy_brain_does_not_hold_the_second_job_thread(child: TestClient) -> None:
    busy_brain_does_not_hold_back_another(child, "busy", "other")
