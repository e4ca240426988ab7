"""What the jobs of each brain did, counted where it happens, for ``/metrics``.

A :class:`JobCounts` is attached to a process's session factory (``service.runtime``). When a
transaction that changed a job's state commits, the change is counted: jobs by kind and the state
they entered (queued, running: each attempt, succeeded, failed), and the seconds of each succeeded
sleep. The counts live in the process (embedded: the API runs the jobs) or in one Redis hash per
brain (full stack: workers and API processes count into it, the API reads it); the embedded job
process forwards what it counts to the API process (``forward``), so reading them costs
the same however long the job history is. Deleting a brain drops its counts. Like any Prometheus
counter, they start at zero (embedded: when the process starts; full stack: with the Redis data).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

from redis.exceptions import RedisError
from sqlalchemy import inspect
from sqlalchemy.orm import Session, sessionmaker

from service.db import on_commit
from service.tables import Brain, Job

log = logging.getLogger(__name__)

KEY = "plastic-brain:job-counts:{brain_id}"
SLEEPS, SLEEP_SECONDS = "sleeps", "sleep_seconds"
_PENDING = "job_counts"  # session.info: (increments, brains deleted) until the commit

Counts = dict[str, float]  # "jobs:<kind>:<state>", SLEEPS, SLEEP_SECONDS -> value


def jobs_field(kind: str, state: str) -> str:
    return f"jobs:{kind}:{state}"


def job_states(counts: Counts) -> list[tuple[str, str, float]]:
    """(kind, state, count) of ``counts``."""
    return [(*field.split(":", 2)[1:], n) for field, n in counts.items() if field.startswith("jobs:")]


Increments = list[tuple[int, str, float]]  # (brain id, field, amount)


class JobCounts:
    def __init__(self, redis: object | None = None) -> None:
        self.redis = redis
        # set in a process whose counts live in another (the embedded job process): called with
        # what a commit counted, instead of counting it here
        self.forward: Callable[[Increments, set[int]], None] | None = None
        self._memory: dict[int, Counter[str]] = {}
        self._lock = threading.Lock()

    # -- counting -----------------------------------------------------------------------------------
    def attach(self, sessions: sessionmaker) -> None:
        on_commit(sessions, _PENDING, empty=lambda: ([], set()), collect=self._collect, committed=self._committed)

    @staticmethod
    def _collect(session: Session, pending: tuple[list, set[int]]) -> None:
        """Runs before the flush's history is reset: the state each job had and has now."""
        increments, dropped = pending

        def entered(job: Job, state: str) -> None:
            increments.append((job.brain_id, jobs_field(job.kind, state), 1))
            seconds = (job.result or {}).get("seconds") if job.kind == "sleep" and state == "succeeded" else None
            if isinstance(seconds, int | float):
                increments.extend([(job.brain_id, SLEEPS, 1), (job.brain_id, SLEEP_SECONDS, float(seconds))])

        for obj in session.new:
            if isinstance(obj, Job):
                entered(obj, obj.state or "queued")  # the column's default, when not set
        for obj in session.dirty:
            if isinstance(obj, Job) and (added := inspect(obj).attrs.state.history.added):
                entered(obj, added[0])
        dropped.update(obj.id for obj in session.deleted if isinstance(obj, Brain))

    def _committed(self, pending: tuple[list, set[int]]) -> None:
        if not (pending[0] or pending[1]):
            return
        if self.forward is not None:
            self.forward(*pending)
        else:
            self.add(*pending)

    def add(self, increments: Increments, dropped: set[int]) -> None:
        """Count ``increments`` and forget the brains ``dropped`` (deleted)."""
        if self.redis is None:
            with self._lock:
                for brain_id, name, amount in increments:
                    self._memory.setdefault(brain_id, Counter())[name] += amount
                for brain_id in dropped:
                    self._memory.pop(brain_id, None)
            return
        try:  # a count lost to a Redis outage is a metric off by one, never a failed job
            pipe = self.redis.pipeline(transaction=False)
            for brain_id, name, amount in increments:
                key = KEY.format(brain_id=brain_id)
                if isinstance(amount, float):
                    pipe.hincrbyfloat(key, name, amount)
                else:
                    pipe.hincrby(key, name, amount)
            for brain_id in dropped:
                pipe.delete(KEY.format(brain_id=brain_id))
            pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not count job changes: %s", exc)

    # -- reading ------------------------------------------------------------------------------------
    def read(self, brain_ids: list[int]) -> dict[int, Counts]:
        """The counts of each brain (one Redis round trip on the full stack)."""
        if self.redis is None:
            with self._lock:
                return {i: dict(self._memory.get(i, {})) for i in brain_ids}
        pipe = self.redis.pipeline(transaction=False)
        for brain_id in brain_ids:
            pipe.hgetall(KEY.format(brain_id=brain_id))
        return {i: {k.decode(): float(v) for k, v in raw.items()} for i, raw in zip(brain_ids, pipe.execute())}
