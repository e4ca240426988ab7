"""Prometheus figures per brain, request ids, and JSON logs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, func, insert, select

from service.app import create_app
from service.db import upgrade
from service.runtime import build_runtime
from service.tables import Brain, Job, Sample, Task, utcnow
from tests.conftest import make_settings
from tests.service.test_api import clusters, make_brain, post
from tests.service.test_auth import ADMIN, bearer, make_key, secured_settings
from tests.service.test_auth import make_brain as make_brain_as
from tests.service.test_auth import teach as teach_as


def scrape(client: TestClient, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics", headers=headers or {})
    assert r.status_code == 200, r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def test_metrics_count_what_each_brain_did(client: TestClient) -> None:
    make_brain(client, "b")
    make_brain(client, "idle")
    x, y = clusters(40, ["a", "b"], seed=0)
    assert post(client, "b", "t1", x, y).status_code == 202
    assert client.post("/v1/brains/b/sleep", params={"wait": True}).json()["state"] == "succeeded"
    client.post("/v1/brains/b/predict", json={"inputs": [{"x": x[0].tolist()}]})
    m = scrape(client)
    b = (("brain", "b"),)
    assert m[("brain_samples_learned_total", b)] == 40
    assert m[("brain_samples_pending", b)] == 0
    versions = client.get("/v1/brains/b/versions").json()
    assert m[("brain_current_version", b)] == versions["current"]
    assert m[("brain_versions", b)] == len(versions["versions"])
    assert m[("brain_replay_samples", b)] == 40  # under the buffer's capacity: all of them
    assert m[("brain_jobs_total", (("brain", "b"), ("kind", "sleep"), ("state", "succeeded")))] == 1
    assert m[("brain_jobs_total", (("brain", "b"), ("kind", "wake"), ("state", "succeeded")))] == 1
    assert m[("brain_sleep_seconds_count", b)] == 1 and m[("brain_sleep_seconds_sum", b)] > 0
    assert m[("brain_samples_learned_total", (("brain", "idle"),))] == 0
    route = (("method", "POST"), ("route", "/v1/brains/{name}/predict"), ("status", "200"))
    assert m[("brain_http_requests_total", route)] == 1


def test_a_jobs_end_is_counted_before_it_is_announced(client: TestClient) -> None:
    """Whoever an announcement wakes (a ?wait=true request) finds the job's end in /metrics."""
    from service.job_counts import jobs_field

    rt = client.app.state.runtime
    make_brain(client, "b")
    with rt.db.session(read_only=True) as s:
        brain_id = s.scalar(select(Brain.id).where(Brain.name == "b"))
    heard: list[tuple[int, float]] = []  # at each announcement: wake jobs succeeded in the database, counted

    def listener(changed: int | None) -> None:
        if changed == brain_id:
            with rt.db.session(read_only=True) as s:
                done = s.scalar(select(func.count()).select_from(Job).where(
                    Job.brain_id == brain_id, Job.kind == "wake", Job.state == "succeeded"))
            heard.append((done, rt.job_counts.read([brain_id])[brain_id].get(jobs_field("wake", "succeeded"), 0)))

    rt.changes.listen(listener)
    x, y = clusters(20, ["a", "b"], seed=0)
    assert post(client, "b", "t1", x, y).json()["state"] == "succeeded"
    assert any(done for done, _ in heard)
    assert all(counted >= done for done, counted in heard), heard


def test_metrics_answer_when_the_database_does_not(client: TestClient) -> None:
    rt = client.app.state.runtime

    def down():
        raise ConnectionError("database down")

    original, rt.db.session = rt.db.session, down
    try:
        m = scrape(client)
    finally:
        rt.db.session = original
    assert m[("brain_metrics_scrape_failed", ())] == 1


