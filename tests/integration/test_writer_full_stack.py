"""One fenced writer per brain on the full stack (issue 14), with a lock timeout far shorter than
a job: two ``brain worker`` processes, a sleep that runs several lock timeouts, and a wake job
for the same brain sent meanwhile. The sleep's lock is renewed while it runs, so the wake waits
(retried, not failed) and publishes after it, on top of it; nothing runs twice."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from service.tables import Job, Version
from tests.integration.synthetic import Clusters
from tests.integration.test_full_stack import _create, _learn, _ok, _poll, shared, stack  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

LOCK_TIMEOUT = 2.0


def test_a_job_longer_than_the_lock_timeout_keeps_its_brain(stack) -> None:  # noqa: F811 (the fixture)
    stack.configure(lock_timeout_seconds=LOCK_TIMEOUT)
    stack.start_worker()
    stack.start_worker()
    data, labels = Clusters(["a", "b", "c"], dim=20, seed=5), ["a", "b", "c"]
    with stack.api() as c:
        _create(c, "long", strategy="replay", params={"hidden": 64})
        _learn(c, "long", "t1", data.samples(labels, 20, seed=1))
        _ok(c.patch("/v1/brains/long", json={"sleep_policy": {"budget": 400_000}}))
        sleep_job = _ok(c.post("/v1/brains/long/sleep"), 202)["job"]
        rt = c.app.state.runtime

        def state(job_id: str) -> Job:
            with rt.db.session(read_only=True) as s:
                return s.get(Job, job_id)

        _poll(lambda: state(sleep_job).state == "running", "the sleep to start")
        started = time.monotonic()
        wake_job = _ok(c.post("/v1/brains/long/samples", json={"task": "t2", "samples": data.samples(labels, 10, seed=2)}), 202)["job"]
        _poll(lambda: state(sleep_job).state == "succeeded", "the sleep to finish", timeout=180)
        sleep_seconds = time.monotonic() - started
        _poll(lambda: state(wake_job).state == "succeeded", "the wake to finish", timeout=120)
        with rt.db.session(read_only=True) as s:
            versions = s.scalars(select(Version).order_by(Version.number)).all()
            versions = [v for v in versions if v.stats.get("job") in (sleep_job, wake_job)]
            sleep_row = state(sleep_job)
        brain = _ok(c.get("/v1/brains/long"))
    assert sleep_seconds > 2 * LOCK_TIMEOUT, f"the sleep took {sleep_seconds:.1f}s: too short to test anything"
    assert [v.kind for v in versions] == ["sleep", "wake"]  # the wake waited for the sleep
    sleep_v, wake_v = versions
    assert wake_v.stats["base"] == sleep_v.number and sleep_v.stats["base"] == sleep_v.number - 1
    assert wake_v.stats["fence"] > sleep_v.stats["fence"]
    assert wake_v.log_position > sleep_v.log_position and wake_v.stats["log_from"] == sleep_v.log_position
    assert sleep_row.attempts == 1  # never started twice
    assert brain["samples_learned"] == 90 and brain["samples_pending"] == 0
    assert brain["current_version"] == wake_v.number
