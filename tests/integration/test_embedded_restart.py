"""The embedded default (SQLite, in-process replay and jobs) survives restarts.

An API restart is a new app over the same data dir (a new ``TestClient(create_app(settings))``: the
old app's lifespan has shut down its executor, scheduler and database engine). Proves:

- what was learned is served again after a restart: same current version, identical predictions;
- samples acknowledged (202) but not learned when the process went away are learned after the
  restart (recovery from the durable sample log), and the job that was to learn them is not left
  "queued" for ever;
- the in-process replay buffer is restored from the versions' snapshots after a restart;
- promoting an older version serves exactly the predictions recorded at that version, also after a
  restart.

Needs no services; runs in a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.integration.synthetic import SMALL_PARAMS, Clusters, accuracy

TASK1 = ["cat", "dog", "owl"]  # string labels
TASK2 = [0, 1, 2]  # integer labels (0 is a label, not a falsy nothing)
TASK3 = ["elk", 7]  # arrives while the process goes away
ALL = [*TASK1, *TASK2, *TASK3]
NAME = "embedded"
TIMEOUT = 60.0


@contextmanager
def api(settings: Settings) -> Iterator[TestClient]:
    """One run of the API process: start-up (recovery) on enter, shutdown on exit."""
    with TestClient(create_app(settings)) as c:
        yield c


def _ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def _predict(c: TestClient, inputs: list[dict]) -> tuple[int, list[dict]]:
    body = _ok(c.post(f"/v1/brains/{NAME}/predict", json={"inputs": inputs}))
    return body["version"], body["predictions"]


def _same_predictions(a: list[dict], b: list[dict]) -> bool:
    return [p["label"] for p in a] == [p["label"] for p in b] and all(
        p["confidence"] == pytest.approx(q["confidence"], abs=1e-6) for p, q in zip(a, b)
    )


def _learn(c: TestClient, task: str, samples: list[dict]) -> int:
    body = _ok(c.post(f"/v1/brains/{NAME}/samples", params={"wait": "true"},
                      json={"task": task, "samples": samples}), 202)
    assert body["accepted"] == len(samples) and body["state"] == "succeeded", body
    return body["version"]


def _poll(check, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


class _Dropping:
    """An executor that accepts jobs and never runs them: the process dies before they run."""

    def __init__(self, real) -> None:
        self.real = real
        self.dropped: list[str] = []

    def dispatch(self, job_id: str, kind: str) -> None:
        self.dropped.append(job_id)

    def shutdown(self) -> None:
        self.real.shutdown()


def test_restart_keeps_versions_recovers_samples_and_rolls_back(settings: Settings) -> None:
    data = Clusters(ALL, seed=11)
    probe, _ = data.inputs(ALL, 4, seed=99)  # a fixed set predicted at every step
    held_out, truth = data.inputs([*TASK1, *TASK2], 20, seed=7)

    # -- first run: learn two tasks and sleep -------------------------------------------------------
    with api(settings) as c:
        created = _ok(c.post("/v1/brains", json={"name": NAME, "input": {"kind": "vector", "shape": [20]},
                                                  "params": SMALL_PARAMS}), 201)
        assert created["current_version"] == 1
        v_task1 = _learn(c, "t1", data.samples(TASK1, 60, seed=1))
        assert v_task1 == 2
        at_task1 = _predict(c, probe)
        assert at_task1[0] == v_task1
        assert {p["label"] for p in at_task1[1]} <= set(TASK1)  # knows nothing else yet

        assert _learn(c, "t2", data.samples(TASK2, 60, seed=2)) == 3
        slept = _ok(c.post(f"/v1/brains/{NAME}/sleep", params={"wait": "true"}), 202)
        assert slept["state"] == "succeeded", slept
        v_sleep = slept["result"]["version"]
        assert v_sleep == 4
        version, predictions = _predict(c, held_out)
        assert version == v_sleep
        assert accuracy(predictions, truth) > 0.9
        at_sleep = _predict(c, probe)

    # -- second run: the same brain answers, identically -------------------------------------------
    with api(settings) as c:
        brain = _ok(c.get(f"/v1/brains/{NAME}"))
        assert brain["current_version"] == v_sleep
        assert brain["samples_learned"] == 360 and brain["samples_pending"] == 0
        assert brain["labels"] == [*TASK1, *TASK2]
        version, predictions = _predict(c, probe)
        assert version == v_sleep
        assert _same_predictions(predictions, at_sleep[1])
        versions = _ok(c.get(f"/v1/brains/{NAME}/versions"))
        assert [v["kind"] for v in versions["versions"]] == ["init", "wake", "wake", "sleep"]

        # the process is about to die: samples are acknowledged, their job never runs
        jobs = c.app.state.runtime.jobs
        jobs.executor = _Dropping(jobs.executor)
        new = data.samples(TASK3, 60, seed=3, ids="t3")
        accepted = _ok(c.post(f"/v1/brains/{NAME}/samples", json={"task": "t3", "samples": new}), 202)
        assert accepted["accepted"] == len(new)
        lost_job = accepted["job"]
        assert jobs.executor.dropped == [lost_job]
        assert _ok(c.get(f"/v1/jobs/{lost_job}"))["state"] == "queued"
        assert _ok(c.get(f"/v1/brains/{NAME}"))["samples_pending"] == len(new)

    # -- third run: recovery learns them; the replay buffer comes back with the brain ---------------
    with api(settings) as c:
        brain = _poll(lambda: (b := _ok(c.get(f"/v1/brains/{NAME}")))["samples_pending"] == 0 and b,
                      "the acknowledged samples to be learned after the restart")
        assert brain["samples_learned"] == 360 + len(new)
        assert brain["current_version"] == v_sleep + 1
        assert brain["labels"] == ALL
        # never started before the process died: run by the next one (not left queued for ever)
        lost = _poll(lambda: (j := _ok(c.get(f"/v1/jobs/{lost_job}")))["state"] in ("succeeded", "failed") and j,
                     "the job the dead process never started to end")
        assert lost["state"] == "succeeded", lost
        # posting the same samples again changes nothing: they are in the log once
        again = _ok(c.post(f"/v1/brains/{NAME}/samples", json={"task": "t3", "samples": new}), 202)
        assert (again["accepted"], again["duplicates"], again["job"]) == (0, len(new), None)

        every, every_truth = data.inputs(ALL, 20, seed=8)
        version, predictions = _predict(c, every)
        assert version == v_sleep + 1
        assert accuracy(predictions, every_truth) > 0.9  # new task learned, old ones kept

        slept = _ok(c.post(f"/v1/brains/{NAME}/sleep", params={"wait": "true"}), 202)
        assert slept["state"] == "succeeded", slept
        # 480 samples seen, a buffer of 500: all of them, not only the 120 learned since the restart
        assert slept["result"]["replayed"] == 360 + len(new)
        v_latest = slept["result"]["version"]
        at_latest = _predict(c, probe)
        assert at_latest[0] == v_latest

        # roll back to the version after task 1: exactly what it answered then
        promoted = _ok(c.post(f"/v1/brains/{NAME}/versions/{v_task1}/promote"))
        assert promoted["number"] == v_task1 and promoted["current"] and promoted["promoted"]
        version, predictions = _predict(c, probe)
        assert version == v_task1
        assert _same_predictions(predictions, at_task1[1])
        assert _ok(c.post(f"/v1/brains/{NAME}/versions/999/promote"), 404)

    # -- fourth run: the rollback is durable; rolling forward restores the latest answers -----------
    with api(settings) as c:
        assert _ok(c.get(f"/v1/brains/{NAME}"))["current_version"] == v_task1
        version, predictions = _predict(c, probe)
        assert version == v_task1
        assert _same_predictions(predictions, at_task1[1])

        _ok(c.post(f"/v1/brains/{NAME}/versions/{v_sleep}/promote"))
        version, predictions = _predict(c, probe)
        assert version == v_sleep
        assert _same_predictions(predictions, at_sleep[1])

        _ok(c.post(f"/v1/brains/{NAME}/versions/{v_latest}/promote"))
        version, predictions = _predict(c, probe)
        assert version == v_latest
        assert _same_predictions(predictions, at_latest[1])