def test_request_ids_are_kept_or_made_and_answered(client: TestClient) -> None:
    assert client.get("/healthz", headers={"x-request-id": "req-42.a"}).headers["x-request-id"] == "req-42.a"
    for bad in (None, "has space", "x" * 65):
        headers = {"x-request-id": bad} if bad else {}
        made = client.get("/healthz", headers=headers).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
    r = client.post("/v1/brains/none/predict", json={"inputs": [{"x": [1]}]}, headers={"x-request-id": "r1"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "r1"  # errors carry it too


def test_json_logs_one_object_a_line_with_request_ids(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAIN_")}
    env.update(BRAIN_DATA_DIR=str(tmp_path / "var"), BRAIN_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "brain_cli", "serve", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"x-request-id": "probe-1"}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        httpx.get(f"http://127.0.0.1:{port}/v1/brains/missing", headers={"x-request-id": "probe-2"})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    access = {r["request_id"]: r for r in records if r.get("logger") == "service.access"}
    assert access["probe-1"]["status"] == 200 and access["probe-1"]["path"] == "/healthz"
    assert access["probe-2"]["status"] == 404 and access["probe-2"]["route"] == "/v1/brains/{name}"
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's own lines are JSON too


# -- who sees which brains, and what a scrape costs (issue 14, point 7) -------------------------------
def brains_in(m: dict[tuple[str, tuple], float]) -> set[str]:
    return {dict(labels)["brain"] for _, labels in m if "brain" in dict(labels)}


def test_per_brain_series_need_a_key_that_may_read_the_brain(tmp_path: Path) -> None:
    with TestClient(create_app(secured_settings(tmp_path / "var"))) as client:
        make_brain_as(client, "secret-a")
        make_brain_as(client, "secret-b")
        teach_as(client, "secret-a")
        reader = bearer(make_key(client, brains={"secret-a": "read"})["key"])
        anyone = client.get("/metrics")
        assert anyone.status_code == 200 and "secret-" not in anyone.text, anyone.text
        assert "brain_http_requests_total" in anyone.text  # process-wide series stay open
        admin = scrape(client, ADMIN)
        assert brains_in(admin) == {"secret-a", "secret-b"}
        assert admin[("brain_samples_learned_total", (("brain", "secret-a"),))] == 8
        assert brains_in(scrape(client, reader)) == {"secret-a"}
        assert client.get("/metrics", headers=bearer("pb_not-a-key")).status_code == 401
    public = secured_settings(tmp_path / "var", metrics_public_brains=True)  # BRAIN_METRICS_PUBLIC_BRAINS
    with TestClient(create_app(public)) as client:
        assert brains_in(scrape(client)) == {"secret-a", "secret-b"}


def add_history(client: TestClient, brain: str, *, jobs: int, samples: int) -> None:
    """Finished jobs and learned samples, written straight to the database."""
    rt, now = client.app.state.runtime, utcnow()
    with rt.db.session() as s:
        row = s.scalar(select(Brain).where(Brain.name == brain))
        task = s.scalar(select(Task.id).where(Task.brain_id == row.id))
        s.execute(insert(Job), [
            {"id": str(uuid.uuid4()), "brain_id": row.id, "kind": "sleep", "state": "succeeded", "progress": 1.0,
             "payload": {}, "result": {"seconds": 0.5}, "attempts": 1, "events": [], "created_at": now,
             "finished_at": now} for _ in range(jobs)])
        s.execute(insert(Sample), [
            {"brain_id": row.id, "task_id": task, "label": 0, "x": bytes(32), "created_at": now}
            for _ in range(samples)])
        row.learned_position = s.scalar(select(func.max(Sample.id)))


def scrape_cost(client: TestClient) -> tuple[int, int]:
    """SQL statements a scrape runs, and the SQLite virtual machine steps (in tens) they take."""
    engine = client.app.state.runtime.db.engine
    statements: list[str] = []
    steps = [0]
    connections = set()

    def step() -> int:
        steps[0] += 1
        return 0  # go on

    def before(conn, cursor, statement, *rest) -> None:
        statements.append(statement)
        raw = conn.connection.driver_connection
        raw.set_progress_handler(step, 10)
        connections.add(raw)

    event.listen(engine, "before_cursor_execute", before)
    try:
        scrape(client)
    finally:
        event.remove(engine, "before_cursor_execute", before)
        for raw in connections:
            raw.set_progress_handler(None, 0)
    return len(statements), steps[0]


def test_a_scrape_costs_the_same_whatever_the_history(tmp_path: Path) -> None:
    """No count over the whole sample log or job table: the statements of a scrape and the work
    they do stay the same when the history grows twentyfold."""
    settings = make_settings(tmp_path / "var", sleep_check_seconds=3600, metrics_cache_seconds=0)
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as client:
        for name in ("b", "c"):
            make_brain(client, name)
            x, y = clusters(8, ["a", "b"], seed=0)
            assert post(client, name, "t1", x, y).json()["state"] == "succeeded"
        add_history(client, "b", jobs=200, samples=1_000)
        small = scrape_cost(client)
        add_history(client, "b", jobs=4_000, samples=20_000)
        large = scrape_cost(client)
    assert small[1] > 0  # the steps are counted
    assert large[0] == small[0], (small, large)
    assert large[1] <= small[1] * 1.2 + 5, (small, large)  # it was 20 times more before (issue 14)


def test_metrics_are_cached_for_a_few_seconds(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "var", sleep_check_seconds=3600, metrics_cache_seconds=60)
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as client:
        make_brain(client, "b")
        assert scrape_cost(client)[0] > 0
        assert scrape_cost(client) == (0, 0)  # answered from the last scan


def test_job_counts_are_kept_in_redis_for_every_process(redis_url: str, tmp_path: Path) -> None:
    """Full stack: what a worker's jobs did, counted as it happens, is what the API process reads;
    a rolled-back change is not counted, and a deleted brain's counts go with it."""
    settings = make_settings(tmp_path / "var", redis_url=redis_url, jobs="inprocess")
    upgrade(settings.database_url)
    worker, api = build_runtime(settings, executor=False), build_runtime(settings, executor=False)
    try:
        with worker.db.session() as s:
            brain = Brain(name="r", input_kind="vector", input_shape=[2], strategy="plastic", encoder="flatten",
                          params={}, sleep_policy={}, replay={"size": 4, "policy": "reservoir"}, max_labels=2)
            s.add(brain)
            s.flush()
            brain_id = brain.id
        # a fresh SQLite file numbers its brain 1, as other tests' did: start from no counts in Redis
        worker.job_counts.add([], {brain_id})
        assert api.job_counts.read([brain_id]) == {brain_id: {}}
        with worker.db.session() as s:
            s.add(Job(id="j1", brain_id=brain_id, kind="sleep", payload={}, events=[]))
        worker.jobs.start("j1")
        worker.jobs.progress("j1", 0.5)  # not a state change
        with pytest.raises(RuntimeError), worker.db.session() as s:
            s.get(Job, "j1").state = "failed"
            s.flush()
            raise RuntimeError("rolled back")
        worker.jobs.finish("j1", result={"seconds": 2.5})
        assert api.job_counts.read([brain_id]) == {brain_id: {
            "jobs:sleep:queued": 1, "jobs:sleep:running": 1, "jobs:sleep:succeeded": 1,
            "sleeps": 1, "sleep_seconds": 2.5}}
        with worker.db.session() as s:
            s.delete(s.get(Brain, brain_id))
        assert api.job_counts.read([brain_id]) == {brain_id: {}}
    finally:
        worker.close()
        api.close()
