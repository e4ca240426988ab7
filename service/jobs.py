"""Background jobs: a row in ``jobs`` plus a dispatch to whichever executor runs.

Routes and orchestration call :meth:`Jobs.submit`; they never know which backend runs the job:
- ``service.job_child.ChildJobs``: a job process that the API process starts and supervises (the
  embedded default), which runs them on an :class:`InProcessJobs` of its own;
- :class:`InProcessJobs`: a thread pool in the process that submits them;
- :class:`CeleryJobs`: a Celery message to the ``wake`` or ``sleep`` queue (``meta_train`` jobs go
  to ``sleep``), run by ``brain worker``.
A job message carries only the job id; the job reads everything else from the database.

Fairness between brains (issue 17): the jobs of one brain run one at a time (they write it), so a
job whose brain is running another one does not start: it stays queued, marked "deferred", and its
executor's slot (a Celery worker, a job thread) goes to the next job in the queue, another brain's;
when the brain's running job ends, its deferred jobs are dispatched again, behind what was queued
meanwhile (:meth:`Jobs.start`, :meth:`Jobs.finish`). A brain thus holds at most one executor, and a
wake's continuation queues behind the other brains' jobs: a backlog never holds another brain back
by more than one of its jobs.

What runs a job (``service.orchestration``) is handed to the executor as a :class:`JobRunner` by
the code that builds a process (its composition root: ``service.app``, ``workers``), so that the
runtime and the executors depend on no orchestration.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.db import Database
from service.tables import Brain, Job, utcnow

log = logging.getLogger(__name__)

MAX_EVENTS = 50  # events kept per job: the first few and the latest (redelivered messages add some)

RUN_JOB_TASK = "plastic_brain.run_job"
WAKE_SHARD_TASK = "plastic_brain.wake_shard"  # a sharded wake's shard (service.sharding)
WAKE_MERGE_TASK = "plastic_brain.wake_merge"  # and its merge, the chord's callback
SHARD_RESULT_SECONDS = 3600  # how long the result backend keeps a shard's answer (JSON)
CHECK_SLEEP_TASK = "plastic_brain.check_sleep"
QUEUES = ("wake", "sleep")
# Job kinds without a queue of their own: long consolidation-like work goes with sleep.
QUEUE_OF = {"meta_train": "sleep", "forget": "sleep"}


RETRIES = 20  # tries of a job whose error may pass (``service.orchestration.transient``): about 8 minutes


def retry_delay(attempt: int) -> float:
    """Seconds before try ``attempt + 1`` of such a job: 1, 2, 4, ... at most 30."""
    return min(30.0, 2.0 ** attempt)


def queue_of(kind: str) -> str:
    """The Celery queue of a job kind."""
    return kind if kind in QUEUES else QUEUE_OF.get(kind, "wake")


class JobBusy(RuntimeError):
    """The job is running elsewhere and its runner is alive: this delivery must not start it."""


class BrainBusy(RuntimeError):
    """Another job of the job's brain is running: this one stays queued (deferred), and is
    dispatched again when that one ends. Its executor takes the next job meanwhile."""

    def __init__(self, job_id: str, kind: str, behind: str) -> None:
        super().__init__(f"job {job_id} waits for job {behind} of its brain")
        self.job_id, self.kind, self.behind = job_id, kind, behind


@dataclass(frozen=True)
class JobRunner:
    """What runs jobs in a process, handed down by its composition root: ``run(rt, job_id)`` runs
    one job and records its end; ``retryable(exc)``: the error may pass when the job runs again;
    ``recover(rt, keep)``: after the process that ran the jobs died, fail its running jobs and run
    its queued ones (those in ``keep`` excepted: sent to its successor), and submit what they left
    unlearned."""

    run: Callable[[Any, str], object]
    retryable: Callable[[BaseException], bool]
    recover: Callable[[Any, Collection[str]], object]


class Executor(Protocol):
    def dispatch(self, job_id: str, kind: str) -> None: ...
    def shutdown(self) -> None: ...


class InProcessJobs:
    """Jobs on threads of the API process. The threads run at a lower CPU priority (``nice``, on
    Linux a thread's own) so that training yields the CPU to the requests being served.

    A job that ends with an error ``retryable`` says may succeed later (a brain busy with another
    writer for longer than the lock timeout, a lost lock) is run again after a growing delay
    (:func:`retry_delay`), :data:`RETRIES` times, as the Celery task does."""

    def __init__(self, run: Callable[[str], None], workers: int = 2, nice: int = 10, *,
                 retryable: Callable[[BaseException], bool] = lambda exc: False, retries: int = RETRIES) -> None:
        self.run = run
        self.retryable = retryable
        self.retries = retries
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="brain-job",
                                       initializer=lower_priority, initargs=(nice,))
        self._timers: set[threading.Timer] = set()
        self._closed = False
        self._guard = threading.Lock()

    def dispatch(self, job_id: str, kind: str) -> None:
        self.pool.submit(self._run, job_id, 0)

    def _run(self, job_id: str, attempt: int) -> None:
        try:
            self.run(job_id)
        except BrainBusy as exc:  # dispatched again when its brain's running job ends
            log.debug("%s", exc)
        except Exception as exc:
            if attempt < self.retries and self.retryable(exc):
                self._later(job_id, attempt + 1, delay=retry_delay(attempt))
            else:
                log.exception("job %s failed", job_id)

    def _later(self, job_id: str, attempt: int, delay: float) -> None:
        def again() -> None:
            with self._guard:
                self._timers.discard(timer)
                if not self._closed:
                    self.pool.submit(self._run, job_id, attempt)

        timer = threading.Timer(delay, again)
        timer.daemon = True
        with self._guard:
            if self._closed:  # the job stays queued; the next start's recovery deals with it
                return
            self._timers.add(timer)
        timer.start()

    def shutdown(self) -> None:
        with self._guard:
            self._closed = True
            for timer in self._timers:
                timer.cancel()
        self.pool.shutdown(wait=True, cancel_futures=False)


def result_backend_config(backend_url: str | None) -> dict:
    """Celery settings of the result backend that counts a sharded wake's chord: JSON only, kept
    for :data:`SHARD_RESULT_SECONDS`."""
    return {"result_backend": backend_url, "result_serializer": "json", "result_accept_content": ["json"],
            "result_expires": SHARD_RESULT_SECONDS}


def lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority by ``nice`` (on Linux a thread's own; elsewhere the
    process's). Training calls it so that it yields the CPU to the requests being served."""
    if nice <= 0:
        return
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + nice))
    except (AttributeError, OSError) as exc:  # not Linux, or not permitted: run at normal priority
        log.debug("job thread priority unchanged: %s", exc)


