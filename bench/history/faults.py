"""The fault injector (Jepsen's nemesis): a thread that injects faults while the clients run, each
once the clients have done their share of the operations, and records each as a ``fault``
operation (invoked when it struck, completed when the service was whole again).

- ``kill-api``: SIGKILL an API process (round robin over them) mid-operation, then restart it on
  the same port (embedded: the same data dir);
- ``kill-worker``: SIGKILL a process while it runs a job (one running then, else a sleep of the
  slow brain started for this) and restart it (embedded: the API process runs the jobs);
- ``short-lock``: the service runs with a writer-lock timeout of a few seconds (set when the stack
  starts) and the slow brain's sleeps outlast it (its sleep budget is raised when the run starts);
  at its turn the nemesis starts such a sleep and, once it runs, sends that brain a batch (recorded
  as an ``add`` of client "nemesis"), whose wake job then waits for the brain's lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import select

from bench.history.record import Op, Recorder
from bench.history.stacks import job_pid
from bench.history.workload import SHARED_LABELS, SLOW, Data, call
from service.settings import Settings
from service.tables import Job

SHORT_LOCK_SECONDS = 2.0
SLOW_SLEEP_SECONDS = 3 * SHORT_LOCK_SECONDS  # how long a sleep of the slow brain should consolidate
QUEUED_PATIENCE = 300.0  # how long a sleep the nemesis submits may wait behind the clients' sleeps


def slow_sleep_budget(dim: int, classes: int, seconds: float = SLOW_SLEEP_SECONDS) -> int:
    """The sleep budget that makes the slow brain (strategy "replay", default params) consolidate
    for about ``seconds`` on this machine: measured here, on one thread, as a worker runs it."""
    import torch

    from bench.history.reference import one_thread
    from models.learner import Replay
    from models.registry import create

    with one_thread():
        learner = create("replay", input_dim=dim, num_classes=classes, seed=0, params={})
        x, y = torch.randn(200, dim), torch.randint(0, classes, (200,))
        learner.observe(x, y)
        trial = 4_000
        started = time.perf_counter()
        learner.sleep(Replay(x, y), budget=trial)
        rate = trial / max(1e-3, time.perf_counter() - started)
    cap = Settings.model_fields["max_sleep_budget"].default  # the service's own limit (BRAIN_MAX_SLEEP_BUDGET)
    return int(min(cap, max(10_000, rate * seconds)))


class Nemesis(threading.Thread):
    def __init__(self, stack: Any, faults: list[str], progress: Callable[[], float], out: Path,
                 sessions: Callable[[], Any], data: Data) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.stack, self.faults, self.progress, self.data = stack, list(faults), progress, data
        self.recorder = Recorder(out / "history-nemesis.jsonl")
        self.sessions = sessions  # a context manager of a database session (the state's)
        self.stop = threading.Event()
        self.injected: list[str] = []
        self.errors: list[str] = []
        self.seq = 0
        self._apis = 0

    def run(self) -> None:
        try:
            for i, fault in enumerate(self.faults):
                if not self._wait_progress((i + 1) / (len(self.faults) + 1)):
                    return
                getattr(self, "_" + fault.replace("-", "_"))()
                self.injected.append(fault)
        except Exception as exc:  # noqa: BLE001 - reported with the run, which goes on
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.recorder.close()

    def _wait_progress(self, fraction: float) -> bool:
        while self.progress() < fraction:
            if self.stop.wait(0.02):
                return False
        return True

    def _record(self, fault: str, invoke: float, **detail: Any) -> None:
        self.seq += 1
        self.recorder.record(Op(id=f"nemesis:{self.seq}", client="nemesis", kind="fault",
                                brain=detail.pop("brain", None), invoke=invoke, complete=time.time(), outcome="ok",
                                request={"fault": fault, **detail}))

    # the faults
    def _kill_api(self) -> None:
        index = self._apis % self.stack.apis
        self._apis += 1
        invoke = time.time()
        pid = self.stack.kill_api(index)
        self.stack.restart_api(index)
        self._record("kill-api", invoke, target=f"api-{index}", pid=pid)

    def _kill_worker(self) -> None:
        """Kill a process while it runs a job: any running job (the clients keep the workers busy),
        else a sleep started for this (it may wait behind the clients' own sleeps in the queue)."""
        found = self._running(timeout=60.0)
        if found is None:
            found = self._running(self._start_sleep(), timeout=QUEUED_PATIENCE)
        job, index, pid = found
        invoke = time.time()
        killed = self.stack.kill_worker(index)
        self.stack.restart_worker(index)
        self._record("kill-worker", invoke, target=f"worker-{index}", pid=killed, job=job, job_pid=pid)

    def _short_lock(self) -> None:
        invoke = time.time()
        job = self._start_sleep()
        self._running(job, timeout=QUEUED_PATIENCE)
        batch = self._add(SLOW)
        self._record("short-lock", invoke, brain=SLOW, job=job, batch=batch, lock_timeout=SHORT_LOCK_SECONDS)

    # helpers
    def _add(self, brain: str, n: int = 4) -> str:
        """A batch of ``n`` new samples of the shared labels, through the first API that answers;
        recorded as a client's would be. The id of its operation."""
        self.seq += 1
        rng = np.random.default_rng([self.data.seed, 99, self.seq])
        labels = [SHARED_LABELS[i % len(SHARED_LABELS)] for i in range(n)]
        body = {"task": "t0", "samples": [{"id": f"nemesis-{self.seq}-{i}", "label": label,
                                           "x": self.data.point(label, rng)} for i, label in enumerate(labels)]}
        for url in self.stack.urls:
            invoke = time.time()
            with httpx.Client(base_url=url, timeout=30) as http:
                outcome, status, answer, error = call(http, "POST", f"/v1/brains/{brain}/samples", json=body)
            op = Op(id=f"nemesis:{self.seq}", client="nemesis", kind="add", brain=brain, invoke=invoke,
                    complete=time.time(), outcome=outcome, status=status, request=body, response=answer, error=error)
            self.recorder.record(op)
            if outcome == "ok":
                break
            self.seq += 1
        return op.id

    def _start_sleep(self) -> str:
        """A sleep of the slow brain, submitted through the first API that answers."""
        deadline = time.monotonic() + 60
        while True:
            for url in self.stack.urls:
                try:
                    r = httpx.post(f"{url}/v1/brains/{SLOW}/sleep", timeout=10)
                    if r.status_code == 202:
                        return r.json()["job"]
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("could not submit a sleep of the slow brain")
            time.sleep(0.2)

    def _running(self, job_id: str | None = None, timeout: float = 0.0) -> tuple[str, int, int] | None:
        """A running job (``job_id``, else any), waiting up to ``timeout`` for one; the stack's index
        of the process that runs it, and that process's pid. None when no job ran in time (and
        ``job_id`` was not given: its not starting is an error)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.sessions() as s:
                query = select(Job).where(Job.state == "running")
                jobs = s.scalars(query.where(Job.id == job_id) if job_id else query).all()
                started = [(job.id, [e for e in job.events or [] if e.get("event") == "started"]) for job in jobs]
            for found, events in started:
                pid = job_pid(events[-1].get("by")) if events else None
                if pid is not None and (index := self.stack.worker_of(pid)) is not None:
                    return found, index, pid
            if time.monotonic() >= deadline:
                if job_id:
                    raise RuntimeError(f"job {job_id} did not start within {timeout:.0f} s")
                return None
            time.sleep(0.02)
