"""The fenced writer of a brain: everything that changes a brain's model goes through here.

:func:`writer` takes the brain's lock (``service.locks``, renewed by a heartbeat while the holder
lives) and then a fencing token: ``brains.writer_fence`` incremented in its own transaction. Every
write the holder makes later reads the brain row under a row lock (:func:`locked_brain`) and checks
that the token is still its own. A holder whose lock expired (a stall longer than the lock
timeout) and whose brain another writer took in the meantime finds a newer token there and is
refused (:class:`~service.locks.LockLost`): its job is retried, its work never applied.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.locks import Lease, LockLost
from service.runtime import Runtime
from service.tables import Brain

__all__ = ["LockLost", "locked_brain", "writer"]


@contextmanager
def writer(rt: Runtime, brain_id: int, *, wait: float | None = None, job_id: str | None = None) -> Iterator[Lease]:
    """Hold brain ``brain_id``'s writer lock with a fresh fencing token. ``job_id``: the job that
    writes, whose heartbeat (``Jobs.heartbeat``) beats with the lease's."""
    with rt.locks.hold(brain_id, wait=wait) as lease:
        with rt.db.session() as s:
            fence = s.scalar(
                update(Brain).where(Brain.id == brain_id).values(writer_fence=Brain.writer_fence + 1)
                .returning(Brain.writer_fence)
            )
        lease.fence = fence  # None: the brain was deleted; locked_brain then finds no row
        lease.job_id = job_id
        if job_id is not None:  # Jobs.start stamped its first heartbeat
            lease.beats.append(lambda: rt.jobs.heartbeat(job_id))
        yield lease


def locked_brain(s: Session, lease: Lease) -> Brain | None:
    """The brain's row, locked for the rest of ``s``'s transaction, once ``lease`` is checked to be
    the current writer's; None when the brain was deleted."""
    brain = s.get(Brain, lease.brain_id, with_for_update=True, populate_existing=True)
    if brain is None:
        return None
    lease.check(brain.writer_fence)
    return brain
