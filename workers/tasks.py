"""Thin Celery tasks: they take ids, not objects, and call the orchestration in service.orchestration (and service.scheduling)."""

from __future__ import annotations

import logging
import os
import threading

from celery import Celery
from celery.signals import task_received, worker_ready

from service.jobs import (
    CHECK_SLEEP_TASK,
    RETRIES,
    RUN_JOB_TASK,
    WAKE_MERGE_TASK,
    WAKE_SHARD_TASK,
    BrainBusy,
    JobBusy,
    lower_priority,
    queue_of,
    retry_delay,
)
from service.orchestration import merge_shards, run_job, transient
from service.runtime import Runtime, build_runtime
from service.scheduling import check_sleep_due, recover
from service.settings import Settings
from service.sharding import shard

log = logging.getLogger(__name__)


class _ProcessRuntime:
    """One Runtime per worker process, built on first use (after the pool forks). A thread that
    asks for it runs jobs: its CPU priority is lowered by ``settings.job_nice`` first."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._rt: Runtime | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._niced = threading.local()

    def get(self) -> Runtime:
        if not getattr(self._niced, "done", False):  # the thread that runs jobs yields to the API
            lower_priority(self.settings.job_nice)
            self._niced.done = True
        with self._lock:
            if self._rt is None or self._pid != os.getpid():
                self._rt = build_runtime(self.settings, role="worker")
                self._pid = os.getpid()
            return self._rt


def register(app: Celery, settings: Settings) -> None:
    runtime = _ProcessRuntime(settings)

    @task_received.connect(weak=False)
    def _received(request=None, **_: object) -> None:
        """The job's record shows each message a worker took, and whether it was a redelivery."""
        if request is None or request.name != RUN_JOB_TASK or not request.args:
            return
        try:
            redelivered = bool((request.delivery_info or {}).get("redelivered"))
            runtime.get().jobs.event(str(request.args[0]), "received", worker=request.hostname,
                                     redelivered=redelivered)
        except Exception as exc:  # noqa: BLE001 - a record, never a reason to drop the message
            log.warning("could not record the receipt of job %s: %s", request.args[0], exc)

    @app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=RETRIES,
              ignore_result=True)
    def run_job_task(self, job_id: str) -> None:
        """A job interrupted by a backend that went away (Postgres or Redis restarting) or by the loss
        of its writer lock is retried with a growing delay (1 s, 2 s, .. at most 30 s), ``RETRIES``
        times; the last try records the failure. A message delivered again while its job still
        runs elsewhere (the broker's visibility timeout passed) is looked at again after half the
        lock timeout (``RETRIES`` times at most: 100 minutes at the default timeout; the runner
        ends the job either way), and never runs the job a second time. A job whose brain runs
        another job is deferred (``BrainBusy``): the worker takes the next message at once, and the
        brain's running job sends this one again when it ends; a late message (after half the lock
        timeout) covers a sender that died first."""
        last = self.request.retries >= RETRIES
        rt = runtime.get()
        try:
            run_job(rt, job_id, retry_transient=not last)
        except BrainBusy as exc:  # a new message, not a retry: deferrals do not count as tries
            self.apply_async(args=[job_id], queue=queue_of(exc.kind),
                             countdown=max(1.0, rt.settings.lock_timeout_seconds / 2))
        except JobBusy as exc:  # a redelivered message of a job whose runner is alive: look again later
            raise self.retry(exc=exc, countdown=max(1.0, rt.settings.lock_timeout_seconds / 2)) from exc
        except Exception as exc:
            if last or not transient(exc):
                raise
            raise self.retry(exc=exc, countdown=retry_delay(self.request.retries)) from exc

    @app.task(name=WAKE_SHARD_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
    def wake_shard_task(job_id: str, plan: dict, index: int) -> dict:
        """One shard of a sharded wake (``service.sharding``): its answer (JSON, kept by the result
        backend for the chord) says where its statistics are, or why there are none; never raises,
        so that the merge always runs."""
        return shard(runtime.get(), job_id, plan, index)

    @app.task(name=WAKE_MERGE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=RETRIES)
    def wake_merge_task(self, results: list[dict], job_id: str, plan: dict) -> None:
        """The chord's callback: merge and publish, retried as ``run_job_task`` is on transient errors."""
        last = self.request.retries >= RETRIES
        try:
            merge_shards(runtime.get(), job_id, plan, results, retry_transient=not last)
        except Exception as exc:
            if last or not transient(exc):
                raise
            raise self.retry(exc=exc, countdown=retry_delay(self.request.retries)) from exc

    @app.task(name=CHECK_SLEEP_TASK, ignore_result=True)
    def check_sleep_task() -> list[str]:
        return check_sleep_due(runtime.get())

    @worker_ready.connect(weak=False)
    def _recover(**_: object) -> None:
        """Samples acknowledged while no worker ran (or whose job died) are learned now."""
        submitted = recover(runtime.get(), orphaned_jobs=False)
        if submitted:
            log.info("recovery: submitted %d wake jobs", len(submitted))
