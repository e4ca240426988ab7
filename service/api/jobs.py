"""Job status."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from service import auth, schemas
from service.api.deps import Caller, SessionDep
from service.errors import NotFound
from service.tables import Brain, Job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def job_out(s: Session, job: Job) -> schemas.JobOut:
    brain = s.get(Brain, job.brain_id)
    return schemas.JobOut(
        id=job.id, brain=brain.name if brain else None, kind=job.kind, state=job.state,
        progress=job.progress, phase=job.phase, result=job.result, error=job.error,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        attempts=job.attempts, events=job.events or [],
    )


@router.get("/{job_id}", response_model=schemas.JobOut)
def get_job(job_id: str, s: SessionDep, caller: Caller) -> schemas.JobOut:
    """A job, for keys that may read its brain."""
    job = s.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    out = job_out(s, job)
    if out.brain is None:
        auth.require_admin(caller)
    else:
        auth.require(caller, out.brain, "read")
    return out