class CeleryJobs:
    """Jobs as Celery messages. With ``backend_url`` (the full stack's Redis) it can also fan out a
    sharded wake (:meth:`fan_out`): a chord, which needs a result backend to count its shards;
    the answers it keeps there are JSON."""

    # A broker message can be lost while its job row stays "queued": the API died between the
    # row's commit and the send, or Redis restarted empty. A job joined by a later submit is
    # therefore sent again; a message for a job that has already run is a no-op (``Jobs.start``).
    redispatch_joined = True

    def __init__(self, broker_url: str, backend_url: str | None = None) -> None:
        from celery import Celery

        self.app = Celery("plastic_brain_client", broker=broker_url, backend=backend_url)
        self.app.conf.update(result_backend_config(backend_url))
        self.fans_out = backend_url is not None

    def dispatch(self, job_id: str, kind: str) -> None:
        # a job's outcome is its row; the result backend (Redis) is for a chord's shards alone, so a
        # dispatch does not subscribe to one (it would retry, then raise, while Redis is away)
        self.app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue_of(kind), ignore_result=True)

    def fan_out(self, job_id: str, plan: dict) -> None:
        """The shards of ``plan`` (``service.sharding``) on the ``wake`` queue, any worker each, and
        once all have answered, their merge with the answers in shard order."""
        from celery import chord

        shards = [self.app.signature(WAKE_SHARD_TASK, args=[job_id, plan, i], queue="wake")
                  for i in range(plan["shards"])]
        merge = self.app.signature(WAKE_MERGE_TASK, args=[job_id, plan], queue="wake")
        chord(shards, app=self.app)(merge)

    def shutdown(self) -> None:
        self.app.close()


