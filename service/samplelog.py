"""The durable sample log (table ``samples``): the one home of every query over it.

A POST is acknowledged only after its samples are appended here; a brain's ``learned_position``
is the highest log id any version learned, so "pending" (acknowledged, not yet learned) is
everything after it. Rows hold the encoder's output as little-endian float32 bytes, never pickled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Row, func, insert, select
from sqlalchemy.orm import Session

from service.tables import Brain, Sample


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


def read_after(s: Session, brain_id: int, position: int, limit: int, *, through: int | None = None,
               inputs: bool = True) -> Sequence[Row]:
    """Up to ``limit`` rows (id, task_id, label, x; without x unless ``inputs``) after log position
    ``position`` (and none after ``through``), in log order."""
    columns = (Sample.id, Sample.task_id, Sample.label, *((Sample.x,) if inputs else ()))
    query = select(*columns).where(Sample.brain_id == brain_id, Sample.id > position)
    if through is not None:
        query = query.where(Sample.id <= through)
    return s.execute(query.order_by(Sample.id).limit(limit)).all()


def inputs(s: Session, brain_id: int, ids: Sequence[int]) -> dict[int, bytes]:
    """The inputs (x, as stored) of the rows ``ids``, by id."""
    if not ids:
        return {}
    return dict(s.execute(select(Sample.id, Sample.x).where(Sample.brain_id == brain_id, Sample.id.in_(list(ids)))).tuples().all())


def ids_after(s: Session, brain_id: int, position: int, limit: int) -> list[int]:
    """The ids of up to ``limit`` rows after ``position``, in log order (a sharded wake's plan)."""
    return list(s.scalars(select(Sample.id).where(Sample.brain_id == brain_id, Sample.id > position)
                          .order_by(Sample.id).limit(limit)))


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
