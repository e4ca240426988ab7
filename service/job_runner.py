"""The job runner that the embedded composition roots (``service.app``, ``service.job_process``)
hand to their executors: ``service.orchestration`` runs a job, ``service.scheduling`` recovers
after the process that ran jobs died. Celery workers call the orchestration themselves
(``workers.tasks``).
"""

from __future__ import annotations

from collections.abc import Collection

from service import orchestration, scheduling
from service.jobs import JobRunner
from service.runtime import Runtime


def _run(rt: Runtime, job_id: str) -> None:
    # looked up at each call, so that a test may stand in for run_job
    orchestration.run_job(rt, job_id, retry_transient=True)


def _recover(rt: Runtime, keep: Collection[str]) -> None:
    scheduling.recover(rt, orphaned_jobs=True, keep=keep, reason="interrupted: the job process died")


def embedded_runner() -> JobRunner:
    return JobRunner(run=_run, retryable=orchestration.transient, recover=_recover)
