"""Concurrent writers on one brain (issue 14): read-modify-write of the registry rows is
serialised on every store, SQLite included."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from service.db import Database


def _post(url: str, name: str, body: dict) -> int:
    with httpx.Client(base_url=url, timeout=60) as http:
        return http.post(f"/v1/brains/{name}/samples", json=body).status_code


def test_concurrent_new_labels_and_tasks_each_get_one_index(live_server: str) -> None:
    """32 clients each post two samples with two new labels, half of them to a new task: every
    label is kept, once, with its own index, and every task once (no 500 from a unique clash)."""
    name = "race"
    with httpx.Client(base_url=live_server, timeout=60) as http:
        assert http.post("/v1/brains", json={"name": name, "input": {"kind": "vector", "shape": [4]}}).status_code == 201

    def body(i: int) -> dict:
        return {"task": f"t{i}" if i % 2 else "shared", "samples": [
            {"x": [float(i), 1.0, 0.0, float(k)], "label": f"L{2 * i + k}"} for k in range(2)]}

    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda i: _post(live_server, name, body(i)), range(32)))
    assert codes == [202] * 32
    with httpx.Client(base_url=live_server, timeout=60) as http:
        brain = http.get(f"/v1/brains/{name}").json()
        tasks = http.get(f"/v1/brains/{name}/tasks").json()["tasks"]
    assert sorted(brain["labels"]) == sorted(f"L{j}" for j in range(64))
    assert sorted(t["name"] for t in tasks) == sorted({"shared"} | {f"t{i}" for i in range(1, 32, 2)})
    assert sorted(t["ordinal"] for t in tasks) == list(range(len(tasks)))
    for t in tasks:  # each task holds exactly the labels posted to it
        posted = {f"L{2 * i + k}" for i in range(32) for k in range(2) if (f"t{i}" if i % 2 else "shared") == t["name"]}
        assert set(t["labels"]) == posted


def test_sqlite_commits_are_durable(settings) -> None:
    """A 202 is durable: in WAL mode SQLite must sync every commit (synchronous=FULL, 2)."""
    db = Database(settings)
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        db.dispose()
