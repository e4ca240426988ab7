"""``?wait=true`` holds no worker thread: many waiting requests leave predict and reads served,
a waiter answers as soon as its job ends, and the number of waiters is bounded (service.waiting)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

import service.orchestration
from service.db import Database, upgrade
from service.settings import Settings
from service.tables import Job
from tests.conftest import make_settings, serve

WAITERS = 60  # more than the threadpool's 40 threads
PROMPT = 3.0  # seconds within which a request must be answered while the others wait
SAMPLES = {"task": "t", "samples": [{"x": [0.0, 1.0, 0.0, 1.0], "label": "a"}, {"x": [1.0, 0.0, 1.0, 0.0], "label": "b"}]}


class Gate:
    """Jobs wait while the gate is closed (it starts closed); ``ended`` holds when each one's run ended."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ended: dict[str, float] = {}

    def open(self) -> None:
        self.event.set()

    def close(self) -> None:
        self.event.clear()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    held = Gate()
    real = service.orchestration.run_job

    def run_when_open(rt, job_id: str, **kwargs):
        held.event.wait(60)
        try:
            return real(rt, job_id, **kwargs)
        finally:
            held.ended[job_id] = time.monotonic()

    # service.job_runner looks run_job up at each call: the apps of this test get the held one
    monkeypatch.setattr(service.orchestration, "run_job", run_when_open)
    yield held
    held.open()


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    settings = make_settings(tmp_path / "var", **overrides)
    upgrade(settings.database_url)
    return settings


def jobs(settings: Settings, kind: str = "sleep") -> int:
    db = Database(settings)
    try:
        with db.session() as s:
            return s.scalar(select(func.count()).select_from(Job).where(Job.kind == kind))
    finally:
        db.dispose()


def until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def http_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=WAITERS + 10))


def make_brain(http: httpx.Client, name: str) -> None:
    r = http.post("/v1/brains", json={"name": name, "input": {"kind": "vector", "shape": [4]},
                                      "params": {"layers": [{"hidden": 32, "k": 4}]}})
    assert r.status_code == 201, r.text


def test_waiting_requests_leave_predict_and_reads_served(tmp_path: Path, gate: Gate) -> None:
    settings = settings_for(tmp_path)
    with serve(settings) as url, http_client(url) as http, ThreadPoolExecutor(WAITERS) as pool:
        make_brain(http, "busy")
        make_brain(http, "other")  # never predicted yet: its first prediction loads it in a thread
        gate.open()
        assert http.post("/v1/brains/other/samples", json=SAMPLES).status_code == 202
        assert until(lambda: http.get("/v1/brains/other").json()["samples_pending"] == 0)
        gate.close()
        waiting = [pool.submit(http.post, "/v1/brains/busy/sleep", params={"wait": "true"}) for _ in range(WAITERS)]
        until(lambda: jobs(settings) >= WAITERS, 5)  # on a starved server some never get this far
        time.sleep(0.2)
        started = time.monotonic()
        try:
            read = http.get("/v1/brains/other", timeout=PROMPT)
            predicted = http.post("/v1/brains/other/predict", json={"inputs": [{"x": [0, 1, 0, 1]}]}, timeout=PROMPT)
        except httpx.TimeoutException:
            pytest.fail(f"a read or a prediction was not answered within {PROMPT} s while {WAITERS} requests "
                        "waited: the waiters hold the threadpool")
        assert read.status_code == 200 and predicted.status_code == 200, (read.text, predicted.text)
        assert time.monotonic() - started < PROMPT
        assert jobs(settings) == WAITERS and not any(w.done() for w in waiting)  # all of them still wait
        gate.open()
        answers = [w.result(timeout=60) for w in waiting]
    assert {a.status_code for a in answers} == {202}
    assert {a.json()["state"] for a in answers} == {"succeeded"}
    assert answers[0].json()["result"] == {"skipped": "nothing learned yet", "version": 1}


