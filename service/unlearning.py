"""Exact unlearning (``DELETE /v1/brains/{name}/samples``): forget samples everywhere they live.

A request names exactly one selector: sample ids (the ``id`` clients give samples), a task, a label
or a source (``samples.source``). :func:`submit` records a job of kind "forget" (queue ``sleep``)
and, in the same transaction, the erasure's audit row (``erasures``: who, when, the selector with
ids by their count only, the job; never the data). The rows are matched when the job runs, under
the brain's fenced writer (``service.writer``); nothing matched is a job that forgets 0.

The job (:func:`forget`):

- reads the matching rows of the log (inputs as stored, labels);
- the rows the current version learned (``log_position`` >= the row's id) are taken back from
  the learner: a learner that can (``Learner.unlearn``, the mergeable ones, e.g. the image default)
  merges their negated statistics, in the log's batches: "downdated", and the brain then predicts
  as one that never saw them, to floating-point tolerance. Any other learner keeps them in its
  weights until the next sleep, which builds a fresh learner and learns the remaining log in log
  order (``brains.retrain_from`` marks it): "retrain at next sleep". A brain that was meta-trained
  (a "meta" version or a meta_train job: its background set is not in the log) cannot be
  retrained so: the request is refused (422), unless its learner can downdate;
- removes the rows from the log (pending ones too: they are never learned) and every replay slot
  holding one of their (input, label) pairs (``ReplayBuffer.purge``: slots carry no sample id, so
  identical copies of a forgotten sample go as well);
- publishes a version of kind "forget" (the learner downdated, or unchanged on the retrain path)
  with a snapshot of the purged buffer, so that a lost Redis or a restart never brings the samples
  back; downdated, it then deletes every other version that learned any of the rows
  (``log_position`` >= the smallest id forgotten) or whose replay snapshot holds one, promoted ones
  included: a promote of their number is then 404 and their blobs are gone. On the retrain path the
  retraining sleep deletes every other version when it publishes.

With ``ridge="auto"`` the downdated learner goes back to the penalty a new learner starts from (a
sleep chose the one in use over a replay that held the forgotten samples); the next sleep chooses
again over the purged buffer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from models.learner import Learner
from service import brains, samplelog
from service.auth import Principal
from service.errors import Invalid
from service.replay import ReplayBuffer, holds_any
from service.runtime import Runtime
from service.schemas import ForgetIn
from service.tables import ApiKey, Brain, Erasure, Job, Sample, Task, Version, utcnow
from service.versions import input_dim, new_learner
from service.writer import locked_brain, writer

log = logging.getLogger(__name__)

DOWNDATED = "downdated"
RETRAIN = "retrain at next sleep"
RETRAINED = "retrained"
NOTHING = "nothing matched"


def selector_of(body: ForgetIn) -> dict:
    """The job's selector: exactly one of ``ids``, ``task``, ``label``, ``source``."""
    for key in ("ids", "task", "label", "source"):
        value = getattr(body, key)
        if value is not None:
            return {key: sorted(set(value)) if key == "ids" else value}
    raise Invalid("give exactly one of 'ids', 'task', 'label' or 'source'")


def audit_selector(selector: dict) -> dict:
    """What the audit keeps of a selector: ids by their count."""
    return {"ids": len(selector["ids"])} if "ids" in selector else dict(selector)


def meta_trained(s: Session, brain_id: int) -> bool:
    """Whether the brain was meta-trained: its background set is in no log to retrain from."""
    return s.scalar(select(Version.id).where(Version.brain_id == brain_id, Version.kind == "meta").limit(1)) is not None \
        or s.scalar(select(Job.id).where(Job.brain_id == brain_id, Job.kind == "meta_train",
                                         Job.state == "succeeded").limit(1)) is not None


def submit(rt: Runtime, *, name: str, body: ForgetIn, caller: Principal) -> str:
    """Queue the forget job and record its erasure; 422 for a brain that can neither downdate nor
    be retrained from its log."""
    selector = selector_of(body)
    with rt.db.session(read_only=True) as s:
        brain = brains.get_brain(s, name)
        brain_id = brain.id
        if meta_trained(s, brain_id) and not _can_downdate(rt, brain):
            raise Invalid(f"brain {name!r} was meta-trained and its strategy {brain.strategy!r} cannot unlearn "
                          "exactly: a retrain from the sample log would lose the meta-training (its background "
                          "set is not in the log). Delete the brain, or create it anew without those samples.")

    def record(s: Session, job_id: str) -> None:
        key = s.get(ApiKey, caller.key_id) if caller.key_id is not None else None
        s.add(Erasure(brain_id=brain_id, brain=name, key_id=caller.key_id, key_name=key.name if key else None,
                      selector=audit_selector(selector), job=job_id))

    return rt.jobs.submit("forget", brain_id, {"selector": selector}, record=record)


