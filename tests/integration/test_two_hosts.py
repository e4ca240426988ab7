"""The full stack on several hosts with no shared disk, for real: every ``brain serve`` and
``brain worker`` process runs on a host of its own, a Linux network namespace created here
(``tests/integration/netns.py``) that reaches Postgres and Redis only through its link, and with
an empty data dir of its own. The test talks to the API over HTTP, from the root namespace, at its
host's address. Proves:

- an API on host A and a worker on host B serve a brain together: it learns (``wait=true``
  answers with the worker's version), predicts well above chance and sleeps; each process is in
  its host's namespace, the API is not on the machine's loopback, a host reaches the services
  only through its link, and no process kept a checkpoint on disk;
- a worker cut off from the network in the middle of a wake job, holding the brain's writer lock
  and fence (its link down: it neither dies nor sees an error; its connections hang) loses the job
  to the other worker: once its lock has expired and the broker's visibility timeout (lock timeout
  + 60 s) has passed, the other worker's next sweep of unacknowledged messages (kombu's Redis
  transport, every 10 s as ``workers.celery_app`` configures it) redelivers it, and the same job
  publishes one version that learns every acknowledged sample exactly once; when the link comes
  back, the cut-off worker goes on with the job where it stood and is refused: its replay offer by
  the lock it no longer holds (``service.replay.RedisStore``), its publish by its stale fence.
  Nothing it does afterwards changes the brain (versions, counts, the job, predictions) nor its
  replay buffer in Redis.

About a minute and a half in all, most of it waiting for the redelivery.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session

from service.db import upgrade
from service.locks import RedisLocks
from service.tables import Brain, Job
from tests.integration.netns import (
    Host,
    Hosts,
    namespace_of,
    process_group,
    require_netns,
)
from tests.integration.synthetic import Clusters, accuracy
from tests.integration.test_full_stack import (
    Stack,
    _create,
    _learn,
    _ok,
    _poll,
    _predict,
    _sleep,
    _versions,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LABELS = ["cat", "dog", "owl"]
PROBE = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        print(target, "open")
    except OSError as exc:
        print(target, type(exc).__name__)
"""


