"""The full stack for real: Postgres, Redis, and real ``brain worker`` / ``brain beat`` processes.

The API runs in-process (``TestClient(create_app(settings))``; with ``redis_url`` set it submits
Celery jobs), the workers and beat are subprocesses started with the same settings as ``BRAIN_*``
environment variables. Every process, and every in-process API, gets a data dir of its own, empty:
checkpoints and meta-training sets live in Postgres (``service.blobs``), and no disk is shared. Proves:

- a brain learns two tasks through Celery jobs (``wait=true`` answers with the new version), predicts
  well above chance, keeps its replay buffer in Redis, sleeps into a "sleep" version;
- a worker killed with SIGKILL is replaced and the new one continues from the published versions
  (old tasks still known after it learns a new one); every API instance, old or freshly started,
  serves identical predictions for the same version, and follows promotions;
- a worker killed in the middle of a job publishes nothing, and its replacement learns every
  acknowledged sample exactly once;
- samples acknowledged while no worker runs are learned once one starts, both when their message
  waits in the broker and when it was never sent (recovery from the sample log at worker start);
- a lost Redis replay buffer is restored from the last sleep's snapshot;
- sleep runs on schedule: every K samples (the worker) and every T seconds (Celery beat);
- no shared disk: a brain that learned, slept, was meta-trained and rolled back through one API and
  one worker is served identically by a ``brain serve`` process with an empty data dir, before and
  after every process restarts (each again with an empty data dir), and goes on learning.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bench.history.faults import slow_sleep_budget
from service.app import create_app
from service.brains import ingest
from service.db import upgrade
from service.locks import RedisLocks
from service.schemas import SamplesIn
from service.settings import Settings
from service.tables import Brain, Job, Version
from tests.conftest import make_settings
from tests.integration.synthetic import SMALL_PARAMS, Clusters, accuracy

pytestmark = pytest.mark.integration

BRAIN_CLI = Path(sys.executable).parent / "brain"  # the console script next to this interpreter
# the same typer app, where the script is not installed next to the interpreter
BRAIN = [str(BRAIN_CLI)] if BRAIN_CLI.exists() else [sys.executable, "-m", "brain_cli"]
READY_TIMEOUT = 60.0
TIMEOUT = 60.0


# -- the stack --------------------------------------------------------------------------------------
class Stack:
    """Settings shared by the in-process API and the worker/beat subprocesses, and those processes."""

    def __init__(self, root: Path, data_dir: Path, pg_url: str, redis_url: str) -> None:
        self.root = root  # this test's logs and its processes' data dirs
        self._base = (data_dir, pg_url, redis_url)
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.data_dirs: list[Path] = []  # one per process, each empty at its start
        self._numbers = itertools.count()
        self._celery = None
        self.configure()
        import redis

        self.redis = redis.Redis.from_url(redis_url)

    def configure(self, **more: object) -> None:
        """(Re)build the settings and the processes' environment; before anything has started."""
        assert not self.procs, "configure the stack before starting processes"
        data_dir, pg_url, redis_url = self._base
        overrides = {
            "database_url": pg_url, "redis_url": redis_url, "device": "cpu",
            "sleep_check_seconds": 0.5,  # beat's period
            "lock_timeout_seconds": 60.0,  # a killed worker's lock frees up within the test's patience
            "wait_timeout_seconds": 90.0,
            **more,
        }
        self.settings: Settings = make_settings(data_dir, **overrides)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BRAIN_")}
        self.env.update({f"BRAIN_{k.upper()}": str(v) for k, v in overrides.items()})
        self.env.update(BRAIN_DATA_DIR=str(self.settings.data_dir), BRAIN_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")

    def fresh_data_dir(self, name: str) -> Path:
        """An empty data dir for one process: no process sees another's files."""
        path = self.root / f"data-{name}-{next(self._numbers)}"
        path.mkdir()
        self.data_dirs.append(path)
        return path

    def checkpoints_on_disk(self) -> list[Path]:
        """Whatever any process kept of a brain in its data dir (none: the blobs are in Postgres)."""
        return [p for d in self.data_dirs for p in d.rglob("*") if p.is_file() and "brains" in p.parts]

    # processes
    def _spawn(self, name: str, *args: str, prefix: Sequence[str] = (), env: dict[str, str] | None = None,
               ) -> subprocess.Popen:
        """``brain <args>``, under ``prefix`` (a command that runs it, e.g. ``ip netns exec <ns>``),
        with ``env`` (default: the stack's environment) and an empty data dir of its own."""
        log = self.root / f"{name}-{len(self.procs)}.log"
        env = {**(self.env if env is None else env), "BRAIN_DATA_DIR": str(self.fresh_data_dir(name))}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*prefix, *BRAIN, *args], env=env, cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killing it kills its pool children too
            )
        self.procs.append((name, proc, log))
        return proc

    def start_worker(self, *, prefix: Sequence[str] = (), env: dict[str, str] | None = None,
                     node: str = "brain@") -> subprocess.Popen:
        """A worker (``prefix``, ``env``: see :meth:`_spawn`), ready once a worker whose node name
        starts with ``node`` answers a ping."""
        proc = self._spawn("worker", "worker", "--concurrency", "1", prefix=prefix, env=env)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._pong(node):
            if self._exited(proc):
                pytest.fail("the worker exited before it was ready")
            if time.monotonic() > deadline:
                pytest.fail(f"the worker did not answer a ping within {READY_TIMEOUT:.0f}s")
        return proc

    def start_beat(self) -> subprocess.Popen:
        return self._spawn("beat", "beat")

    def serve(self, *more: str, ready_timeout: float = READY_TIMEOUT, host: str = "127.0.0.1",
              prefix: Sequence[str] = (), env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
        """A ``brain serve`` process (with ``more`` arguments) on a free port of ``host``, ready; it
        and its URL (``prefix``, ``env``: see :meth:`_spawn`)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = self._spawn("api", "serve", "--host", host, "--port", str(port), *more, prefix=prefix, env=env)
        url = f"http://{host}:{port}"
        deadline = time.monotonic() + ready_timeout
        while True:
            if self._exited(proc):
                pytest.fail("the API exited before it was ready")
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the API did not get ready within {ready_timeout:.0f}s")
            time.sleep(0.1)

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM the process, and wait for it (SIGKILL after 30 s)."""
        if not self._exited(proc):
            os.kill(proc.pid, signal.SIGTERM)
        self._exited(proc, timeout=30)
        self._signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=30)

    def _pong(self, node: str = "brain@") -> bool:
        if self._celery is None:
            from celery import Celery

            self._celery = Celery("pb-test-control", broker=self.settings.broker_url)
        replies = self._celery.control.ping(timeout=0.5)
        return any(name.startswith(node) for reply in replies for name in reply)

    @staticmethod
    def _exited(proc: subprocess.Popen, timeout: float = 0.0) -> bool:
        """Whether the process has exited, without reaping it: while unreaped, its pid (the id of
        its process group) cannot be reused, so signalling the group reaches only what we started."""
        deadline = time.monotonic() + timeout
        while True:
            if proc.returncode is not None:
                return True
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        if proc.returncode is None:  # not reaped yet (see _exited)
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the process and its pool children at once: a crash, nothing cleaned up."""
        self._signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for _, proc, _ in self.procs:
            if not self._exited(proc):
                os.kill(proc.pid, signal.SIGTERM)  # the main process: Celery's warm shutdown
        for _, proc, _ in self.procs:
            self._exited(proc, timeout=30)
            self._signal_group(proc, signal.SIGKILL)  # whatever is left of its process group
            proc.wait(timeout=30)

    def logs(self) -> list[tuple[str, str]]:
        out = []
        for name, proc, log in self.procs:
            text = log.read_text(errors="replace") if log.exists() else "(no log)"
            out.append((f"{name} pid {proc.pid} (exit {proc.returncode})", text[-20_000:]))
        return out

    # the API
    @contextmanager
    def api(self) -> Iterator[TestClient]:
        """One API process: a fresh app (new runtime, caches, Celery client) over the same settings,
        with an empty data dir of its own."""
        settings = self.settings.model_copy(update={"data_dir": self.fresh_data_dir("inprocess-api")})
        with TestClient(create_app(settings)) as c:
            yield c

    def close(self) -> None:
        self.stop_all()
        if self._celery is not None:
            self._celery.close()
        self.redis.close()


@pytest.fixture(scope="module")
def shared(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The module's database and Redis (and the data dir of ``Stack.settings``, which no process
    uses: each gets an empty one of its own)."""
    upgrade(pg_url)
    return tmp_path_factory.mktemp("full-stack-data"), pg_url, redis_url


