"""Orchestration of learning: what a wake, sleep or meta-train job does, and running a job.

Plain functions over a :class:`~service.runtime.Runtime`; the in-process executor and the Celery
tasks (``workers.tasks``) both call :func:`run_job`. When jobs are submitted (a due sleep, recovery
after a restart) is ``service.scheduling``'s concern; the meta-train set's storage is
``service.meta_sets``'. Every job is idempotent:

- wake learns the sample log after the brain's ``learned_position`` and publishes a version that
  records the new position in the same transaction, so a job that dies is simply re-run and nothing
  is learned twice or lost; several queued wake jobs coalesce (the later ones find nothing to do);
- sleep consolidates the current version over the replay buffer and publishes a new version with a
  snapshot of the buffer;
- meta_train (strategies with ``meta_trainable``, e.g. "anml") meta-learns the current version on
  a background set and publishes a version of kind "meta". The background set never enters the
  sample log, the replay buffer or the brain's labels: the route (``service.meta_sets.submit``) stores
  it, labels remapped to ``0..C-1``, as the blob ``<brain id>/meta/<uuid>.safetensors`` (tensors
  ``x`` float32 and ``y`` int64; ``service.blobs``: every worker reaches it), the job's payload names
  it, and the job deletes it when it ends, succeeded or failed (a worker that dies leaves it for the
  redelivered job). A job re-run after its version was published meta-trains once more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import select

from models.learner import Learner, Replay, Stats
from service import samplelog, sharding, unlearning
from service.blobs import BlobMissing
from service.locks import BrainLockTimeout, Lease, LockLost
from service.meta_sets import meta_set_key
from service.replay import ReplayBuffer
from service.runtime import Runtime
from service.samplelog import WAKE_BATCH, WAKE_CHUNK  # noqa: F401 - re-exported (bench.quality)
from service.scheduling import maybe_sleep
from service.tables import Brain, Job, Task, Version, utcnow
from service.versions import input_dim
from service.writer import locked_brain, writer

log = logging.getLogger(__name__)

SLEEP_BUDGET_RANGE = (1_000, 10_000)  # default sleep budget: samples learned since the last sleep, clamped


def sleep_budget(policy: dict, samples_since_sleep: int) -> int:
    """Samples one sleep rehearses: the policy's ``budget``, else as many as were learned since the
    last sleep, clamped to ``SLEEP_BUDGET_RANGE``, so that consolidation costs about what waking did."""
    if policy.get("budget"):
        return int(policy["budget"])
    low, high = SLEEP_BUDGET_RANGE
    return max(low, min(high, int(samples_since_sleep)))


def transient(exc: BaseException) -> bool:
    """A backend that went away (Postgres, Redis), a writer lock lost mid-job, or a brain busy with
    another writer for longer than the lock timeout: the same job can succeed when it runs again."""
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError, BrokerError,
                            LockLost, BrainLockTimeout))


@dataclass(frozen=True)
class Handed:
    """What a job's handler returns when another task records the job's end (a sharded wake's
    merge): the job stays running, and ``detail`` goes into its events."""

    detail: dict


def run_job(rt: Runtime, job_id: str, *, retry_transient: bool = False) -> dict | None:
    """Run a job and record its end. ``retry_transient`` (the Celery task, which retries): a job
    that failed because a backend went away (:func:`transient`) is not marked failed but queued
    again, and the error re-raised for the caller to retry it."""
    job = rt.jobs.start(job_id)
    if job is None:
        return None
    handler = {"wake": wake, "sleep": sleep, "meta_train": meta_train, "forget": _forget}.get(job.kind)
    try:
        if handler is None:
            raise ValueError(f"unknown job kind {job.kind!r}")
        result = handler(rt, job)
    except Exception as exc:
        if retry_transient and transient(exc):
            log.warning("job %s (%s) interrupted, to be retried: %s", job_id, job.kind, exc)
            rt.jobs.requeue(job_id, exc)
        else:
            log.exception("job %s (%s) failed", job_id, job.kind)
            rt.jobs.finish(job_id, error=f"{type(exc).__name__}: {exc}")
        raise
    if isinstance(result, Handed):
        rt.jobs.event(job_id, "handed", **result.detail)
        return result.detail
    rt.jobs.finish(job_id, result=result)
    return result


def _forget(rt: Runtime, job: Job) -> dict:
    return unlearning.forget(rt, job, ensure_replay=_ensure_replay)


def _ensure_replay(rt: Runtime, brain: Brain, buffer: ReplayBuffer) -> None:
    """A lost store (Redis flushed, or a restarted embedded process) is restored from the newest
    version holding a snapshot."""
    if brain.samples_learned == 0 or len(buffer) > 0:
        return
    with rt.db.session() as s:
        snap = rt.versions.latest_replay_snapshot(s, brain)
    if snap is not None and len(snap["y"]) > 0:
        buffer.restore(snap)
        log.info("restored replay buffer of brain %s (%d samples)", brain.name, len(snap["y"]))


def wake(rt: Runtime, job: Job) -> dict | Handed:
    """Learn the log after the brain's learned position, at most ``wake_max_samples`` of it, and
    publish; a follow-up job learns the rest, so that no job's work grows with the backlog. A
    backlog that ``service.sharding`` splits is handed to shards and their merge instead."""
    with writer(rt, job.brain_id, job_id=job.id) as lease:
        brain = samplelog.brain_row(rt.db, job.brain_id)
        if brain is None:
            return {"skipped": "brain deleted"}
        with rt.db.session(read_only=True) as s:
            pending = samplelog.pending(s, brain.id, brain.learned_position)
        sharded = rt.settings.wake_shards > 1 and rt.jobs.can_fan_out  # else one worker, as always
        shards = sharding.plan(rt, brain, pending) if sharded else None
        if shards is not None:
            rt.jobs.progress(job.id, 0.02, f"learning {shards['samples']} samples in {shards['shards']} shards")
            rt.jobs.fan_out(job.id, shards)
            return Handed({"plan": shards["id"], "shards": shards["shards"], "samples": shards["samples"]})
        learner = rt.training.checkout(rt.versions, brain, rt.device)
        buffer = rt.replay(brain, lease)
        _ensure_replay(rt, brain, buffer)
        result = _learn_log(rt, job, lease, brain, learner, buffer, pending)
    return _woken(rt, brain.id, result)


def _learn_log(rt: Runtime, job: Job, lease: Lease, brain: Brain, learner: Learner, buffer: ReplayBuffer,
               pending: int) -> dict:
    """One worker's wake: observe the log after ``brain``'s learned position (at most
    ``wake_max_samples``), offering each batch to ``buffer``, and publish a version."""
    start = cursor = brain.learned_position
    limit = rt.settings.wake_max_samples
    known: dict[int, Task] = {}
    learned, tasks_seen = 0, 0
    losses: list[float] = []
    dim = input_dim(brain.input_shape, brain.encoder)  # the encoder's output, as the log stores it
    for rows in samplelog.chunks(rt.db, brain.id, cursor, limit):
        steps = [(x, y, samplelog.task_of(rt.db, brain.id, known, task_id))
                 for task_id, x, y in samplelog.batches(rows, dim)]
        tasks_seen = max(tasks_seen, *(task.ordinal + 1 for _, _, task in steps))
        for stats in learn_batches(learner, buffer, [(x, y, task.name) for x, y, task in steps], rt.device):
            if stats.loss is not None:
                losses.append(stats.loss)
        cursor = rows[-1].id
        learned += len(rows)
        rt.jobs.progress(job.id, learned / max(min(pending, limit), learned), f"learning {learned}/{pending}")
    if learned == 0:
        rt.training.checkin(brain, brain.current_version, learner)
        return {"learned": 0, "version": brain.current_version}
    stats = {"learned": learned, "log_from": start, "loss": float(np.mean(losses)) if losses else None}
    result = _publish_wake(rt, lease, brain, learner, buffer, cursor=cursor, learned=learned,
                           tasks_seen=tasks_seen, stats=stats)
    return {**result, "pending": pending}


def _publish_wake(rt: Runtime, lease: Lease, brain: Brain, learner: Learner, buffer: ReplayBuffer, *, cursor: int,
                  learned: int, tasks_seen: int, stats: dict) -> dict:
    """Publish ``learner``, which learned the log up to ``cursor`` (``learned`` samples more than
    ``brain``'s version), with the brain's new position, in one transaction; the job's result."""
    with rt.db.session() as s:
        row = locked_brain(s, lease)
        if row is None:
            return {"skipped": "brain deleted"}
        previous = s.scalar(
            select(Version.tasks_seen).where(Version.brain_id == brain.id, Version.number == row.current_version)
        )
        row.learned_position = cursor
        row.samples_learned += learned
        row.samples_since_sleep += learned
        version = rt.versions.publish(
            s, row, learner, kind="wake", lease=lease, base=brain.current_version, log_position=cursor,
            samples_learned=row.samples_learned, tasks_seen=max(previous or 0, tasks_seen), stats=stats,
            replay=buffer.snapshot() if rt.embedded_replay else None,
        )
        number = version.number
    rt.training.checkin(brain, number, learner)
    return {"learned": learned, "version": number}


def _woken(rt: Runtime, brain_id: int, result: dict) -> dict:
    """After a wake published (its writer released): a follow-up job for what is left of the
    ``pending`` samples it saw (later ones have jobs of their own), and a sleep if the policy makes
    one due; the job's result with ``left``."""
    if result.get("skipped") or not result.get("learned"):
        return {k: v for k, v in result.items() if k != "pending"}
    left = max(0, result.pop("pending") - result["learned"])
    if left:  # the rest of the backlog (and whatever arrived meanwhile) in a job of its own
        rt.jobs.submit("wake", brain_id, {"reason": "continuation", "samples": left}, join_queued=True)
    maybe_sleep(rt, brain_id)
    return {**result, "left": left}


def merge_shards(rt: Runtime, job_id: str, plan: dict, results: list[dict], *,
                 retry_transient: bool = False) -> dict | None:
    """The end of a sharded wake (``service.sharding``), the chord's callback: under a fresh fenced
    writer, merge the shards' sums in shard order, offer the samples to the replay buffer in log
    order, publish one version and record the wake job's end. When the brain moved on from the
    plan or a shard refused, the sums are thrown away and the log is learned as one worker does.
    ``retry_transient``: as :func:`run_job`'s (the job stays running for the retry)."""
    with rt.db.session(read_only=True) as s:
        job = s.get(Job, job_id)
        if job is None or job.state in ("succeeded", "failed"):
            return None  # a redelivered callback
        s.expunge(job)
    try:
        with writer(rt, job.brain_id, job_id=job.id) as lease:
            result = _merge(rt, job, lease, plan, results)
        result = _woken(rt, job.brain_id, result)
    except Exception as exc:
        if retry_transient and transient(exc):
            log.warning("merge of job %s interrupted, to be retried: %s", job_id, exc)
            rt.jobs.event(job_id, "retrying", error=f"{type(exc).__name__}: {exc}"[:500])
        else:
            log.exception("merge of job %s failed", job_id)
            rt.jobs.finish(job_id, error=f"{type(exc).__name__}: {exc}")
        raise
    rt.jobs.finish(job_id, result=result)
    return result


def _merge(rt: Runtime, job: Job, lease: Lease, plan: dict, results: list[dict]) -> dict:
    brain = samplelog.brain_row(rt.db, job.brain_id)
    if brain is None:
        sharding.drop(rt, results)
        return {"skipped": "brain deleted"}
    refused = sharding.refusal(brain, plan, results)
    merge_at = time.time()
    learner = rt.training.checkout(rt.versions, brain, rt.device)
    started = time.perf_counter()
    loaded = sharding.load(rt, results) if refused is None else None
    load_seconds = time.perf_counter() - started
    if refused is None and loaded is None:
        refused = "a shard's statistics are gone from Redis"
    buffer = rt.replay(brain, lease)
    _ensure_replay(rt, brain, buffer)
    if refused is not None or not learner.mergeable():
        refused = refused or "the learner cannot merge"
        sharding.drop(rt, results)
        log.warning("job %s: shards not merged (%s); learning the log in one place", job.id, refused)
        with rt.db.session(read_only=True) as s:
            pending = samplelog.pending(s, brain.id, brain.learned_position)
        return {**_learn_log(rt, job, lease, brain, learner, buffer, pending), "shards_refused": refused}
    rt.jobs.progress(job.id, 0.8, f"merging {len(results)} shards")
    started = time.perf_counter()
    statistics, rows = loaded
    learner.merge(statistics)
    learned, tasks_seen = sharding.offer(rt, brain, plan, buffer, rows)
    merge_seconds = time.perf_counter() - started
    stats = {"learned": learned, "log_from": plan["start"], "loss": None, "shards": len(results),
             "shard_seconds": [r["seconds"] for r in results], "shard_bytes": sum(r["bytes"] for r in results),
             "shard_pieces": [len(r["pieces"]) for r in results],
             "shard_workers": [r["by"] for r in results], "shard_at": [r["at"] for r in results], "merge_at": round(merge_at, 3),
             "statistics_load_seconds": round(load_seconds, 4), "merge_seconds": round(merge_seconds, 4)}
    result = _publish_wake(rt, lease, brain, learner, buffer, cursor=plan["end"], learned=learned,
                           tasks_seen=tasks_seen, stats=stats)
    sharding.drop(rt, results)  # kept until now for a retry of a merge that could not publish
    return {**result, "shards": len(results), "pending": plan["pending"]}


def learn_batches(learner: Learner, buffer: ReplayBuffer, batches: Sequence[tuple[torch.Tensor, torch.Tensor, str]],
                  device: str) -> list[Stats]:
    """Steps of a wake: the learner observes each batch ``(x, y, task)`` (of one task) in turn, and
    the replay buffer is offered them all, in order, at the end, in one round trip to its store:
    observing never reads the buffer, so it ends as offering each batch after its step leaves it
    (``bench.quality`` drives its brains through this too). Each step's stats."""
    stats = [learner.observe(x.to(device), y.to(device), task) for x, y, task in batches]
    buffer.add_many([x.numpy() for x, _, _ in batches], [y.tolist() for _, y, _ in batches])
    return stats


def consolidate(learner: Learner, buffer: ReplayBuffer, *, policy: dict, samples_since_sleep: int,
                version: int | None, device: str) -> tuple[Stats, int]:
    """A sleep's learning: the learner consolidates over the whole replay buffer, drawn in an order
    seeded by the current version, within the budget of :func:`sleep_budget`. Its stats and the
    number of samples replayed."""
    replay = buffer.sample(None, seed=version or 0)
    stats = learner.sleep(Replay(replay.x.to(device), replay.y.to(device)),
                          budget=sleep_budget(policy, samples_since_sleep))
    return stats, len(replay)


def sleep(rt: Runtime, job: Job) -> dict:
    with writer(rt, job.brain_id, job_id=job.id) as lease:
        brain = samplelog.brain_row(rt.db, job.brain_id)
        if brain is None:
            return {"skipped": "brain deleted"}
        if brain.retrain_from is not None:  # samples forgotten that the learner could not take back
            return _retrain(rt, job, lease, brain)
        if brain.samples_learned == 0:
            return {"skipped": "nothing learned yet", "version": brain.current_version}
        rt.jobs.progress(job.id, 0.05, "loading")
        learner = rt.training.checkout(rt.versions, brain, rt.device)
        buffer = rt.replay(brain, lease)
        _ensure_replay(rt, brain, buffer)
        rt.jobs.progress(job.id, 0.2, f"consolidating over {len(buffer)} replayed samples")
        started = time.perf_counter()
        stats, replayed = consolidate(learner, buffer, policy=brain.sleep_policy,
                                      samples_since_sleep=brain.samples_since_sleep,
                                      version=brain.current_version, device=rt.device)
        seconds = time.perf_counter() - started
        rt.jobs.progress(job.id, 0.9, "publishing")
        def slept(row: Brain) -> None:
            row.samples_since_sleep = 0
            row.last_sleep_at = utcnow()

        number = _publish_over_current(
            rt, lease, brain, learner, kind="sleep", update=slept, replay=buffer.snapshot(),
            stats={**stats.as_dict(), "seconds": seconds, "replayed": replayed,
                   "reason": job.payload.get("reason", "request")},
        )
        if number is None:
            return {"skipped": "brain deleted"}
        rt.training.checkin(brain, number, learner)
        return {"version": number, "seconds": round(seconds, 4), "replayed": replayed, **stats.as_dict()}


def _retrain(rt: Runtime, job: Job, lease: Lease, brain: Brain) -> dict:
    """A sleep after samples were forgotten that the learner could not take back
    (``service.unlearning``): a fresh learner learns the remaining log up to the current version's
    position, consolidates over the (purged) replay buffer and is published; every other version
    is deleted."""
    rt.jobs.progress(job.id, 0.05, "retraining from the log")
    started = time.perf_counter()
    learner, learned, tasks_seen = unlearning.retrain(rt, job, brain)
    buffer = rt.replay(brain, lease)
    _ensure_replay(rt, brain, buffer)
    rt.jobs.progress(job.id, 0.6, f"consolidating over {len(buffer)} replayed samples")
    stats, replayed = consolidate(learner, buffer, policy=brain.sleep_policy, samples_since_sleep=learned,
                                  version=brain.current_version, device=rt.device)
    seconds = time.perf_counter() - started
    rt.jobs.progress(job.id, 0.9, "publishing")
    with rt.db.session() as s:
        row = locked_brain(s, lease)
        if row is None:
            return {"skipped": "brain deleted"}
        position = s.scalar(select(Version.log_position).where(
            Version.brain_id == brain.id, Version.number == brain.current_version)) or 0
        row.samples_since_sleep = 0
        row.last_sleep_at = utcnow()
        version = rt.versions.publish(
            s, row, learner, kind="sleep", lease=lease, base=brain.current_version, log_position=position,
            samples_learned=learned, tasks_seen=tasks_seen, replay=buffer.snapshot(),
            stats={**stats.as_dict(), "seconds": seconds, "replayed": replayed, "retrained": learned,
                   "reason": job.payload.get("reason", "request")},
        )
        number = version.number
        deleted = unlearning.retrained(rt, s, row, number)
    rt.training.checkin(brain, number, learner)
    return {"version": number, "seconds": round(seconds, 4), "replayed": replayed, "retrained": learned,
            "versions_deleted": deleted, **stats.as_dict()}


def _publish_over_current(rt: Runtime, lease: Lease, brain: Brain, learner: Learner, *, kind: str, stats: dict,
                          replay: dict[str, torch.Tensor] | None,
                          update: Callable[[Brain], None] = lambda row: None) -> int | None:
    """Publish ``learner`` as the brain's new version over its current one, under the writer's
    ``lease``, after ``update`` changed the brain's row in the same transaction; the version's
    number, or None when the brain was deleted meanwhile."""
    with rt.db.session() as s:
        row = locked_brain(s, lease)
        if row is None:
            return None
        update(row)
        return rt.versions.publish_over_current(s, row, learner, kind=kind, lease=lease, base=brain.current_version,
                                                stats=stats, replay=replay).number


def meta_train(rt: Runtime, job: Job) -> dict:
    from safetensors.torch import load

    key = meta_set_key(job.brain_id, Path(job.payload["file"]).name)
    try:
        with writer(rt, job.brain_id, job_id=job.id) as lease:
            brain = samplelog.brain_row(rt.db, job.brain_id)
            if brain is None:
                return {"skipped": "brain deleted"}
            rt.jobs.progress(job.id, 0.02, "loading")
            try:
                data = {k: v.to(rt.device) for k, v in load(rt.blobs.get(key)).items()}
            except BlobMissing:
                raise FileNotFoundError(f"the background set {Path(key).name} is gone") from None
            learner = rt.training.checkout(rt.versions, brain, rt.device)
            buffer = rt.replay(brain, lease)
            _ensure_replay(rt, brain, buffer)
            steps, inner = int(job.payload["steps"]), int(job.payload["inner_steps"])
            options = {} if job.payload.get("first_order") is None else {"first_order": job.payload["first_order"]}
            rt.jobs.progress(job.id, 0.05, "meta-training")
            started = time.perf_counter()
            stats = learner.meta_train(
                data["x"], data["y"], steps=steps, inner_steps=inner, **options,
                progress=lambda f: rt.jobs.progress(job.id, 0.05 + 0.9 * f, "meta-training"),
            )
            seconds = time.perf_counter() - started
            rt.jobs.progress(job.id, 0.95, "publishing")
            number = _publish_over_current(
                rt, lease, brain, learner, kind="meta", stats={**stats.as_dict(), "seconds": seconds},
                replay=buffer.snapshot() if rt.embedded_replay else None,
            )
            if number is None:
                return {"skipped": "brain deleted"}
            rt.training.checkin(brain, number, learner)
            return {"version": number, "seconds": round(seconds, 4), **stats.as_dict()}
    finally:
        try:
            rt.blobs.delete(key)
        except Exception:  # noqa: BLE001 - the job's own outcome matters more; the brain's deletion takes it
            log.warning("could not delete the background set %s", key, exc_info=True)
