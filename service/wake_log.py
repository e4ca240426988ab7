"""Reading the sample log as a wake learns it: chunks of rows in log order, cut into ``observe``
batches. One worker's wake (``service.orchestration``), the shards of a sharded wake and their merge
(``service.sharding``) all read through here, so that a merge offers the replay buffer the very
batches one worker would have (the reservoir's draws follow the batches)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from sqlalchemy import Row, select

from service import samplelog
from service.runtime import Runtime
from service.tables import Brain, Task
from service.versions import input_dim

WAKE_CHUNK = 4096  # log rows read per query
WAKE_BATCH = 128  # samples per observe() call


def chunks(rt: Runtime, brain: Brain, cursor: int, limit: int, *, through: int | None = None,
           inputs: bool = True) -> Iterator[Sequence[Row]]:
    """The log's rows after ``cursor`` (at most ``limit``, none after row id ``through``), in log
    order, ``WAKE_CHUNK`` rows a query: the chunks one worker's wake reads (without their inputs
    unless ``inputs``)."""
    learned = 0
    while learned < limit:
        with rt.db.session(read_only=True) as s:
            rows = samplelog.read_after(s, brain.id, cursor, min(WAKE_CHUNK, limit - learned), through=through,
                                        inputs=inputs)
        if not rows:
            return
        yield rows
        cursor = rows[-1].id
        learned += len(rows)


def batches(rows: Sequence[Row], brain: Brain) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Split log rows into observe() batches ``(task id, x, y)`` (:func:`spans`)."""
    dim = input_dim(brain.input_shape, brain.encoder)  # the encoder's output, as the log stores it
    for start, end in spans(rows):
        chunk = rows[start:end]
        yield chunk[0].task_id, decode([r.x for r in chunk], dim), torch.tensor([r.label for r in chunk], dtype=torch.long)


def spans(rows: Sequence[Row]) -> Iterator[tuple[int, int]]:
    """The ``[start, end)`` of each observe() batch of ``rows``: at most WAKE_BATCH samples of one
    task each (what a batch is depends on the rows' tasks alone, not on their inputs)."""
    start = 0
    while start < len(rows):
        end = start + 1
        while end < len(rows) and end - start < WAKE_BATCH and rows[end].task_id == rows[start].task_id:
            end += 1
        yield start, end
        start = end


def decode(xs: Sequence[bytes], dim: int) -> torch.Tensor:
    """Inputs as the log stores them (little-endian float32 bytes) as a float32 tensor ``[n, dim]``."""
    return torch.from_numpy(np.stack([np.frombuffer(x, dtype="<f4", count=dim) for x in xs]).astype(np.float32))


def brain_row(rt: Runtime, brain_id: int) -> Brain | None:
    """The brain's row as read now, detached from the session; None when it was deleted."""
    with rt.db.session(read_only=True) as s:
        brain = s.get(Brain, brain_id)
        if brain is not None:
            s.expunge(brain)
        return brain


def tasks(rt: Runtime, brain_id: int, into: dict[int, Task]) -> dict[int, Task]:
    """The brain's tasks by id, added to ``into`` (read again when a batch names a new one)."""
    with rt.db.session(read_only=True) as s:
        rows = s.scalars(select(Task).where(Task.brain_id == brain_id)).all()
        s.expunge_all()
    into.update({t.id: t for t in rows})
    return into


def task_of(rt: Runtime, brain_id: int, known: dict[int, Task], task_id: int) -> Task:
    return known.get(task_id) or tasks(rt, brain_id, known)[task_id]
