"""What a brain has been doing: its jobs (with live progress) and what its replay buffer holds.
The dashboard (``/ui``) draws them; any client may read them."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from service import schemas
from service.api.deps import CanRead, RuntimeDep, SessionDep
from service.api.jobs import job_out
from service.brains import get_brain
from service.tables import Job

router = APIRouter(prefix="/v1/brains", tags=["activity"])


@router.get("/{name}/jobs", response_model=schemas.JobList)
def brain_jobs(
    name: str,
    s: SessionDep,
    _: CanRead,
    kind: Literal["wake", "sleep", "meta_train", "forget"] | None = Query(None, description="Only jobs of this kind."),
    limit: int = Query(50, ge=1, le=500, description="The newest this many."),
) -> schemas.JobList:
    """The brain's jobs, newest first: state, progress and phase while they run, result after."""
    brain = get_brain(s, name)
    query = select(Job).where(Job.brain_id == brain.id)
    if kind is not None:
        query = query.where(Job.kind == kind)
    jobs = s.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit)).all()
    return schemas.JobList(jobs=[job_out(s, job) for job in jobs])


@router.get("/{name}/replay", response_model=schemas.ReplayOut)
def replay_composition(name: str, rt: RuntimeDep, s: SessionDep, _: CanRead) -> schemas.ReplayOut:
    """How many samples of each label the replay buffer holds now."""
    brain = get_brain(s, name)
    buffer = rt.replay(brain)
    counts = Counter(buffer.store.labels())
    labels = list(brain.labels)
    per_label = {str(labels[i]) if i < len(labels) else f"#{i}": n for i, n in sorted(counts.items())}
    return schemas.ReplayOut(size=sum(counts.values()), capacity=buffer.capacity, policy=brain.replay["policy"],
                             seen=buffer.store.seen(), per_label=per_label)
