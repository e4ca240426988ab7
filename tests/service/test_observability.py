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
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.service.test_api import clusters, make_brain, post


def scrape(client: TestClient) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
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
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
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
