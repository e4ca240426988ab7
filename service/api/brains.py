"""Brains, their tasks and their versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from sqlalchemy import select

from service import brains, configure, schemas
from service.api import fastjson
from service.api.deps import (
    AdminOnly,
    AuthDep,
    Caller,
    CanRead,
    CanWrite,
    LearnersDep,
    RuntimeDep,
    SessionDep,
)
from service.errors import NotFound
from service.tables import Brain, Task, Version
from service.writer import locked_brain, writer

router = APIRouter(prefix="/v1/brains", tags=["brains"], route_class=fastjson.SafeErrorsRoute)
#: version numbers are 32-bit in the database: a larger one is a 422, not an overflow there
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=schemas.BrainOut)
def create_brain(body: schemas.BrainCreate, rt: RuntimeDep, _: AdminOnly) -> schemas.BrainOut:
    brain = brains.create_brain(rt, body=body)
    with rt.db.session() as s:
        return brains.brain_out(s, s.get(Brain, brain.id))


@router.get("", response_model=schemas.BrainList)
def list_brains(s: SessionDep, caller: Caller) -> schemas.BrainList:
    """The brains the caller may read."""
    rows = [b for b in s.scalars(select(Brain).order_by(Brain.name)).all() if caller.can(b.name, "read")]
    return schemas.BrainList(brains=[brains.brain_out(s, b) for b in rows])


@router.get("/{name}", response_model=schemas.BrainOut)
def get_brain(name: str, s: SessionDep, _: CanRead) -> schemas.BrainOut:
    return brains.brain_out(s, brains.get_brain(s, name))


@router.patch("/{name}", response_model=schemas.BrainOut)
def update_brain(name: str, body: schemas.BrainUpdate, rt: RuntimeDep, _: CanWrite) -> schemas.BrainOut:
    """Change the strategy's params (published as a new version of kind "reconfigure" that keeps
    what the brain learned; 422 for strategies that cannot) or the sleep policy."""
    configure.update_brain(rt, name=name, body=body)
    with rt.db.session(read_only=True) as s:
        return brains.brain_out(s, brains.get_brain(s, name))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_brain(name: str, request: Request, rt: RuntimeDep, learners: LearnersDep, authenticator: AuthDep,
                 _: AdminOnly) -> Response:
    with rt.db.session(read_only=True) as s:
        brain_id = brains.get_brain(s, name).id
    brains.delete_brain(rt, name=name)
    learners.forget(brain_id)
    request.app.state.drift.forget(brain_id)  # its id may be given to a new brain (SQLite)
    authenticator.forget()  # keys' grants on it went with it
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/tasks", response_model=schemas.TaskList)
def list_tasks(name: str, s: SessionDep, _: CanRead) -> schemas.TaskList:
    brain = brains.get_brain(s, name)
    tasks = s.scalars(select(Task).where(Task.brain_id == brain.id).order_by(Task.ordinal)).all()
    return schemas.TaskList(tasks=[brains.task_out(brain, t) for t in tasks])


def _version_out(brain: Brain, v: Version) -> schemas.VersionOut:
    return schemas.VersionOut(
        number=v.number, kind=v.kind, current=v.number == brain.current_version, promoted=v.promoted,
        log_position=v.log_position, samples_learned=v.samples_learned, tasks_seen=v.tasks_seen,
        stats=v.stats, created_at=v.created_at,
    )


@router.get("/{name}/versions", response_model=schemas.VersionList)
def list_versions(name: str, s: SessionDep, _: CanRead) -> schemas.VersionList:
    brain = brains.get_brain(s, name)
    rows = s.scalars(select(Version).where(Version.brain_id == brain.id).order_by(Version.number)).all()
    return schemas.VersionList(current=brain.current_version, versions=[_version_out(brain, v) for v in rows])


@router.post("/{name}/versions/{number}/promote", response_model=schemas.VersionOut)
def promote(name: str, number: VersionNumber, rt: RuntimeDep, _: CanWrite) -> schemas.VersionOut:
    """Make version ``number`` current (roll back or forward). Samples already learned by later
    versions are not learned again; samples not yet learned are learned on top of it. A brain
    whose writer (a job) is busy for longer than ``BRAIN_BUSY_WAIT_SECONDS``: 503 with Retry-After."""
    with rt.db.session(read_only=True) as s:
        brain = brains.get_brain(s, name)
        brain_id = brain.id
    with writer(rt, brain_id, wait=rt.settings.busy_wait_seconds) as lease, rt.db.session() as s:
        brain = locked_brain(s, lease)
        if brain is None:
            raise NotFound(f"brain {name!r} not found")
        version = rt.versions.promote(s, brain, number)
        if version is None:
            raise NotFound(f"brain {name!r} has no version {number}")
        return _version_out(brain, version)