@pytest.fixture
def hosts(pg_url: str, redis_url: str) -> Iterator[Hosts]:
    require_netns()
    upgrade(pg_url)
    h = Hosts([pg_url, redis_url])
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def stack(hosts: Hosts, pg_url: str, redis_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The stack's processes; stopped before ``hosts`` removes their namespaces."""
    (tmp_path / "unused").mkdir()  # Stack.settings' data dir: no process uses it
    s = Stack(tmp_path, tmp_path / "unused", pg_url, redis_url)
    request.node.service_logs = s.logs
    try:
        yield s
    finally:
        s.close()


def _env(stack: Stack, host: Host) -> dict[str, str]:
    """The stack's environment for a process on ``host``; it imports this checkout's code (not
    that of another checkout the interpreter's ``brain`` may be installed from, editable)."""
    env = host.env(stack.env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _serve(stack: Stack, host: Host) -> tuple:
    return stack.serve(host=host.addr, prefix=host.prefix, env=_env(stack, host))


def _worker(stack: Stack, host: Host):
    return stack.start_worker(prefix=host.prefix, env=_env(stack, host), node=f"brain@{host.ns}")


def _probe(host: Host, *targets: str) -> dict[str, str]:
    """Which ``host:port`` a process on ``host`` can connect to: "open", or the error it gets."""
    out = host.run(sys.executable, "-c", PROBE, *targets)
    assert out.returncode == 0, out.stderr
    return dict(line.split(" ", 1) for line in out.stdout.splitlines())


# -- 1. an API and a worker on two hosts -------------------------------------------------------------
def test_an_api_and_a_worker_on_two_hosts(hosts: Hosts, stack: Stack) -> None:
    a, b = hosts.add("a"), hosts.add("b")
    api, url = _serve(stack, a)
    worker = _worker(stack, b)

    # each process (the worker's pool too) runs in its host's namespace, not the test's
    here = namespace_of(os.getpid())
    for proc, host in ((api, a), (worker, b)):
        pids = process_group(proc.pid)
        assert pids and {namespace_of(p) for p in pids} == {host.netns_inode()}, (host.ns, pids)
        assert host.netns_inode() != here
    # the API answers at host A's address only: nothing listens on the machine's loopback there
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=2).close()
    # a host reaches Postgres and Redis through its link's forwarders alone
    for host in (a, b):
        real = [f"{u.hostname}:{u.port}" for u in map(urlsplit, host.forwarders)]
        on_link = [f"{host.gateway}:{u.port}" for u in map(urlsplit, host.forwarders)]
        forwarded = [f"{f.address[0]}:{f.address[1]}" for f in host.forwarders.values()]
        reach = _probe(host, *real, *on_link, *forwarded)
        assert [reach[t] for t in forwarded] == ["open", "open"], reach
        assert "open" not in {reach[t] for t in real + on_link}, reach

    name = "two-hosts"
    data = Clusters(LABELS, seed=41)
    with httpx.Client(base_url=url, timeout=120) as http:
        assert _create(http, name)["current_version"] == 1
        learned = _learn(http, name, "t1", data.samples(LABELS, 30, seed=1))
        assert learned["version"] == 2
        events = _ok(http.get(f"/v1/jobs/{learned['job']}"))["events"]
        assert events[0]["event"] == "queued" and events[0]["by"].startswith(f"api@{a.ns}:"), events
        assert [e["by"].split(":")[0] for e in events if e["event"] == "started"] == [f"worker@{b.ns}"], events

        inputs, truth = data.inputs(LABELS, 20, seed=9)
        version, predictions = _predict(http, name, inputs)
        assert version == 2 and accuracy(predictions, truth) > 0.9  # chance: 1/3
        assert _sleep(http, name)["version"] == 3
        assert [v["kind"] for v in _versions(http, name)] == ["init", "wake", "sleep"]
        brain = _ok(http.get(f"/v1/brains/{name}"))
        assert (brain["samples_learned"], brain["samples_pending"], brain["current_version"]) == (90, 0, 3)
        version, again = _predict(http, name, inputs)
        assert version == 3 and accuracy(again, truth) > 0.9

    for host in (a, b):  # the traffic did go through the links
        assert all(f.accepted > 0 for f in host.forwarders.values()), host.ns
    assert stack.checkpoints_on_disk() == []


# -- 2. a worker cut off mid-job ----------------------------------------------------------------------
LOCK_TIMEOUT = 6.0  # a cut-off worker's lock expires after this; its job's message after this + 60 s


def _sweep_seconds(stack: Stack) -> float:
    """How often a Celery worker looks for unacknowledged messages past their visibility timeout
    (kombu's Redis transport: a sweep every ``unacked_restore_interval`` seconds, of which every
    ``unacked_restore_throttle``-th scans Redis; ``workers.celery_app`` sets the throttle)."""
    from kombu.transport.redis import Channel

    from workers.celery_app import create_celery

    options = create_celery(stack.settings).conf.broker_transport_options
    return (options.get("unacked_restore_interval", Channel.unacked_restore_interval)
            * options.get("unacked_restore_throttle", Channel.unacked_restore_throttle))


@contextmanager
def _log_locked(engine: Engine) -> Iterator[None]:
    """The sample log (table ``samples``) locked against every reader until the block ends."""
    with engine.connect() as conn:
        tx = conn.begin()
        conn.execute(text("SET LOCAL lock_timeout = '10s'"))
        conn.execute(text("LOCK TABLE samples IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            tx.rollback()


def _waiting_ports(engine: Engine) -> set[int]:
    """The client ports of this database's backends that wait for a lock."""
    with engine.connect() as conn:
        return set(conn.execute(text(
            "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )).scalars())


def _job(engine: Engine, job_id: str) -> Job:
    with Session(engine, expire_on_commit=False) as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def _fence(engine: Engine, brain_id: int) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(Brain.writer_fence).where(Brain.id == brain_id))


def _started_on(job: Job) -> list[str]:
    """The hosts (namespaces) whose workers started the job, in order."""
    return [e["by"].split("@", 1)[1].split(":")[0] for e in job.events if e["event"] == "started"]


def _replay(stack: Stack, brain_id: int) -> tuple[int, dict, dict]:
    prefix = f"pb:replay:{brain_id}"
    return int(stack.redis.get(f"{prefix}:seen") or 0), stack.redis.hgetall(f"{prefix}:x"), stack.redis.hgetall(f"{prefix}:y")


def _state(http: httpx.Client, name: str) -> tuple[dict, list[dict]]:
    brain = _ok(http.get(f"/v1/brains/{name}"))
    return {k: brain[k] for k in ("current_version", "samples_learned", "samples_pending")}, _versions(http, name)


def test_a_worker_cut_off_mid_job_loses_its_job_and_publishes_nothing_stale(hosts: Hosts, stack: Stack) -> None:
    stack.configure(lock_timeout_seconds=LOCK_TIMEOUT)
    a, b, c = hosts.add("a"), hosts.add("b"), hosts.add("c")
    _, url = _serve(stack, a)
    workers = {h.ns: _worker(stack, h) for h in (b, c)}
    engine = create_engine(stack.settings.database_url)
    name = "cut-off"
    data = Clusters(LABELS, seed=43)
    first, batch = data.samples(LABELS, 30, seed=1), data.samples(LABELS, 100, seed=2)
    total = len(first) + len(batch)
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            _create(http, name)
            woke = _learn(http, name, "t1", first)
            assert woke["version"] == 2
            with Session(engine) as s:
                brain_id = s.scalar(select(Brain.id).where(Brain.name == name))
            fence_before = _fence(engine, brain_id)

            # Catch the wake job inside its writer: the test holds the brain's writer lock while the
            # batch is posted, so the job starts on one worker and waits for it; the test then locks
            # the sample log and lets go of the writer lock: the worker takes the lock and a fresh
            # fence, and stops at its first read of the log, with all of its work ahead of it.
            with ExitStack() as log_lock:
                with RedisLocks(stack.redis, timeout=120).hold(brain_id):
                    job_id = _ok(http.post(f"/v1/brains/{name}/samples", json={"task": "t1", "samples": batch}), 202)["job"]
                    _poll(lambda: _job(engine, job_id).state == "running", "the wake job to start", interval=0.02)
                    (victim_ns,) = _started_on(_job(engine, job_id))
                    log_lock.enter_context(_log_locked(engine))
                victim, survivor = (b, c) if victim_ns == b.ns else (c, b)
                ports = victim.forwarders[stack.settings.database_url].upstream_ports
                _poll(lambda: _fence(engine, brain_id) > fence_before and _waiting_ports(engine) & ports(),
                      f"the job on {victim.ns} to take its fence and wait for the sample log", interval=0.02)
                fence_victim = _fence(engine, brain_id)
                victim.cut()
                cut_at = time.monotonic()
            # the log is free again; the victim's read of it is answered, but it cannot hear it
            time.sleep(1.0)
            job = _job(engine, job_id)
            assert job.state == "running" and job.attempts == 1, (job.state, job.events)
            assert _state(http, name)[0]["current_version"] == 2, "the job published before the cut"

            # The victim's lock expires, the job's heartbeat goes stale, the broker makes its message
            # visible again (lock timeout + 60 s), and the survivor's next sweep finds it.
            patience = LOCK_TIMEOUT + 60 + 2 * _sweep_seconds(stack) + 60
            job = _poll(lambda: (j := _job(engine, job_id)).state in ("succeeded", "failed") and j,
                        f"the survivor {survivor.ns} to take the job over", timeout=patience, interval=0.5)
            took_over = time.monotonic() - cut_at
            assert job.state == "succeeded", (job.error, job.events)
            assert job.attempts == 2 and _started_on(job) == [victim.ns, survivor.ns], job.events
            assert job.result["learned"] == len(batch), job.result
            brain, versions = _state(http, name)
            assert brain == {"current_version": 3, "samples_learned": total, "samples_pending": 0}, brain
            wakes = [v for v in versions if v["kind"] == "wake"]
            assert sum(v["stats"]["learned"] for v in wakes) == total  # every sample learned once
            assert [v["stats"]["job"] for v in wakes] == [woke["job"], job_id]  # one version a job
            (published,) = [v for v in versions if v["stats"].get("job") == job_id]
            assert published["number"] == 3 and published["stats"]["base"] == 2
            assert published["stats"]["fence"] > fence_victim  # the survivor's own
            replay = _replay(stack, brain_id)
            assert replay[0] == total, replay[0]  # the replay buffer was offered every sample once

            # The link comes back: the victim hears its read of the log answered and goes on with the
            # job, learning it and then trying to publish, which its stale fence makes it fail.
            log = next(path for _, proc, path in stack.procs if proc is workers[victim.ns])
            seen = log.read_text(errors="replace")
            victim.restore()
            pattern = re.compile(rf"job {job_id} \(wake\) (interrupted, to be retried|failed): (.*)")
            resumed = _poll(lambda: pattern.search(log.read_text(errors="replace"), len(seen)),
                            f"the job on {victim.ns} to go on once its link is back",
                            timeout=60 if victim.tuned else 180, interval=0.2)
            time.sleep(3.0)  # whatever else it would do, it has had the time to
            assert re.search(r"another writer|writer lock expired|no longer this writer's", resumed.group(2)), resumed.group(0)
            # nothing it did afterwards shows: no version of its fence, no count, no replay offer
            assert _state(http, name) == (brain, versions)
            assert fence_victim not in {v["stats"]["fence"] for v in versions}
            again = _job(engine, job_id)
            assert (again.state, again.attempts, again.result) == ("succeeded", 2, job.result)
            inputs, truth = data.inputs(LABELS, 20, seed=9)
            version, predictions = _predict(http, name, inputs)
            assert version == 3 and accuracy(predictions, truth) > 0.9
            print(f"taken over {took_over:.0f}s after the cut")
            after = _replay(stack, brain_id)
            assert after == replay, (f"the cut-off worker wrote to the replay buffer after it lost its brain: "
                                     f"{after[0]} samples offered, not {replay[0]}")
    finally:
        for host in (b, c):
            host.restore()  # a worker cut off would not stop in time
        engine.dispose()