def _can_downdate(rt: Runtime, brain: Brain) -> bool:
    with rt.db.session(read_only=True) as s:
        return rt.versions.mergeable(s, brain)


def matching(s: Session, brain: Brain, selector: dict) -> list:
    """The log rows (id, task_id, label, x) the selector names, in log order."""
    query = select(Sample.id, Sample.task_id, Sample.label, Sample.x).where(Sample.brain_id == brain.id)
    if "ids" in selector:
        query = query.where(Sample.sample_key.in_(list(selector["ids"])))
    elif "task" in selector:
        query = query.join(Task, Task.id == Sample.task_id).where(Task.name == selector["task"])
    elif "label" in selector:
        index = brains.label_index(brain.labels).get(brains.label_key(selector["label"]))
        if index is None:
            return []
        query = query.where(Sample.label == index)
    else:
        query = query.where(Sample.source == selector["source"])
    return list(s.execute(query.order_by(Sample.id)).all())


def forget(rt: Runtime, job: Job, *, ensure_replay: Callable[[Runtime, Brain, ReplayBuffer], None]) -> dict:
    """The job: see the module's docstring (``ensure_replay``: orchestration's restore of a lost
    buffer). Its result: ``forgotten`` (log rows), ``learned`` (of
    them, learned by the current version), ``how``, ``replay_removed``, ``version`` (the "forget"
    version) and ``versions_deleted``."""
    selector = job.payload["selector"]
    with writer(rt, job.brain_id, job_id=job.id) as lease:
        brain = samplelog.brain_row(rt.db, job.brain_id)
        if brain is None:
            return {"skipped": "brain deleted"}
        started = time.perf_counter()
        with rt.db.session(read_only=True) as s:
            rows = matching(s, brain, selector)
            position = s.scalar(select(Version.log_position).where(
                Version.brain_id == brain.id, Version.number == brain.current_version)) or 0
            meta = meta_trained(s, brain.id)
        if not rows:
            _audit(rt, job.id, rows=0, how=NOTHING, deleted=[])
            return {"forgotten": 0, "learned": 0, "how": NOTHING, "replay_removed": 0,
                    "version": brain.current_version, "versions_deleted": []}
        rt.jobs.progress(job.id, 0.1, f"forgetting {len(rows)} samples")
        learner = rt.training.checkout(rt.versions, brain, rt.device)
        buffer = rt.replay(brain, lease)
        ensure_replay(rt, brain, buffer)
        learned = [r for r in rows if r.id <= position]  # what the current version holds
        offered = sum(1 for r in rows if r.id <= brain.learned_position)
        if not learned or learner.mergeable():
            how = DOWNDATED
            _downdate(rt, learner, brain, learned)
        elif meta:
            raise Invalid("the brain was meta-trained and its learner cannot unlearn exactly")
        else:
            how = RETRAIN
        downdate_seconds = time.perf_counter() - started
        forgotten = {(bytes(r.x), int(r.label)) for r in rows}
        removed = buffer.purge(forgotten, offered)
        first = rows[0].id
        snapshot = buffer.snapshot()
        rt.jobs.progress(job.id, 0.8, "publishing")
        with rt.db.session() as s:
            row = locked_brain(s, lease)
            if row is None:
                return {"skipped": "brain deleted"}
            current = s.scalar(select(Version).where(Version.brain_id == brain.id,
                                                     Version.number == brain.current_version))
            ids = [r.id for r in rows]
            for start in range(0, len(ids), 1000):
                s.execute(delete(Sample).where(Sample.brain_id == brain.id, Sample.id.in_(ids[start:start + 1000])))
            per_task: dict[int, int] = {}
            for r in rows:
                per_task[r.task_id] = per_task.get(r.task_id, 0) + 1
            for task_id, n in per_task.items():
                s.execute(update(Task).where(Task.id == task_id).values(samples=Task.samples - n))
            row.samples_learned = max(0, row.samples_learned - offered)
            row.samples_since_sleep = max(0, row.samples_since_sleep - offered)
            if how == RETRAIN:
                row.retrain_from = min(first, row.retrain_from or first)
            version = rt.versions.publish(
                s, row, learner, kind="forget", lease=lease, base=brain.current_version,
                log_position=current.log_position if current else 0,
                samples_learned=max(0, (current.samples_learned if current else 0) - len(learned)),
                tasks_seen=current.tasks_seen if current else 0, replay=snapshot,
                stats={"forgotten": len(rows), "how": how, "replay_removed": removed},
            )
            number = version.number
            deleted = _condemned(rt, s, brain.id, number, first, forgotten) if how == DOWNDATED else []
            rt.versions.remove(s, brain.id, deleted)
            _audit_in(s, job.id, rows=len(rows), how=how, deleted=deleted)
        rt.training.checkin(brain, number, learner)
        return {"forgotten": len(rows), "learned": len(learned), "how": how, "replay_removed": removed,
                "version": number, "versions_deleted": deleted, "seconds": round(downdate_seconds, 4)}


