"""Embedded jobs run in a job process of their own (``service.job_child``, ``service.job_process``):
another pid; what it commits reaches the API (predictions, waiters, /metrics) without polling; a
killed job process is replaced and nothing acknowledged is lost; none outlives its API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import Database, upgrade
from service.settings import Settings
from service.tables import Job
from tests.conftest import make_settings
from tests.service.test_datadir import _ready, _serve

SAMPLES = {"task": "t", "samples": [{"x": [0.0, 1.0, 0.0, 1.0], "label": "a"}, {"x": [1.0, 0.0, 1.0, 0.0], "label": "b"}]}
PREDICT = {"inputs": [{"x": [0.0, 1.0, 0.0, 1.0]}]}
SLOW = 600.0  # the API's own re-reads, made too slow to hide a lost announcement


def until(condition: Callable[[], object], seconds: float = 30.0) -> object:
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def gone(pid: int) -> bool:
    """The process has ended (a zombie that nobody reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = make_settings(tmp_path / "var", jobs="auto", serving_ttl_seconds=SLOW, wait_recheck_seconds=SLOW)
    upgrade(s.database_url)
    return s


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/brains", json={"name": "b", "input": {"kind": "vector", "shape": [4]}}).status_code == 201
        yield c


def job_process(client: TestClient):
    return client.app.state.runtime.jobs.executor


def learn(client: TestClient) -> dict:
    r = client.post("/v1/brains/b/samples", params={"wait": "true"}, json=SAMPLES)
    assert r.status_code == 202 and r.json()["state"] == "succeeded", r.text
    return r.json()


def test_jobs_run_in_the_job_process_and_the_api_hears_what_they_did(client: TestClient, settings: Settings) -> None:
    children = job_process(client)
    assert settings.job_backend == "child" and children.pid not in (None, os.getpid())
    learned = learn(client)  # answered by an announcement: the waiter's own re-read is 10 minutes away
    job = client.get(f"/v1/jobs/{learned['job']}").json()
    assert {e["by"].rsplit(":", 1)[1] for e in job["events"] if e["event"] in ("started", "succeeded")} == {
        str(children.pid)}
    assert client.post("/v1/brains/b/predict", json=PREDICT).json()["version"] == learned["version"]

    # a job that the API itself never committed a word of: only the job process's announcement can
    # tell the serving cache (whose own expiry is 10 minutes away) that a version was published
    job_id = str(uuid.uuid4())
    db = Database(settings)
    try:
        with db.session() as s:
            brain_id = s.get(Job, learned["job"]).brain_id
            s.add(Job(id=job_id, brain_id=brain_id, kind="sleep", payload={"reason": "test"}, events=[]))
    finally:
        db.dispose()
    children.dispatch(job_id, "sleep")
    until(lambda: client.post("/v1/brains/b/predict", json=PREDICT).json()["version"] > learned["version"])
    metrics = client.get("/metrics").text
    assert 'brain_jobs_total{brain="b",kind="sleep",state="succeeded"} 1.0' in metrics  # counted there, read here
    assert 'brain_jobs_total{brain="b",kind="wake",state="succeeded"} 1.0' in metrics
    replay = client.get("/v1/brains/b/replay").json()  # the job process's buffer, as of the last version
    assert replay["size"] == 2 and replay["per_label"] == {"a": 1, "b": 1}


def test_a_killed_job_process_is_replaced_and_nothing_acknowledged_is_lost(client: TestClient) -> None:
    children = job_process(client)
    first = learn(client)
    dead = children.pid
    r = client.post("/v1/brains/b/samples", json={**SAMPLES, "samples": [
        {"x": [float(i % 2), 1.0, 0.0, float(i % 3)], "label": "c"} for i in range(500)]})
    assert r.status_code == 202
    os.kill(dead, signal.SIGKILL)  # mid-job, or just before it
    until(lambda: children.pid != dead and children.ready.is_set())
    brain = until(lambda: (b := client.get("/v1/brains/b").json())["samples_pending"] == 0 and b)
    assert brain["samples_learned"] == 502  # learned by the job, or by the wake that recovery submitted
    # killed mid-job: failed, its samples learned by recovery's wake; killed before it started: run
    # by the next job process (it may still be recording its end when the samples are learned)
    state = until(lambda: (j := client.get(f"/v1/jobs/{r.json()['job']}").json())["state"] in ("succeeded", "failed")
                  and j)
    if state["state"] == "failed":
        assert "job process died" in state["error"]
    again = learn(client)  # the new job process learns
    assert again["version"] > first["version"]
    started = [e for e in client.get(f"/v1/jobs/{again['job']}").json()["events"] if e["event"] == "started"]
    assert started[-1]["by"].endswith(f":{children.pid}")


def test_the_job_process_ends_with_the_api(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        pid = job_process(c).pid
        assert not gone(pid)
    assert gone(pid)  # a clean shutdown waits for it


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


def test_no_job_process_outlives_a_killed_api(tmp_path: Path) -> None:
    api, url = _serve(tmp_path / "var")
    try:
        _ready(api, url)
        children = until(lambda: _children(api.pid))
        assert len(children) == 1
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.post("/v1/brains", json={"name": "b", "input": {"kind": "vector", "shape": [4]}}).status_code == 201
            assert http.post("/v1/brains/b/samples", params={"wait": "true"}, json=SAMPLES).json()["state"] == "succeeded"
    finally:
        api.send_signal(signal.SIGKILL)
        api.wait(timeout=30)
    until(lambda: gone(children[0]), seconds=10)


def test_the_job_process_is_started_by_its_own_module() -> None:
    """``python -m service.job_process`` is the entry point ChildJobs starts; it wants its channel."""
    out = subprocess.run([sys.executable, "-m", "service.job_process", "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}, timeout=60)
    assert out.returncode == 0 and "--channel" in out.stdout


def test_writers_of_a_brain_exclude_each_other_across_processes(tmp_path: Path) -> None:
    """The API's writers (promote, PATCH) and the job process's jobs hold the same file locks."""
    from service.locks import FileLocks

    probe = [sys.executable, "-c", "import sys\nfrom pathlib import Path\nfrom service.locks import FileLocks, BrainLockTimeout\n"
             f"try:\n    FileLocks(Path({str(tmp_path)!r}), 5).hold(7, wait=0.3).__enter__()\n"
             "except BrainLockTimeout:\n    sys.exit(3)\n"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with FileLocks(tmp_path, timeout=5).hold(7):
        assert subprocess.run(probe, env=env, timeout=60).returncode == 3  # held here: refused there
    assert subprocess.run(probe, env=env, timeout=60).returncode == 0


def test_a_lock_file_removed_while_others_wait_never_lets_two_holders_in(tmp_path: Path) -> None:
    """``FileLocks.forget`` unlinks a brain's lock file (a deleted brain leaves none behind). A
    process that opened the old file before it was unlinked must not count its flock on that
    orphaned inode as the lock: it takes the lock on the file now at the path, or waits."""
    from service.locks import BrainLockTimeout, FileLocks

    locks = FileLocks(tmp_path, timeout=5)
    with locks.hold(7):
        pass
    stale = os.open(tmp_path / "7.lock", os.O_RDWR)  # a waiter that opened the file before the unlink
    try:
        locks.forget(7)
        assert not (tmp_path / "7.lock").exists()
        # Another process takes the lock on a new file at the path; the stale waiter can flock its
        # orphaned inode, but FileLocks must not accept it: the same check runs in ``hold``.
        probe = [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom service.locks import FileLocks\n"
                 f"with FileLocks(Path({str(tmp_path)!r}), 5).hold(7):\n    print('held', flush=True)\n    time.sleep(30)\n"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        holder = subprocess.Popen(probe, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            assert FileLocks._holds_path(stale, tmp_path / "7.lock") is False
            with pytest.raises(BrainLockTimeout):
                with FileLocks(tmp_path, timeout=5).hold(7, wait=0.3):
                    pass
        finally:
            holder.kill()
            holder.wait(timeout=30)
    finally:
        os.close(stale)


def test_deleting_a_brain_removes_its_lock_file(client: TestClient, settings: Settings) -> None:
    """The job process's writer made the file; the API's delete removes it."""
    learn(client)
    assert list((settings.data_dir / "locks").glob("*.lock"))
    assert client.delete("/v1/brains/b").status_code == 204
    assert not list((settings.data_dir / "locks").glob("*.lock"))
