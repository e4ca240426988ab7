"""Faults on the full stack: a worker killed mid-sleep, Redis and Postgres restarted, the API
killed mid-ingest. Real ``brain worker`` (and, for the API kill, ``brain serve``) processes, as in
``test_full_stack`` (whose :class:`Stack` this module reuses), against private Redis and Postgres
instances started here on free ports, never the shared ones.

- a worker killed during a sleep job: nothing published; the dead worker's lock expires; the
  message (``acks_late``) is redelivered and publishes one sleep version;
- one writer per brain: a second writer waits and gives up; a dead holder's lock expires;
- Redis restarted: predictions go on, routes that need Redis answer 503 quickly; once back
  (empty), the refused batch is resent and learned once, the replay buffer comes back from the
  sleep snapshot, learning resumes;
- Postgres restarted: routes that need it answer 503, the pools reconnect; a job interrupted by
  the restart is retried and learns its samples;
- a job row whose broker message was lost does not hold learning back;
- the API killed mid-ingest: resent batches are learned once, none lost.

After every fault each test checks the same four things (:func:`_after_the_fault`):

- no acknowledged sample is lost or learned twice: the brain's learned count equals the number of
  distinct acknowledged ids, which is also the number of rows in its log, nothing is pending, and
  the wake versions' ``learned`` add up to it;
- no corrupt or half-written version: every listed version loads from its blobs (Postgres), numbered as its row,
  and the current one is listed;
- predictions identical to a reference: the API that lived through the fault and a freshly started
  one answer the same for the current version (and, while the fault lasts, the same as before it);
- the service is healthy again: ``/readyz`` answers 200.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from service.brains import get_brain
from service.db import upgrade
from service.locks import RedisLocks
from service.runtime import build_runtime
from service.tables import Job, Sample
from tests.integration.synthetic import Clusters
from tests.integration.test_full_stack import (
    Stack,
    _create,
    _learn,
    _ok,
    _poll,
    _predict,
    _running_jobs,
    _same,
    _versions,
)

pytestmark = pytest.mark.integration

PG_BIN = Path(os.environ.get("TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
RUN = uuid.uuid4().hex[:8]
LABELS = ["cat", "dog", "owl"]
MORE = [0, 1, 2]
SLEEP_LOCK_TIMEOUT = 20.0  # a dead worker's lock frees up after this; its message after this + 60 s


# -- private Redis and Postgres --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, up: bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                is_up = True
        except OSError:
            is_up = False
        if is_up == up:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"port {port} still {'down' if up else 'up'} after {timeout:.0f}s")
        time.sleep(0.05)


class PrivateRedis:
    """``redis-server`` on a free port, without persistence: a restart comes back empty."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, _free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        with open(self.root / f"redis-{self.port}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.root)], stdout=log, stderr=subprocess.STDOUT,
            )
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # a crash: nothing saved (there is no persistence anyway)
            self.proc.wait(timeout=30)
        _wait_port(self.port, up=False)