class Jobs:
    """Every change of a job's state goes through here: submit, start, heartbeat, progress,
    requeue and finish (and :meth:`orphans` after an embedded restart).

    ``stale_after``: a running job whose heartbeat is older than this (the writer lock's timeout,
    which the same heartbeat renews) has lost its runner; a younger one is still being run, and
    a second delivery of its message must not start it again (:class:`JobBusy`)."""

    def __init__(self, db: Database, executor: Executor | None = None, *, stale_after: float = 600.0,
                 role: str = "api") -> None:
        self.db = db
        self.executor = executor
        self.stale_after = stale_after
        self.role = role  # who records the events of this process: "api" or "worker"

    def submit(self, kind: str, brain_id: int, payload: dict | None = None, *, join_queued: bool = False,
               resend_after: float = 0.0, record: Callable[[Session, str], None] | None = None) -> str:
        """Record and dispatch a job; its id.

        ``join_queued``: when a job of this kind for this brain is still queued, return its id
        instead (adding ``payload["samples"]`` to its own). For wake jobs, which learn everything
        in the log when they start: a stream of small POSTs then becomes a few jobs that each
        learn many samples, not one job and one version per POST. An executor whose messages can
        be lost (Celery) sends the joined job's message again once it has been queued for
        ``resend_after`` seconds. ``record(session, job id)``: writes that go with a new job's row,
        in its transaction (an erasure's audit row)."""
        payload = payload or {}
        with self.db.session() as s:
            queued = s.scalar(
                select(Job).where(Job.brain_id == brain_id, Job.kind == kind, Job.state == "queued")
                .order_by(Job.created_at.desc()).limit(1)
            ) if join_queued else None
            if queued is not None:
                samples = int(queued.payload.get("samples", 0)) + int(payload.get("samples", 0))
                queued.payload = {**queued.payload, "samples": samples}
                joined = queued.id
                resend = (utcnow() - queued.created_at).total_seconds() >= resend_after
            else:
                joined = None
                job_id = str(uuid.uuid4())
                job = Job(id=job_id, brain_id=brain_id, kind=kind, payload=payload, events=[])
                self._append(job, "queued")
                s.add(job)
                if record is not None:
                    s.flush()
                    record(s, job_id)
        if joined is not None:
            if resend and getattr(self.executor, "redispatch_joined", False):
                self.executor.dispatch(joined, kind)
            return joined
        if self.executor is None:
            raise RuntimeError("this process has no job executor")
        try:
            self.executor.dispatch(job_id, kind)
        except BaseException as exc:  # never sent: not left "queued" for ever (nor joined by later submits)
            with self.db.session() as s:
                job = s.get(Job, job_id)
                job.state, job.error, job.finished_at = "failed", f"not dispatched: {type(exc).__name__}: {exc}", utcnow()
                self._append(job, "failed", error=job.error)
            raise
        return job_id

    def event(self, job_id: str, event: str, **detail: object) -> None:
        """Add an event to the job's history (see :func:`append_event`); nothing if it is unknown."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is not None:
                self._append(job, event, **detail)

    def progress(self, job_id: str, fraction: float, phase: str | None = None) -> None:
        """How far the job's runner is; only while the job runs (a runner cut off from its brain
        that comes back after the job ended elsewhere changes nothing)."""
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.state == "running")
                      .values(progress=max(0.0, min(1.0, fraction)), phase=phase))

    def heartbeat(self, job_id: str) -> None:
        """The job's runner is alive (called with the writer lock's renewal)."""
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.state == "running").values(heartbeat_at=utcnow()))

    def start(self, job_id: str) -> Job | None:
        """Mark a job running; None when it is unknown or already finished (redelivered). Raises
        :class:`JobBusy` when it is running with a live runner (a redelivered message), and
        :class:`BrainBusy` when another job of its brain is (the job is deferred: it stays queued
        until that one ends, :meth:`finish`)."""
        with self.db.session() as s:
            job = self._locked(s, job_id)
            if job is None or job.state in ("succeeded", "failed"):
                return None
            if job.state == "running":
                beat = job.heartbeat_at or job.started_at
                if beat is not None and (utcnow() - beat).total_seconds() < self.stale_after:
                    self._append(job, "busy", note="running elsewhere with a live heartbeat; not started twice")
                    raise JobBusy(f"job {job_id} is running elsewhere")
            behind = self._running_beside(s, job)
            if behind is None:
                job.state = "running"
                job.started_at = job.heartbeat_at = utcnow()
                job.attempts += 1
                job.phase = None
                self._append(job, "started", attempt=job.attempts)
                return job
            job.state, job.heartbeat_at = "queued", None  # running before: its runner died
            job.phase = "waiting for its brain's running job"
            self._append(job, "deferred", behind=behind)
        raise BrainBusy(job_id, job.kind, behind)  # once the deferral is committed

    def _running_beside(self, s: Session, job: Job) -> str | None:
        """Another job of ``job``'s brain that is running with a live runner, if any."""
        cutoff = utcnow() - timedelta(seconds=self.stale_after)
        return s.scalar(select(Job.id).where(
            Job.brain_id == job.brain_id, Job.state == "running", Job.id != job.id,
            func.coalesce(Job.heartbeat_at, Job.started_at) > cutoff).limit(1))

    def _resume_deferred(self, s: Session, brain_id: int, after: str) -> list[tuple[str, str]]:
        """The brain's deferred jobs (queued, and not dispatched again since), marked resumed, to be
        dispatched once ``s`` commits: the job ``after`` no longer runs. Under the brain's row lock."""
        waiting = s.scalars(select(Job).where(Job.brain_id == brain_id, Job.state == "queued", Job.id != after)
                            .order_by(Job.created_at)).all()
        resumed = []
        for job in waiting:
            marks = [e.get("event") for e in job.events or [] if e.get("event") in ("deferred", "resumed")]
            if marks and marks[-1] == "deferred":
                self._append(job, "resumed", after=after)
                resumed.append((job.id, job.kind))
        return resumed

    def _dispatch_resumed(self, resumed: list[tuple[str, str]]) -> None:
        if self.executor is None:  # a process without an executor runs no jobs
            return
        for job_id, kind in resumed:
            try:
                self.executor.dispatch(job_id, kind)
            except Exception as exc:  # noqa: BLE001 - the job stays queued: the next submit for its brain, or
                # on Celery the deferral's own late message, sends it again
                log.warning("could not dispatch deferred job %s: %s", job_id, exc)

    def requeue(self, job_id: str, reason: BaseException) -> None:
        """A running job interrupted by a transient fault is queued again, not failed; its message
        is retried by the caller. Best effort: the database may be what went away."""
        resumed: list[tuple[str, str]] = []
        try:
            with self.db.session() as s:
                job = self._locked(s, job_id)
                if job is not None and job.state == "running":
                    job.state, job.phase, job.heartbeat_at = "queued", f"retrying after {type(reason).__name__}", None
                    self._append(job, "retrying", error=f"{type(reason).__name__}: {reason}"[:500])
                    resumed = self._resume_deferred(s, job.brain_id, after=job_id)
        except Exception as again:  # noqa: BLE001 - the row stays "running"; the retry runs it all the same
            log.warning("job %s: could not mark it queued for its retry: %s", job_id, again)
        self._dispatch_resumed(resumed)

    def orphans(self, reason: str, *, keep: Collection[str] = ()) -> list[tuple[str, str]]:
        """The jobs of an executor that died with its process, but those in ``keep`` (already with
        its successor): each running one is marked failed (``reason``); the queued ones, which
        it never started, are returned as ``(id, kind)`` for the successor to run."""
        with self.db.session() as s:
            query = select(Job).where(Job.state.in_(("queued", "running")))
            if keep:
                query = query.where(Job.id.not_in(list(keep)))
            queued = []
            for job in s.scalars(query.order_by(Job.created_at)).all():
                if job.state == "queued":
                    queued.append((job.id, job.kind))
                    continue
                job.state, job.error, job.finished_at = "failed", reason, utcnow()
                self._append(job, "failed", error=reason)
            return queued

    def finish(self, job_id: str, *, result: dict | None = None, error: str | None = None) -> None:
        """Record the job's end, and dispatch its brain's deferred jobs again."""
        with self.db.session() as s:
            job = self._locked(s, job_id)
            if job is None:
                return
            job.state = "failed" if error else "succeeded"
            job.result = result
            job.error = error
            job.progress = 1.0 if error is None else job.progress
            job.finished_at = utcnow()
            self._append(job, job.state, **({"error": error[:500]} if error else {}))
            resumed = self._resume_deferred(s, job.brain_id, after=job_id)
        self._dispatch_resumed(resumed)

    @staticmethod
    def _locked(s: Session, job_id: str) -> Job | None:
        """The job's row, locked after its brain's row: the starts and ends of one brain's jobs are
        serialised, so that a job deferred behind another is seen by that one's end."""
        brain_id = s.scalar(select(Job.brain_id).where(Job.id == job_id))
        if brain_id is None:
            return None
        s.get(Brain, brain_id, with_for_update=True)
        return s.get(Job, job_id, with_for_update=True)

    @property
    def can_fan_out(self) -> bool:
        """Whether the executor runs a job's parts in several places at once (:meth:`fan_out`)."""
        return bool(getattr(self.executor, "fans_out", False))

    def fan_out(self, job_id: str, plan: dict) -> None:
        """Hand a sharded wake's shards and merge (``service.sharding``) to the executor."""
        if not self.can_fan_out:
            raise RuntimeError("this process's executor runs jobs in one place")
        self.executor.fan_out(job_id, plan)

    def shutdown(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()

    def _append(self, job: Job, event: str, **detail: object) -> None:
        append_event(job, event, by=whoami(self.role), **detail)


def whoami(role: str) -> str:
    """``role@host:pid`` of the calling process (read at each call: worker processes fork)."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


def append_event(job: Job, event: str, *, by: str, **detail: object) -> None:
    """Record ``event`` (queued, received, started, retrying, succeeded, failed, ...) with the time
    and ``by`` (the process, :func:`whoami`); the list is reassigned, so the JSON column is written. Past
    :data:`MAX_EVENTS`, the oldest after the first ten are dropped."""
    events = [*(job.events or []), {"at": utcnow().isoformat(), "event": event, "by": by, **detail}]
    if len(events) > MAX_EVENTS:
        events = events[:10] + events[-(MAX_EVENTS - 10):]
    job.events = events