def test_a_waiter_answers_when_its_job_ends_not_at_the_next_recheck(tmp_path: Path, gate: Gate) -> None:
    settings = settings_for(tmp_path, wait_recheck_seconds=30.0)  # only an announcement can wake it in time
    with serve(settings) as url, http_client(url) as http, ThreadPoolExecutor(1) as pool:
        make_brain(http, "b")
        waiting = pool.submit(lambda: (http.post("/v1/brains/b/samples", params={"wait": "true"}, json=SAMPLES),
                                       time.monotonic()))
        assert until(lambda: jobs(settings, "wake") == 1)
        time.sleep(0.2)
        assert not waiting.done()
        gate.open()
        answer, answered = waiting.result(timeout=60)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["state"] == "succeeded" and body["version"] == 2 and body["accepted"] == 2
    assert answered - gate.ended[body["job"]] < 1.0


def test_a_lost_announcement_only_delays_the_answer(tmp_path: Path, gate: Gate) -> None:
    settings = settings_for(tmp_path, wait_recheck_seconds=0.3)
    with serve(settings) as url, http_client(url) as http, ThreadPoolExecutor(1) as pool:
        make_brain(http, "b")
        waiting = pool.submit(http.post, "/v1/brains/b/sleep", params={"wait": "true"})
        assert until(lambda: jobs(settings) == 1)
        time.sleep(0.2)
        silent = Database(settings)  # no BrainChanges attached: this commit announces nothing
        with silent.session() as s:
            s.execute(update(Job).values(state="succeeded", result={"by": "test"}))
        silent.dispose()
        finished = time.monotonic()
        answer = waiting.result(timeout=10)
        assert time.monotonic() - finished < 2.0
        gate.open()  # the held job thread ends (it finds its job finished), so the server can stop
    assert answer.status_code == 202 and answer.json()["state"] == "succeeded"
    assert answer.json()["result"] == {"by": "test"}


def test_a_wait_that_times_out_answers_the_jobs_state(tmp_path: Path, gate: Gate) -> None:
    settings = settings_for(tmp_path, wait_timeout_seconds=0.5)
    with serve(settings) as url, http_client(url) as http:
        make_brain(http, "b")
        started = time.monotonic()
        answer = http.post("/v1/brains/b/sleep", params={"wait": "true"})
        assert 0.5 <= time.monotonic() - started < 3.0
        gate.open()
    assert answer.status_code == 202 and answer.json()["state"] == "queued"


def test_waiters_beyond_the_limit_are_refused_before_anything_is_done(tmp_path: Path, gate: Gate) -> None:
    settings = settings_for(tmp_path, max_waiters=3)
    with serve(settings) as url, http_client(url) as http, ThreadPoolExecutor(3) as pool:
        make_brain(http, "b")
        waiting = [pool.submit(http.post, "/v1/brains/b/sleep", params={"wait": "true"}) for _ in range(3)]
        assert until(lambda: jobs(settings) == 3)
        time.sleep(0.2)
        for refused in (http.post("/v1/brains/b/sleep", params={"wait": "true"}),
                        http.post("/v1/brains/b/samples", params={"wait": "true"}, json=SAMPLES)):
            assert refused.status_code == 503, refused.text
            assert "BRAIN_MAX_WAITERS" in refused.json()["detail"] and int(refused.headers["retry-after"]) >= 1
        assert jobs(settings) == 3  # nothing was submitted for the refused requests
        assert http.get("/v1/brains/b").json()["samples_pending"] == 0
        assert http.post("/v1/brains/b/sleep").json()["state"] == "queued"  # not waiting: not limited
        gate.open()
        assert {w.result(timeout=60).json()["state"] for w in waiting} == {"succeeded"}
        # the slots are free again
        assert http.post("/v1/brains/b/sleep", params={"wait": "true"}).json()["state"] == "succeeded"