class PrivatePostgres:
    """A throw-away cluster (``initdb``) served by ``pg_ctl`` on a free port, as the postgres user
    when this runs as root (the server refuses to run as root)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pb-faults-pg-"))
        self.data, self.port = self.dir / "data", _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def _run(self, *cmd: str) -> None:
        if os.geteuid() == 0:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", opts,
                  "-w", "-t", "60", "start")
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        _wait_port(self.port, up=False)

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if not (shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()):
        pytest.skip("redis-server is not installed")
    r = PrivateRedis(tmp_path)
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL server binaries in {PG_BIN} (TEST_PG_BIN)")
    pg = PrivatePostgres()
    try:
        pg.start()
        upgrade(pg.url)
        yield pg
    finally:
        pg.remove()


def _stack(tmp_path: Path, request: pytest.FixtureRequest, pg_url: str, redis_url: str, **more: object) -> Stack:
    (tmp_path / "data").mkdir(exist_ok=True)
    s = Stack(tmp_path, tmp_path / "data", pg_url, redis_url)
    s.configure(keep_versions=1000, **more)  # every version stays listed: their ``learned`` add up
    request.node.service_logs = s.logs
    return s


@pytest.fixture
def stack_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:
    made: list[Stack] = []

    def make(pg_url: str, redis_url: str, **more: object) -> Stack:
        made.append(_stack(tmp_path, request, pg_url, redis_url, **more))
        return made[-1]

    try:
        yield make
    finally:
        for s in made:
            s.close()


@pytest.fixture
def fresh_pg(pg_url: str) -> str:
    upgrade(pg_url)
    return pg_url


# -- the checks after a fault ------------------------------------------------------------------------
def _after_the_fault(stack: Stack, api, name: str, *, acknowledged: int, probe: list[dict]) -> tuple[int, list]:
    """The four checks of the module docstring; the current version and its predictions."""
    # the service is healthy again
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    # no acknowledged sample lost, none learned twice
    brain = _poll(lambda: (b := _ok(api.get(f"/v1/brains/{name}")))["samples_pending"] == 0 and b,
                  "every acknowledged sample to be learned")
    assert brain["samples_learned"] == acknowledged
    rt = build_runtime(stack.settings, executor=False)
    try:
        with rt.db.session() as s:
            b = get_brain(s, name)
            s.expunge(b)
            rows, keys = s.execute(
                select(func.count(), func.count(func.distinct(Sample.sample_key))).where(Sample.brain_id == b.id)
            ).one()
            last = s.scalar(select(func.max(Sample.id)).where(Sample.brain_id == b.id))
        assert rows == keys == acknowledged  # every sample carries an id: one row per distinct id
        assert b.learned_position == last
        versions = _versions(api, name)
        learned = sum(v["stats"].get("learned", 0) for v in versions if v["kind"] == "wake")
        assert learned == acknowledged
        # no corrupt or half-written version: each listed one loads, as its row says
        numbers = [v["number"] for v in versions]
        assert b.current_version in numbers and numbers == sorted(set(numbers))
        for number in numbers:
            assert {rt.versions.key(b.id, number, f) for f in ("meta.json", "model.safetensors")} <= \
                set(rt.blobs.keys(rt.versions.folder(b.id, number))), number
            rt.versions.load(b, number)
        stored = {key.split("/")[1] for key in rt.blobs.keys(f"{b.id}/") if key.split("/")[1].startswith("v")}
        assert stored <= {rt.versions.folder(b.id, n).split("/")[1] for n in numbers}  # nothing unlisted in use
    finally:
        rt.close()
    # predictions identical: the API that lived through the fault and a fresh one
    version, predictions = _predict(api, name, probe)
    assert version == b.current_version
    with stack.api() as fresh:
        again = _predict(fresh, name, probe)
    assert again[0] == version and _same(again[1], predictions)
    return version, predictions


def _job(api, job_id: str) -> dict:
    return _ok(api.get(f"/v1/jobs/{job_id}"))


def _503(response, *words: str) -> str:
    assert response.status_code == 503, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert all(w.lower() in detail.lower() for w in words), detail
    return detail


def _timed(call):
    started = time.monotonic()
    out = call()
    return out, time.monotonic() - started


# -- a. a worker killed during a sleep job -----------------------------------------------------------

def _brain_data(prefix: str, *, seed: int) -> tuple[str, Clusters, list[dict]]:
    """A brain name unique to this run, its data (the first and the second labels) and a probe."""
    data = Clusters([*LABELS, *MORE], seed=seed)
    return f"{prefix}-{RUN}", data, data.inputs([*LABELS, *MORE], 3, seed=99)[0]

def test_worker_killed_mid_sleep_job_is_redelivered_and_published_once(fresh_pg, private_redis, stack_factory) -> None:
    """SIGKILL while a sleep consolidates (holding the brain's lock): nothing is published; the
    lock expires, so a new worker's wake job gets in; the sleep's message, not acknowledged
    (``acks_late``), comes back once its visibility timeout passes and publishes one sleep version."""
    stack = stack_factory(fresh_pg, private_redis.url, lock_timeout_seconds=SLEEP_LOCK_TIMEOUT)
    name, data, probe = _brain_data("kill-mid-sleep", seed=21)
    worker = stack.start_worker()
    with stack.api() as api:
        # the "replay" strategy rehearses ``budget`` samples: a sleep of a few seconds
        _create(api, name, strategy="replay", params={}, sleep_policy={"budget": 150_000})
        _learn(api, name, "t1", data.samples(LABELS, 30, seed=1, ids="t1"))
        before = _predict(api, name, probe)
        assert before[0] == 2

        job_id = _ok(api.post(f"/v1/brains/{name}/sleep"), 202)["job"]
        _poll(lambda: (_job(api, job_id)["phase"] or "").startswith("consolidating"), "the sleep to consolidate",
              interval=0.02)
        stack.kill(worker)
        job = _job(api, job_id)
        assert job["state"] == "running", f"the sleep ended before the kill: raise its budget ({job})"
        # nothing was published, nothing moved
        assert [v["kind"] for v in _versions(api, name)] == ["init", "wake"]
        now = _predict(api, name, probe)
        assert now[0] == before[0] and _same(now[1], before[1])

        stack.start_worker()
        # the dead worker's lock expires (lock_timeout_seconds): learning goes on before the redelivery
        woke = _learn(api, name, "t2", data.samples(MORE, 30, seed=2, ids="t2"))
        assert woke["version"] == 3
        # the sleep's message is redelivered (visibility timeout: lock timeout + 60 s) and runs once more
        job = _poll(lambda: (j := _job(api, job_id))["state"] in ("succeeded", "failed") and j,
                    "the sleep job to be redelivered", timeout=SLEEP_LOCK_TIMEOUT + 60 + 60, interval=0.5)
        assert job["state"] == "succeeded", job
        assert job["result"]["version"] == 4
        with api.app.state.runtime.db.session() as s:
            assert s.get(Job, job_id).attempts == 2  # the first, killed, and the redelivery
        # the job's record tells the story: queued by the API, taken and started by one worker
        # process, then taken again and finished by another
        events = job["events"]
        assert events[0]["event"] == "queued" and events[0]["by"].startswith("api@")
        started = [e for e in events if e["event"] == "started"]
        assert [e["attempt"] for e in started] == [1, 2]
        assert all(e["by"].startswith("worker@") for e in started) and started[0]["by"] != started[1]["by"]
        assert sum(e["event"] == "received" for e in events) >= 2 and events[-1]["event"] == "succeeded"
        kinds = [(v["number"], v["kind"]) for v in _versions(api, name)]
        assert kinds == [(1, "init"), (2, "wake"), (3, "wake"), (4, "sleep")]  # published once
        version, _ = _after_the_fault(stack, api, name, acknowledged=180, probe=probe)
        assert version == 4


def test_one_writer_per_brain_and_a_dead_holders_lock_expires(private_redis) -> None:
    """The brain's writer lock (Redis, full stack): a second writer waits, and gives up with
    ``BrainLockTimeout`` after the lock timeout; a holder that dies without releasing (its process
    killed) blocks the brain only until the lock's expiry; other brains are never blocked."""
    import redis

    from service.locks import BrainLockTimeout, RedisLocks

    client = redis.Redis.from_url(private_redis.url)
    try:
        locks = RedisLocks(client, timeout=1.0)
        with locks.hold(1):
            started = time.monotonic()
            with pytest.raises(BrainLockTimeout), locks.hold(1):
                pass
            assert 0.9 < time.monotonic() - started < 5
            with locks.hold(2):  # another brain
                pass
        # a holder that dies: acquired, never released
        assert client.lock("pb:lock:1", timeout=0.5, thread_local=False).acquire()  # expires in 0.5 s
        started = time.monotonic()
        with locks.hold(1):  # waits up to 1 s
            waited = time.monotonic() - started
        assert 0.3 < waited < 1.0
    finally:
        client.close()


# -- b. Redis restarted ---------------------------------------------------------------------------------
def test_redis_restart(fresh_pg, private_redis, stack_factory) -> None:
    """While Redis is down predictions still answer, routes that need Redis answer 503 with a
    reason, quickly; once it is back, empty, the replay buffer is restored from the last sleep's
    snapshot, the batch refused meanwhile is resent and learned once, and learning goes on."""
    stack = stack_factory(fresh_pg, private_redis.url)
    name, data, probe = _brain_data("redis-restart", seed=23)
    stack.start_worker()
    with stack.api() as api:
        _create(api, name, replay={"size": 100})
        with api.app.state.runtime.db.session() as s:
            brain_id = get_brain(s, name).id
        _learn(api, name, "t1", data.samples(LABELS, 40, seed=1, ids="t1"))  # 120 offered, 100 kept
        slept = _ok(api.post(f"/v1/brains/{name}/sleep", params={"wait": "true"}), 202)
        assert slept["state"] == "succeeded"
        snapshot_y = sorted(int(v) for v in stack.redis.hvals(f"pb:replay:{brain_id}:y"))
        assert len(snapshot_y) == 100
        before = _predict(api, name, probe)

        private_redis.stop()
        # predictions keep working (the version is read from Postgres and disk, not Redis)
        (version, predictions), seconds = _timed(lambda: _predict(api, name, probe))
        assert version == before[0] and _same(predictions, before[1]) and seconds < 10
        with stack.api() as fresh:  # even an API started while Redis is down
            version, predictions = _predict(fresh, name, probe)
            assert version == before[0] and _same(predictions, before[1])
        # routes that need Redis: 503 with a reason, not 500, not a hang
        refused = data.samples(MORE, 10, seed=2, ids="t2")
        response, seconds = _timed(lambda: api.post(f"/v1/brains/{name}/samples", json={"task": "t2", "samples": refused}))
        _503(response, "redis", "retry")
        assert seconds < 15
        response, seconds = _timed(lambda: api.post(f"/v1/brains/{name}/sleep"))
        _503(response, "redis")
        assert seconds < 15
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error")
        assert ready.json()["checks"]["database"] == "ok"
        assert _ok(api.get(f"/v1/brains/{name}"))["current_version"] == before[0]  # Postgres only
        # the refused requests left no job queued for ever
        with api.app.state.runtime.db.session() as s:
            stuck = s.scalars(select(Job).where(Job.brain_id == brain_id, Job.state == "queued")).all()
            assert stuck == []

        private_redis.start()  # back, empty
        assert stack.redis.keys("pb:replay:*") == []
        _poll(lambda: api.get("/readyz").status_code == 200, "/readyz after Redis is back", timeout=30)
        # the client resends the batch it got a 503 for: logged already, it is learned once
        resent = _ok(api.post(f"/v1/brains/{name}/samples", params={"wait": "true"},
                              json={"task": "t2", "samples": refused}), 202)
        assert resent["state"] == "succeeded", resent
        assert stack.redis.hlen(f"pb:replay:{brain_id}:y") == 100  # the snapshot, then 30 more offered
        assert int(stack.redis.get(f"pb:replay:{brain_id}:seen")) == 150
        # learning resumes
        more = _learn(api, name, "t2", data.samples(MORE, 10, seed=3, ids="t2b"))
        assert more["version"] == resent["version"] + 1
        _after_the_fault(stack, api, name, acknowledged=180, probe=probe)


# -- c. Postgres restarted ------------------------------------------------------------------------------
def test_postgres_restart(private_pg, private_redis, stack_factory) -> None:
    """While Postgres is down, routes that need it answer 503 with a reason (predictions of a brain
    in memory still answer); after the restart the pools reconnect (pre-ping) without restarting
    the API or the worker, and the batch refused meanwhile is resent and learned once."""
    stack = stack_factory(private_pg.url, private_redis.url)
    name, data, probe = _brain_data("pg-restart", seed=25)
    stack.start_worker()
    with stack.api() as api:
        _create(api, name)
        _learn(api, name, "t1", data.samples(LABELS, 40, seed=1, ids="t1"))
        before = _predict(api, name, probe)

        private_pg.stop()
        version, predictions = _predict(api, name, probe)  # from memory
        assert version == before[0] and _same(predictions, before[1])
        refused = data.samples(MORE, 10, seed=2, ids="t2")
        for call in (lambda: api.get(f"/v1/brains/{name}"),
                     lambda: api.post(f"/v1/brains/{name}/samples", json={"task": "t2", "samples": refused}),
                     lambda: api.post(f"/v1/brains/{name}/sleep"),
                     lambda: api.get(f"/v1/brains/{name}/versions")):
            response, seconds = _timed(call)
            _503(response, "database", "retry")
            assert seconds < 15
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error")

        private_pg.start()
        _poll(lambda: api.get("/readyz").status_code == 200, "/readyz after Postgres is back", timeout=30)
        resent = _ok(api.post(f"/v1/brains/{name}/samples", params={"wait": "true"},
                              json={"task": "t2", "samples": refused}), 202)
        assert (resent["accepted"], resent["state"]) == (30, "succeeded"), resent  # nothing was logged
        again = _ok(api.post(f"/v1/brains/{name}/samples", json={"task": "t2", "samples": refused}), 202)
        assert (again["accepted"], again["duplicates"]) == (0, 30)
        _after_the_fault(stack, api, name, acknowledged=150, probe=probe)


def test_a_job_whose_message_was_lost_does_not_hold_back_learning(fresh_pg, private_redis, stack_factory) -> None:
    """The API died after committing a wake job's row and before sending its message (or Redis
    lost the message): the row stays "queued". The next batch joins that job, as batches join a
    queued wake job, and its message is sent again, so the batch is learned, not left waiting."""
    stack = stack_factory(fresh_pg, private_redis.url)
    name, data, probe = _brain_data("lost-message", seed=29)
    stack.start_worker()
    with stack.api() as api:
        _create(api, name)
        _learn(api, name, "t1", data.samples(LABELS, 20, seed=1, ids="t1"))
        with api.app.state.runtime.db.session() as s:
            brain_id = get_brain(s, name).id
            lost = str(uuid.uuid4())
            s.add(Job(id=lost, brain_id=brain_id, kind="wake", payload={"samples": 0}))  # never sent
        body = _ok(api.post(f"/v1/brains/{name}/samples", params={"wait": "true"},
                            json={"task": "t2", "samples": data.samples(MORE, 10, seed=2, ids="t2")}), 202)
        assert body["job"] == lost and body["state"] == "succeeded", body
        _after_the_fault(stack, api, name, acknowledged=90, probe=probe)


def test_a_job_interrupted_by_a_postgres_restart_is_retried(private_pg, private_redis, stack_factory) -> None:
    """Postgres goes away while a wake job runs: the job is not failed but retried (the Celery
    task, with a growing delay) and learns its samples once Postgres is back, without another
    batch or a worker restart to set it going."""
    stack = stack_factory(private_pg.url, private_redis.url)
    name, data, probe = _brain_data("pg-mid-job", seed=31)
    stack.start_worker()
    with stack.api() as api:
        _create(api, name)
        _learn(api, name, "t1", data.samples(LABELS, 20, seed=1, ids="t1"))
        with api.app.state.runtime.db.session() as s:
            brain_id = get_brain(s, name).id
        # the test holds the brain's lock: the job is caught running, waiting for it
        with RedisLocks(stack.redis, timeout=120).hold(brain_id):
            job_id = _ok(api.post(f"/v1/brains/{name}/samples",
                                  json={"task": "t2", "samples": data.samples(MORE, 10, seed=2, ids="t2")}), 202)["job"]
            _poll(lambda: _running_jobs(api, brain_id) == [job_id], "the wake job to start")
            private_pg.stop()
        time.sleep(3)  # the job meets the stopped database, and its first retries too
        private_pg.start()
        job = _poll(lambda: (j := _job(api, job_id))["state"] in ("succeeded", "failed") and j,
                    "the interrupted job to be retried", timeout=90, interval=0.5)
        assert job["state"] == "succeeded", job
        assert job["result"]["learned"] == 30
        _after_the_fault(stack, api, name, acknowledged=90, probe=probe)


# -- d. the API killed mid-ingest ---------------------------------------------------------------------
class _Sender:
    """Posts numbered batches (each sample with an id) one after the other, from a thread, and
    records which batches were acknowledged (202) and what each answer said."""

    def __init__(self, url: str, name: str, batches: list[list[dict]]) -> None:
        self.url, self.name, self.batches = url, name, batches
        self.acked: dict[int, dict] = {}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            for i, batch in enumerate(self.batches):
                if self.stop.is_set():
                    return
                try:
                    r = http.post(f"/v1/brains/{self.name}/samples", json={"task": "t1", "samples": batch})
                except httpx.HTTPError as exc:  # the API died under this request
                    self.errors.append(f"batch {i}: {type(exc).__name__}")
                    return
                if r.status_code != 202:
                    self.errors.append(f"batch {i}: {r.status_code} {r.text[:200]}")
                    return
                self.acked[i] = r.json()


def _serve(stack: Stack) -> tuple[subprocess.Popen, str]:
    return stack.serve()


def test_api_killed_mid_ingest(fresh_pg, private_redis, stack_factory) -> None:
    """``brain serve`` killed with SIGKILL while a client streams batches with ids; restarted, the
    client resends every batch it has no 202 for, with the same ids: every acknowledged sample is
    learned exactly once (a batch logged but never answered comes back as duplicates), none lost."""
    stack = stack_factory(fresh_pg, private_redis.url)
    name = f"api-kill-{RUN}"
    data = Clusters(LABELS, seed=27)
    probe, _ = data.inputs(LABELS, 3, seed=99)
    batches = [data.samples(LABELS, 4, seed=100 + i, ids=f"b{i}") for i in range(60)]  # 12 samples each
    total = sum(len(b) for b in batches)
    stack.start_worker()
    api_proc, url = _serve(stack)
    with httpx.Client(base_url=url, timeout=60) as http:
        _create(http, name)
    sender = _Sender(url, name, batches)
    sender.thread.start()
    _poll(lambda: len(sender.acked) >= 15, "15 batches acknowledged", interval=0.005)
    stack.kill(api_proc)  # mid-stream
    sender.thread.join(timeout=60)
    assert not sender.thread.is_alive()
    assert 15 <= len(sender.acked) < len(batches), "the stream ended before the kill"
    acked_before = dict(sender.acked)

    api_proc, url = _serve(stack)
    with httpx.Client(base_url=url, timeout=120) as http:
        resent: dict[int, dict] = {}
        for i, batch in enumerate(batches):
            if i not in acked_before:
                resent[i] = _ok(http.post(f"/v1/brains/{name}/samples", json={"task": "t1", "samples": batch}), 202)
        answers = [*acked_before.values(), *resent.values()]
        # every sample accepted once over all answers; the batch in flight at the kill, if it was
        # logged, comes back as duplicates
        assert sum(a["accepted"] for a in answers) == total
        assert sum(a["duplicates"] for a in answers) == sum(a["duplicates"] for a in resent.values())
        assert all(a["accepted"] + a["duplicates"] == len(batches[i]) for i, a in {**acked_before, **resent}.items())
        _after_the_fault(stack, http, name, acknowledged=total, probe=probe)
        # the stream's first acknowledged batch is known and not learned again
        again = _ok(http.post(f"/v1/brains/{name}/samples", json={"task": "t1", "samples": batches[0]}), 202)
        assert (again["accepted"], again["duplicates"], again["job"]) == (0, len(batches[0]), None)
