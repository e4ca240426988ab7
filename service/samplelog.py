"""The durable sample log (table ``samples``): the one home of every query over it.

A POST is acknowledged only after its samples are appended here; a brain's ``learned_position``
is the highest log id any version learned, so "pending" (acknowledged, not yet learned) is
everything after it. Rows hold the encoder's output as little-endian float32 bytes, never pickled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from sqlalchemy import Row, func, insert, select
from sqlalchemy.orm import Session

from service.db import Database, fetch_binary
from service.tables import Brain, Sample, Task


def append(s: Session, rows: Sequence[dict]) -> None:
    """Append rows ``{"brain_id", "task_id", "sample_key", "label", "x"}`` in one bulk insert."""
    if rows:
        s.execute(insert(Sample), list(rows))


def known_keys(s: Session, brain_id: int, keys: Iterable[str]) -> set[str]:
    """The sample ids among ``keys`` that the brain's log already holds."""
    keys = list(keys)
    if not keys:
        return set()
    return set(s.scalars(select(Sample.sample_key).where(Sample.brain_id == brain_id, Sample.sample_key.in_(keys))))


def read_after(s: Session, brain_id: int, position: int, limit: int, *, through: int | None = None) -> Sequence[Row]:
    """Up to ``limit`` rows (id, task_id, label, x) after log position ``position`` (and none after
    ``through``), in log order."""
    query = select(Sample.id, Sample.task_id, Sample.label, Sample.x).where(Sample.brain_id == brain_id,
                                                                          Sample.id > position)
    if through is not None:
        query = query.where(Sample.id <= through)
    return fetch_binary(s.connection(), query.order_by(Sample.id).limit(limit))


def inputs(s: Session, brain_id: int, ids: Sequence[int]) -> dict[int, bytes]:
    """The inputs (x, as stored) of the rows ``ids``, by id."""
    if not ids:
        return {}
    return {row.id: row.x for row in fetch_binary(
        s.connection(), select(Sample.id, Sample.x).where(Sample.brain_id == brain_id, Sample.id.in_(list(ids))))}


def ids_at(s: Session, brain_id: int, position: int, ranks: Sequence[int]) -> list[int]:
    """The ids of the rows at ``ranks`` (1 for the first) after ``position`` in log order, in one
    query that numbers at most ``max(ranks)`` index entries and sends back only those (a sharded
    wake's cuts). KeyError when the log holds fewer rows."""
    first = (select(Sample.id).where(Sample.brain_id == brain_id, Sample.id > position)
             .order_by(Sample.id).limit(max(ranks)).subquery())
    ranked = select(first.c.id, func.row_number().over(order_by=first.c.id).label("rank")).subquery()
    found = dict(s.execute(select(ranked.c.rank, ranked.c.id).where(ranked.c.rank.in_(list(ranks)))).tuples().all())
    return [found[rank] for rank in ranks]


def pending(s: Session, brain_id: int, position: int | None = None, *, limit: int | None = None) -> int:
    """How many rows follow ``position`` (default: the brain's learned position); with ``limit``,
    counted up to that many (an index range, whatever the log's length)."""
    if position is None:
        after = select(Brain.learned_position).where(Brain.id == brain_id).scalar_subquery()
    else:
        after = position
    rows = select(Sample.id).where(Sample.brain_id == brain_id, Sample.id > after)
    if limit is not None:
        rows = rows.limit(limit)
    return int(s.scalar(select(func.count()).select_from(rows.subquery())) or 0)


def has_pending(s: Session, brain_id: int) -> bool:
    """Whether the brain's log holds samples after its learned position (one indexed probe)."""
    after = select(Brain.learned_position).where(Brain.id == brain_id).scalar_subquery()
    return s.scalar(select(Sample.id).where(Sample.brain_id == brain_id, Sample.id > after).limit(1)) is not None


def backlog(s: Session) -> dict[int, int]:
    """Pending samples per brain, for the brains that have any."""
    return dict(s.execute(
        select(Sample.brain_id, func.count()).join(Brain, Brain.id == Sample.brain_id)
        .where(Sample.id > Brain.learned_position).group_by(Sample.brain_id)
    ).tuples().all())


# -- reading the log as a wake learns it ---------------------------------------------------------
# One worker's wake (service.orchestration), the shards of a sharded wake and their merge
# (service.sharding) all read through these, so that a merge offers the replay buffer the very
# batches one worker would have (the reservoir's draws follow the batches).
WAKE_CHUNK = 4096  # log rows read per query
WAKE_BATCH = 128  # samples per observe() call


def chunks(db: Database, brain_id: int, cursor: int, limit: int, *, through: int | None = None
           ) -> Iterator[Sequence[Row]]:
    """The log's rows after ``cursor`` (at most ``limit``, none after row id ``through``), in log
    order, ``WAKE_CHUNK`` rows a query: the chunks one worker's wake reads."""
    learned = 0
    while learned < limit:
        with db.session(read_only=True) as s:
            rows = read_after(s, brain_id, cursor, min(WAKE_CHUNK, limit - learned), through=through)
        if not rows:
            return
        yield rows
        cursor = rows[-1].id
        learned += len(rows)


def batches(rows: Sequence[Row], dim: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Split log rows into observe() batches ``(task id, x [n, dim], y)`` (:func:`spans`)."""
    for start, end in spans([r.task_id for r in rows]):
        chunk = rows[start:end]
        yield chunk[0].task_id, decode([r.x for r in chunk], dim), torch.tensor([r.label for r in chunk], dtype=torch.long)


def spans(tasks: Sequence[int]) -> Iterator[tuple[int, int]]:
    """The ``[start, end)`` of each observe() batch of a chunk of rows whose task ids are
    ``tasks``: at most WAKE_BATCH samples of one task each (what a batch is depends on the rows'
    tasks alone, not on their inputs)."""
    start = 0
    while start < len(tasks):
        end = start + 1
        while end < len(tasks) and end - start < WAKE_BATCH and tasks[end] == tasks[start]:
            end += 1
        yield start, end
        start = end


def decode(xs: Sequence[bytes], dim: int) -> torch.Tensor:
    """Inputs as the log stores them (little-endian float32 bytes) as a float32 tensor ``[n, dim]``."""
    return torch.from_numpy(np.stack([np.frombuffer(x, dtype="<f4", count=dim) for x in xs]).astype(np.float32))


def brain_row(db: Database, brain_id: int) -> Brain | None:
    """The brain's row as a wake starts, detached from the session; None when it was deleted."""
    with db.session(read_only=True) as s:
        brain = s.get(Brain, brain_id)
        if brain is not None:
            s.expunge(brain)
        return brain


def task_of(db: Database, brain_id: int, known: dict[int, Task], task_id: int) -> Task:
    """Task ``task_id`` of the brain from ``known``, which is read (again) when it lacks it (a task
    registered since)."""
    if task_id not in known:
        with db.session(read_only=True) as s:
            rows = s.scalars(select(Task).where(Task.brain_id == brain_id)).all()
            s.expunge_all()
        known.update({t.id: t for t in rows})
    return known[task_id]
