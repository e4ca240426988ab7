"""When jobs are submitted without a request: a sleep that a brain's policy makes due (checked by
Celery beat on the full stack, by :class:`SleepScheduler` in the embedded API), and the wake jobs
that recovery submits after a restart."""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from datetime import timedelta

from sqlalchemy import select

from service import samplelog
from service.runtime import Runtime
from service.tables import Brain, Job, utcnow

log = logging.getLogger(__name__)


def maybe_sleep(rt: Runtime, brain_id: int) -> str | None:
    """Submit a sleep job when the brain's policy says one is due, unless one is running; its id.

    The job's reason names the policy that made it due ("every_samples", or "schedule" for
    ``every_seconds``). A sleep already queued is joined; on Celery its message is sent again once
    it has waited longer than the lock timeout (the API that queued it may have died before
    sending it: a queued job that is never run would hold every later sleep back)."""
    with rt.db.session(read_only=True) as s:
        brain = s.get(Brain, brain_id)
        reason = _due(brain) if brain is not None else None
        if reason is None:
            return None
        running = s.scalar(select(Job.id).where(
            Job.brain_id == brain_id, Job.kind == "sleep", Job.state == "running").limit(1))
        if running is not None:
            return None
    return rt.jobs.submit("sleep", brain_id, {"reason": reason}, join_queued=True,
                          resend_after=rt.settings.lock_timeout_seconds)


def _due(brain: Brain) -> str | None:
    """Which policy makes a sleep due now, if any."""
    policy = brain.sleep_policy or {}
    if brain.samples_since_sleep <= 0:
        return None
    every = policy.get("every_samples")
    if every and brain.samples_since_sleep >= every:
        return "every_samples"
    seconds = policy.get("every_seconds")
    if seconds and utcnow() - (brain.last_sleep_at or brain.created_at) >= timedelta(seconds=seconds):
        return "schedule"
    return None


def check_sleep_due(rt: Runtime) -> list[str]:
    """Called by Celery beat (full stack) or the embedded scheduler thread."""
    with rt.db.session(read_only=True) as s:
        ids = list(s.scalars(select(Brain.id).where(Brain.samples_since_sleep > 0)))
    submitted = [maybe_sleep(rt, brain_id) for brain_id in ids]
    return [job for job in submitted if job]


def recover(rt: Runtime, *, orphaned_jobs: bool, keep: Collection[str] = (),
            reason: str = "interrupted by a restart") -> list[str]:
    """After a restart: re-submit wake for every brain with acknowledged but unlearned samples.

    ``orphaned_jobs``: the jobs still marked queued or running belonged to this process's executor
    (embedded) and died with it, but those in ``keep`` (already handed to the executor that replaces
    it): the running ones are marked failed (``reason``), the queued ones, never started, are
    dispatched again. The ids of the jobs submitted or dispatched.
    """
    handed: list[str] = []
    if orphaned_jobs:
        for job_id, kind in rt.jobs.orphans(reason, keep=keep):
            rt.jobs.executor.dispatch(job_id, kind)
            handed.append(job_id)
    with rt.db.session(read_only=True) as s:
        pending = sorted(samplelog.backlog(s))
    submitted = [rt.jobs.submit("wake", brain_id, {"reason": "recovery"}, join_queued=True) for brain_id in pending]
    return handed + [j for j in submitted if j not in handed]


class SleepScheduler:
    """The embedded stand-in for Celery beat: checks sleep policies every few seconds."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="sleep-scheduler", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.rt.settings.sleep_check_seconds):
            try:
                check_sleep_due(self.rt)
            except Exception:
                log.exception("sleep check failed")