def _downdate(rt: Runtime, learner: Learner, brain: Brain, rows: list) -> None:
    """Take ``rows`` back from ``learner`` in the batches of a wake (one task per batch)."""
    dim = input_dim(brain.input_shape, brain.encoder)
    known: dict[int, Task] = {}
    for task_id, x, y in samplelog.batches(rows, dim):
        task = samplelog.task_of(rt.db, brain.id, known, task_id)
        learner.unlearn(x.to(rt.device), y.to(rt.device), task.name)


def _condemned(rt: Runtime, s: Session, brain_id: int, keep: int, first: int,
               forgotten: set[tuple[bytes, int]]) -> list[int]:
    """The versions other than ``keep`` that learned a forgotten row (``log_position`` >= the
    smallest id, ``first``) or whose replay snapshot holds one."""
    out = []
    for number, position in s.execute(select(Version.number, Version.log_position)
                                      .where(Version.brain_id == brain_id, Version.number != keep)
                                      .order_by(Version.number)).tuples():
        if position >= first:
            out.append(number)
            continue
        snap = rt.versions.load_replay(brain_id, number)
        if snap is not None and len(snap["y"]) and holds_any(snap, forgotten):
            out.append(number)
    return out


def _audit_in(s: Session, job_id: str, *, rows: int, how: str, deleted: list[int]) -> None:
    s.execute(update(Erasure).where(Erasure.job == job_id)
              .values(rows=rows, how=how, versions_deleted=deleted, finished_at=utcnow()))


def _audit(rt: Runtime, job_id: str, **values) -> None:
    with rt.db.session() as s:
        _audit_in(s, job_id, **values)


# -- the retrain path: the next sleep -------------------------------------------------------------
def retrain(rt: Runtime, job: Job, brain: Brain) -> tuple[Learner, int, int]:
    """A fresh learner that learned the log (what is left of it) up to the current version's
    position, in log order and in a wake's batches; it and the number of samples and tasks seen."""
    learner = new_learner(brain).to(rt.device)
    with rt.db.session(read_only=True) as s:
        position = s.scalar(select(Version.log_position).where(
            Version.brain_id == brain.id, Version.number == brain.current_version)) or 0
        total = samplelog.pending(s, brain.id, 0) if position else 0
    dim = input_dim(brain.input_shape, brain.encoder)
    known: dict[int, Task] = {}
    learned, tasks_seen = 0, 0
    for rows in samplelog.chunks(rt.db, brain.id, 0, 1 << 62, through=position):
        for task_id, x, y in samplelog.batches(rows, dim):
            task = samplelog.task_of(rt.db, brain.id, known, task_id)
            learner.observe(x.to(rt.device), y.to(rt.device), task.name)
            tasks_seen = max(tasks_seen, task.ordinal + 1)
        learned += len(rows)
        rt.jobs.progress(job.id, 0.05 + 0.5 * learned / max(total, learned), f"retraining {learned}/{total}")
    return learner, learned, tasks_seen


def retrained(rt: Runtime, s: Session, brain: Brain, number: int) -> list[int]:
    """After the retraining sleep published version ``number`` (in ``s``'s transaction): every
    other version goes, and the erasures waiting for it are marked; the versions deleted."""
    others = list(s.scalars(select(Version.number).where(Version.brain_id == brain.id, Version.number != number)))
    rt.versions.remove(s, brain.id, others)
    brain.retrain_from = None
    s.execute(update(Erasure).where(Erasure.brain_id == brain.id, Erasure.how == RETRAIN)
              .values(how=RETRAINED, versions_deleted=others))
    return others


def erasures(s: Session, brain: Brain) -> list[Erasure]:
    return list(s.scalars(select(Erasure).where(Erasure.brain_id == brain.id).order_by(Erasure.id)))