@pytest.fixture
def stack(shared: tuple[Path, str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = Stack(tmp_path, *shared)
    request.node.service_logs = s.logs  # attached to the report if the test fails
    try:
        yield s
    finally:
        s.close()


# -- helpers ----------------------------------------------------------------------------------------
def _ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def _create(c: TestClient, name: str, **extra: object) -> dict:
    body = {"name": name, "input": {"kind": "vector", "shape": [20]}, "params": SMALL_PARAMS, **extra}
    return _ok(c.post("/v1/brains", json=body), 201)


def _learn(c: TestClient, name: str, task: str, samples: list[dict]) -> dict:
    body = _ok(c.post(f"/v1/brains/{name}/samples", params={"wait": "true"},
                      json={"task": task, "samples": samples}), 202)
    assert body["accepted"] == len(samples) and body["state"] == "succeeded", body
    return body


def _sleep(c: TestClient, name: str) -> dict:
    body = _ok(c.post(f"/v1/brains/{name}/sleep", params={"wait": "true"}), 202)
    assert body["state"] == "succeeded", body
    return body["result"]


def _predict(c: TestClient, name: str, inputs: list[dict]) -> tuple[int, list[dict]]:
    body = _ok(c.post(f"/v1/brains/{name}/predict", json={"inputs": inputs}))
    return body["version"], body["predictions"]


def _same(a: list[dict], b: list[dict]) -> bool:
    return [p["label"] for p in a] == [p["label"] for p in b] and all(
        p["confidence"] == pytest.approx(q["confidence"], abs=1e-6) for p, q in zip(a, b)
    )


def _versions(c: TestClient, name: str) -> list[dict]:
    return _ok(c.get(f"/v1/brains/{name}/versions"))["versions"]


def _brain_id(c: TestClient, name: str) -> int:
    with c.app.state.runtime.db.session() as s:
        return s.scalar(select(Brain.id).where(Brain.name == name))


def _poll(check: Callable[[], object], what: str, timeout: float = TIMEOUT, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _running_jobs(c: TestClient, brain_id: int) -> list[str]:
    with c.app.state.runtime.db.session() as s:
        return list(s.scalars(select(Job.id).where(Job.brain_id == brain_id, Job.state == "running")))


def _replay_keys(stack: Stack, brain_id: int) -> set[str]:
    return {k.decode() for k in stack.redis.keys(f"pb:replay:{brain_id}:*")}


# -- tests ------------------------------------------------------------------------------------------
RUN = uuid.uuid4().hex[:8]  # brain names unique in the session's database, which other tests share
TASK1 = ["cat", "dog", "owl"]  # string labels
TASK2 = [0, 1, 2]  # integer labels
TASK3 = ["elk", 7]


def test_learn_sleep_and_survive_worker_and_api_restarts(stack: Stack) -> None:
    name = f"full-stack-{RUN}"
    data = Clusters([*TASK1, *TASK2, *TASK3], seed=3)
    probe, _ = data.inputs([*TASK1, *TASK2, *TASK3], 4, seed=99)
    worker = stack.start_worker()

    with stack.api() as api1:
        assert _create(api1, name)["current_version"] == 1
        first = _learn(api1, name, "t1", data.samples(TASK1, 50, seed=1))
        assert first["version"] == 2
        assert _predict(api1, name, probe)[0] == 2  # the API now serves version 2 from memory
        second = _learn(api1, name, "t2", data.samples(TASK2, 50, seed=2))
        assert second["version"] == 3
        # the worker's version reaches the API through Redis, long before the cache's 30 s expiry
        _poll(lambda: _predict(api1, name, probe)[0] == 3, "version 3 served", timeout=2.0)

        held_out, truth = data.inputs([*TASK1, *TASK2], 20, seed=7)
        version, predictions = _predict(api1, name, held_out)
        assert version == 3
        assert accuracy(predictions, truth) > 0.9  # chance: 1/6
        brain = _ok(api1.get(f"/v1/brains/{name}"))
        assert brain["labels"] == [*TASK1, *TASK2]
        assert brain["samples_learned"] == 300 and brain["samples_pending"] == 0

        # the replay buffer lives in Redis: 300 samples offered to a buffer of 500
        brain_id = _brain_id(api1, name)
        assert _replay_keys(stack, brain_id) == {f"pb:replay:{brain_id}:{k}" for k in ("x", "y", "seen")}
        assert stack.redis.hlen(f"pb:replay:{brain_id}:y") == 300
        assert int(stack.redis.get(f"pb:replay:{brain_id}:seen")) == 300

        job = _ok(api1.get(f"/v1/jobs/{second['job']}"))
        assert (job["kind"], job["state"], job["brain"], job["error"]) == ("wake", "succeeded", name, None)
        assert job["result"] == {"learned": 150, "version": 3, "left": 0}
        assert job["progress"] == 1.0 and job["finished_at"] is not None

        slept = _sleep(api1, name)
        assert slept["version"] == 4 and slept["replayed"] == 300
        versions = _versions(api1, name)
        assert [(v["number"], v["kind"]) for v in versions] == [(1, "init"), (2, "wake"), (3, "wake"), (4, "sleep")]
        assert versions[-1]["current"] and versions[-1]["stats"]["replay_snapshot"] is True
        # the worker stored the version in Postgres, not in its data dir
        blobs = api1.app.state.runtime.blobs
        assert blobs.transactional and stack.checkpoints_on_disk() == []
        assert blobs.keys(f"{brain_id}/v000004/") == [f"{brain_id}/v000004/{f}" for f in
                                                       ("meta.json", "model.safetensors", "replay.safetensors")]
        before = _predict(api1, name, probe)
        assert before[0] == 4

        # the worker dies hard; a new one takes over
        stack.kill(worker)
        assert worker.returncode == -signal.SIGKILL
        stack.start_worker()
        now = _predict(api1, name, probe)
        assert now[0] == before[0] and _same(now[1], before[1])  # nothing moved

        with stack.api() as api2:  # an API restart: loads version 4 from disk
            version, predictions = _predict(api2, name, probe)
            assert version == 4 and _same(predictions, before[1])

            third = _learn(api2, name, "t3", data.samples(TASK3, 50, seed=3))
            assert third["version"] == 5
            everything, truth = data.inputs([*TASK1, *TASK2, *TASK3], 20, seed=8)
            version, predictions = _predict(api2, name, everything)
            assert version == 5
            # the new worker continued from version 4: old tasks kept, the new one learned
            assert accuracy(predictions, truth) > 0.9
            brain = _ok(api2.get(f"/v1/brains/{name}"))
            assert brain["samples_learned"] == 400 and brain["current_version"] == 5
            after = _predict(api2, name, probe)
            assert after[0] == 5

        # the API that stayed up swaps in version 5 and answers as the other did
        version, predictions = _predict(api1, name, probe)
        assert version == 5 and _same(predictions, after[1])

        # a rollback is seen by every API instance, and serves version 4's answers again
        with stack.api() as api3:
            version, predictions = _predict(api3, name, probe)
            assert version == 5 and _same(predictions, after[1])
            assert _ok(api3.post(f"/v1/brains/{name}/versions/4/promote"))["current"] is True
            version, predictions = _predict(api3, name, probe)
            assert version == 4 and _same(predictions, before[1])
        version, predictions = _predict(api1, name, probe)
        assert version == 4 and _same(predictions, before[1])


def test_samples_acknowledged_without_a_worker_are_learned_when_one_starts(stack: Stack) -> None:
    queued_name, lost_name = f"no-worker-queued-{RUN}", f"no-worker-lost-{RUN}"
    data = Clusters(TASK1, seed=5)
    with stack.api() as api:
        _create(api, queued_name)
        _create(api, lost_name)
        samples = data.samples(TASK1, 20, seed=1)

        # no worker runs: the samples are acknowledged and their job waits in the broker
        accepted = _ok(api.post(f"/v1/brains/{queued_name}/samples", json={"task": "t1", "samples": samples}), 202)
        assert accepted["accepted"] == len(samples) and accepted["state"] == "queued"
        assert _ok(api.get(f"/v1/jobs/{accepted['job']}"))["state"] == "queued"
        assert _ok(api.get(f"/v1/brains/{queued_name}"))["samples_pending"] == len(samples)

        # acknowledged into the log, but the job message was never sent (the API died in between)
        _, n, _ = ingest(api.app.state.runtime, name=lost_name, body=SamplesIn(task="t1", samples=samples))
        assert n == len(samples)
        assert _ok(api.get(f"/v1/brains/{lost_name}"))["samples_pending"] == len(samples)
        assert _ok(api.get(f"/v1/brains/{lost_name}/versions"))["current"] == 1

        stack.start_worker()
        job = _poll(lambda: (j := _ok(api.get(f"/v1/jobs/{accepted['job']}")))["state"] in ("succeeded", "failed")
                    and j, "the queued job to run")
        assert job["state"] == "succeeded", job
        for name in (queued_name, lost_name):
            brain = _poll(lambda name=name: (b := _ok(api.get(f"/v1/brains/{name}")))["samples_pending"] == 0
                          and b, f"brain {name}'s samples to be learned")
            assert brain["samples_learned"] == len(samples)
            assert brain["current_version"] == 2
            inputs, truth = data.inputs(TASK1, 20, seed=9)
            version, predictions = _predict(api, name, inputs)
            assert version == 2 and accuracy(predictions, truth) > 0.9


def test_a_worker_killed_mid_job_loses_nothing(stack: Stack) -> None:
    """SIGKILL while a wake job runs: nothing was published, and a new worker learns every
    acknowledged sample exactly once (from the sample log, after the last published version)."""
    name = f"killed-mid-job-{RUN}"
    data = Clusters(TASK1, seed=17)
    with stack.api() as api:
        _create(api, name)
        brain_id = _brain_id(api, name)
        jobs = []
        for seed in (1, 2, 3):  # three batches, acknowledged while no worker runs
            body = _ok(api.post(f"/v1/brains/{name}/samples",
                                json={"task": "t1", "samples": data.samples(TASK1, 100, seed=seed)}), 202)
            jobs.append(body["job"])
        total = 3 * 3 * 100

        # The test holds the brain's writer lock, so the worker's job is caught running (taken off
        # the queue, not acknowledged, learning blocked) however fast the machine learns.
        with RedisLocks(stack.redis, timeout=120).hold(brain_id):
            worker = stack.start_worker()
            # whichever runs first: a posted batch's job, or the one the worker's start-up recovery
            # submitted for the pending samples
            running = _poll(lambda: _running_jobs(api, brain_id), "a job of the brain to start")
            assert len(running) == 1  # one at a time
            stack.kill(worker)
        brain = _ok(api.get(f"/v1/brains/{name}"))
        assert (brain["current_version"], brain["samples_learned"]) == (1, 0)
        assert brain["samples_pending"] == total

        stack.start_worker()
        brain = _poll(lambda: (b := _ok(api.get(f"/v1/brains/{name}")))["samples_pending"] == 0 and b,
                      "the samples to be learned by the new worker")
        assert brain["samples_learned"] == total  # every one, and none twice
        # the messages that waited in the broker meanwhile run too (finding little or nothing left)
        for job_id in set(jobs) - set(running):
            job = _poll(lambda job_id=job_id: (j := _ok(api.get(f"/v1/jobs/{job_id}")))["state"]
                        in ("succeeded", "failed") and j, f"job {job_id} to run")
            assert job["state"] == "succeeded", job
        inputs, truth = data.inputs(TASK1, 20, seed=9)
        version, predictions = _predict(api, name, inputs)
        assert version == brain["current_version"] > 1
        assert accuracy(predictions, truth) > 0.9
        learned = sum(v["stats"].get("learned", 0) for v in _versions(api, name) if v["kind"] == "wake")
        assert learned == total


def test_lost_redis_replay_buffer_is_restored_from_the_sleep_snapshot(stack: Stack) -> None:
    name = f"redis-loss-{RUN}"
    data = Clusters([*TASK1, *TASK2], seed=9)
    stack.start_worker()
    with stack.api() as api:
        _create(api, name, replay={"size": 100})
        brain_id = _brain_id(api, name)
        _learn(api, name, "t1", data.samples(TASK1, 50, seed=1))  # 150 offered, 100 kept
        assert _sleep(api, name)["replayed"] == 100  # and a snapshot of the buffer

        assert stack.redis.delete(*_replay_keys(stack, brain_id)) == 3  # Redis lost the buffer
        assert _replay_keys(stack, brain_id) == set()

        _learn(api, name, "t2", data.samples(TASK2, 10, seed=2))  # 30 more
        # restored from the snapshot, then the new samples offered: not a buffer of 30
        assert stack.redis.hlen(f"pb:replay:{brain_id}:y") == 100
        assert int(stack.redis.get(f"pb:replay:{brain_id}:seen")) == 180
        labels = {int(v) for v in stack.redis.hvals(f"pb:replay:{brain_id}:y")}
        assert {0, 1, 2} <= labels  # task 1's label indices are back
        slept = _sleep(api, name)
        assert slept["replayed"] == 100

        # lost again right before a sleep: the sleep restores it itself
        stack.redis.delete(*_replay_keys(stack, brain_id))
        assert _sleep(api, name)["replayed"] == 100
        assert stack.redis.hlen(f"pb:replay:{brain_id}:y") == 100


def test_scheduled_sleep_every_samples_and_every_seconds(stack: Stack) -> None:
    by_samples, by_time = f"sleep-every-samples-{RUN}", f"sleep-every-seconds-{RUN}"
    period = 3.0  # by_time's every_seconds: its first wake comes well before, so only beat sleeps it
    data = Clusters(TASK1, seed=13)

    def sleeps(api: TestClient, name: str) -> list[dict]:
        return [v for v in _versions(api, name) if v["kind"] == "sleep"]

    stack.start_worker()
    with stack.api() as api:
        created = _create(api, by_time, sleep_policy={"every_seconds": period})
        due = time.monotonic() + period
        _learn(api, by_time, "t1", data.samples(TASK1, 10, seed=1))

        # every K samples: the worker's wake job asks for the sleep itself, no beat needed
        _create(api, by_samples, sleep_policy={"every_samples": 40})
        _learn(api, by_samples, "t1", data.samples(TASK1, 10, seed=2))  # 30 < 40: not yet
        _learn(api, by_samples, "t1", data.samples(TASK1, 5, seed=3))  # 45 >= 40
        slept = _poll(lambda: sleeps(api, by_samples), f"a sleep version of {by_samples}")
        assert [v["stats"]["reason"] for v in slept] == ["every_samples"]
        assert slept[0]["samples_learned"] == 45

        # every T seconds needs beat: once due, still nothing happens without it
        time.sleep(max(0.0, due - time.monotonic()) + 2 * stack.settings.sleep_check_seconds)
        assert sleeps(api, by_time) == []
        stack.start_beat()
        slept = _poll(lambda: sleeps(api, by_time), f"a sleep version of {by_time} (beat)")
        assert slept[0]["stats"]["reason"] == "schedule"
        assert slept[0]["samples_learned"] == 30
        elapsed = datetime.fromisoformat(slept[0]["created_at"]) - datetime.fromisoformat(created["created_at"])
        assert elapsed.total_seconds() >= period
        assert _ok(api.get(f"/v1/brains/{by_time}"))["current_version"] == slept[0]["number"]
        # nothing learned since: beat keeps checking (every 0.5 s) but does not make it sleep again
        time.sleep(4 * stack.settings.sleep_check_seconds)
        assert len(sleeps(api, by_time)) == 1


SHORT_LOCK_TIMEOUT = 2.0  # far below the jobs of the next test


def test_a_job_longer_than_the_lock_timeout_keeps_its_brain(stack: Stack) -> None:
    """One fenced writer per brain (issue 14) with a lock timeout far shorter than a job: two
    workers, a sleep that runs several lock timeouts, and a wake job for the same brain sent
    meanwhile. The sleep's lock (and its job's heartbeat) is renewed while it runs, so the wake
    waits (deferred behind the sleep, issue 17; not failed) and publishes after it, on top of it;
    nothing runs twice."""
    stack.configure(lock_timeout_seconds=SHORT_LOCK_TIMEOUT)
    stack.start_worker()
    stack.start_worker()
    data, labels = Clusters(["a", "b", "c"], dim=20, seed=5), ["a", "b", "c"]
    with stack.api() as c:
        _create(c, "long", strategy="replay", params={})
        _learn(c, "long", "t1", data.samples(labels, 20, seed=1))
        budget = slow_sleep_budget(20, 100, seconds=4 * SHORT_LOCK_TIMEOUT)  # measured on this machine
        _ok(c.patch("/v1/brains/long", json={"sleep_policy": {"budget": budget}}))
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
    assert sleep_seconds > 2 * SHORT_LOCK_TIMEOUT, f"the sleep took {sleep_seconds:.1f}s: too short to test anything"
    assert [v.kind for v in versions] == ["sleep", "wake"]  # the wake waited for the sleep
    sleep_v, wake_v = versions
    assert wake_v.stats["base"] == sleep_v.number and sleep_v.stats["base"] == sleep_v.number - 1
    assert wake_v.stats["fence"] > sleep_v.stats["fence"]
    assert wake_v.log_position > sleep_v.log_position and wake_v.stats["log_from"] == sleep_v.log_position
    assert sleep_row.attempts == 1  # never started twice
    assert brain["samples_learned"] == 90 and brain["samples_pending"] == 0
    assert brain["current_version"] == wake_v.number


ANML = {"hidden": 64, "nm_hidden": 32, "meta_lr": 0.003}  # meta-trainable, and cheap on a CPU


def test_no_process_needs_a_shared_disk(stack: Stack) -> None:
    """API and worker each start with an empty data dir of their own: a brain is meta-trained, learns,
    sleeps, learns more and is rolled back; a ``brain serve`` process with yet another empty data
    dir serves it identically; every process restarts (again empty) and it still does, and learns on."""
    name = f"no-shared-disk-{RUN}"
    data = Clusters([*TASK1, *TASK2], seed=21)
    background = Clusters([f"bg{i}" for i in range(5)], seed=22).samples([f"bg{i}" for i in range(5)], 20, seed=1)
    probe, _ = data.inputs([*TASK1, *TASK2], 4, seed=98)
    held_out, truth = data.inputs(TASK1, 20, seed=97)
    worker = stack.start_worker()

    with stack.api() as api:
        _create(api, name, strategy="anml", params=ANML)
        meta = _ok(api.post(f"/v1/brains/{name}/meta-train", params={"wait": "true"},
                            json={"samples": background, "steps": 10, "inner_steps": 2}), 202)
        assert meta["state"] == "succeeded" and meta["result"]["version"] == 2, meta
        assert _learn(api, name, "t1", data.samples(TASK1, 40, seed=1))["version"] == 3
        assert _sleep(api, name)["version"] == 4
        assert _learn(api, name, "t2", data.samples(TASK2, 40, seed=2))["version"] == 5
        assert [v["kind"] for v in _versions(api, name)] == ["init", "meta", "wake", "sleep", "wake"]
        # the meta-training set went through Postgres too, and the job deleted it
        brain_id = _brain_id(api, name)
        assert api.app.state.runtime.blobs.keys(f"{brain_id}/meta/") == []

        assert _ok(api.post(f"/v1/brains/{name}/versions/4/promote"))["current"] is True  # roll back
        version, predictions = _predict(api, name, held_out)
        assert version == 4 and accuracy(predictions, truth) > 0.8  # chance: 1/3
        reference = _predict(api, name, probe)

    def served(url: str) -> tuple[int, list[dict]]:
        body = _ok(httpx.post(f"{url}/v1/brains/{name}/predict", json={"inputs": probe}, timeout=60))
        return body["version"], body["predictions"]

    api_proc, url = stack.serve()  # a second API, a process of its own
    version, predictions = served(url)
    assert version == 4 and _same(predictions, reference[1])

    # everything restarts, each process with a new, empty data dir
    stack.kill(worker)
    stack.stop(api_proc)
    stack.start_worker()
    api_proc, url = stack.serve()
    version, predictions = served(url)
    assert version == 4 and _same(predictions, reference[1])
    body = _ok(httpx.post(f"{url}/v1/brains/{name}/samples", params={"wait": "true"}, timeout=120,
                          json={"task": "t2", "samples": data.samples(TASK2, 40, seed=3)}), 202)
    assert body["state"] == "succeeded" and body["version"] == 6, body  # learned on top of version 4
    for task, labels in (("t2", TASK2), ("t1", TASK1)):  # the new samples learned, the old task kept
        inputs, truth = data.inputs(labels, 20, seed=96)
        body = _ok(httpx.post(f"{url}/v1/brains/{name}/predict", json={"inputs": inputs, "task": task}, timeout=60))
        assert body["version"] == 6 and accuracy(body["predictions"], truth) > 0.8, task
    assert stack.checkpoints_on_disk() == []


def test_forgetting_runs_on_a_worker_and_purges_the_redis_buffer(stack: Stack) -> None:
    """Exact unlearning (issue 18) through a Celery worker: a brain whose learner cannot downdate
    (a learning sparse layer) forgets a source: it leaves the log and the Redis buffer now, and the
    next sleep retrains from the remaining log and deletes every other version."""
    name = f"forget-{RUN}"
    data = Clusters(TASK1, seed=4)
    stack.start_worker()
    with stack.api() as api:
        _create(api, name)
        brain_id = _brain_id(api, name)
        samples = data.samples(TASK1, 20, seed=1)
        for i, s in enumerate(samples):
            s["source"] = "alice" if i % 4 == 0 else "bob"
        _learn(api, name, "t1", samples)
        alice = {np.asarray(s["x"], dtype="<f4").tobytes() for s in samples if s["source"] == "alice"}
        assert alice <= set(stack.redis.hvals(f"pb:replay:{brain_id}:x"))

        body = _ok(api.request("DELETE", f"/v1/brains/{name}/samples", params={"wait": "true"},
                               json={"source": "alice"}), 202)
        assert body["state"] == "succeeded", body
        assert body["result"]["forgotten"] == 15 and body["result"]["how"] == "retrain at next sleep"
        assert not alice & set(stack.redis.hvals(f"pb:replay:{brain_id}:x"))
        assert stack.redis.hlen(f"pb:replay:{brain_id}:y") == 45

        slept = _sleep(api, name)
        assert slept["retrained"] == 45 and slept["replayed"] == 45
        assert [v["number"] for v in _versions(api, name)] == [slept["version"]]
        (erasure,) = _ok(api.get(f"/v1/brains/{name}/erasures"))["erasures"]
        assert erasure["how"] == "retrained" and erasure["rows"] == 15 and erasure["selector"] == {"source": "alice"}
