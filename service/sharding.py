"""A sharded wake (issue 17): one brain's backlog learned by several workers at once.

For a learner whose wake is a sum of per-sample statistics (``Learner.mergeable``), a wake job with
at least ``2 * wake_shard_min_samples`` samples to learn, on an executor that can fan out (Celery),
is split in three steps:

1. *Plan* (:func:`plan`, in the wake job, under the brain's writer): the rows it would learn (at most
   ``wake_max_samples`` after ``learned_position``) are cut into pieces of about
   :data:`PIECE_ROWS` consecutive rows (row-id ranges); the plan (JSON) names the brain, the
   version it starts from (``base``), the number of shards (``wake_shards``) and the pieces. The
   job hands the plan to the executor (a Celery chord) and ends without recording its end.
2. *Shards* (:func:`shard`, one Celery task each, in parallel, no writer lock: they write nothing
   of the brain): each loads version ``base`` itself, then claims pieces one at a time (a counter
   in Redis) until none is left, so that a shard on a slower or busier worker claims fewer and
   the shards end together; it sums ``wake_statistics`` over its pieces and stores the sums, with
   the id, label and task of each row it read, in Redis as safetensors bytes
   (``pb:shard:<plan>:<i>``, expiring after :data:`TTL_SECONDS`; nothing is pickled; the process
   keeps its last shard's too, for a merge that runs there), answering JSON: the pieces it summed.
   A shard that finds ``base`` no longer current, or fails, answers why instead.
3. *Merge* (``service.orchestration.merge_shards``, the chord's callback, under a fresh fenced
   writer): unless a shard refused or the brain moved on from the plan (its current version is not
   ``base`` or its learned position not the plan's start; a piece that no answer summed, claimed
   by a shard whose worker was lost: :func:`refusal`), it merges the sums in shard order (which
   pieces each holds depends on timing: the readout is one worker's to floating-point tolerance),
   offers the rows the shards read to the replay buffer in log order and batches as one worker
   would (reading only the inputs that end up stored), and publishes one version at the plan's
   end. Otherwise it throws the sums away and learns the log as one worker does: nothing
   computed against another version is ever published.
"""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from models.learner import Learner, add_statistics
from service import samplelog
from service.jobs import whoami
from service.replay import ReplayBuffer
from service.runtime import Runtime
from service.tables import Brain, Task
from service.versions import input_dim

log = logging.getLogger(__name__)

TTL_SECONDS = 3600  # a shard's sums wait this long for their merge in Redis

PIECE_ROWS = 1024  # rows of a piece of a sharded backlog: what a shard claims at a time

# A shard stores, beside its sums, the rows it read (id, label and task of each), so that the
# merge offers them to the replay buffer, in log order, without reading the log again.
ROW_IDS = "log.id"
ROWS = {ROW_IDS: "id", "log.label": "label", "log.task": "task_id"}

# The sums of the last shard this process computed, by key: a merge that runs where one of its
# shards ran reads that shard's sums from here instead of Redis (the same bytes, loaded once).
_held: dict[str, dict[str, torch.Tensor]] = {}


def plan(rt: Runtime, brain: Brain, pending: int) -> dict | None:
    """The shards of a wake of ``brain`` at its current version with ``pending`` samples in its
    log, or None when it is learned by one worker: sharding off (``wake_shards`` 1), an executor
    that runs jobs in one place, a learner that cannot merge (as its version's publish recorded:
    the plan loads no learner), or too few samples for two shards of ``wake_shard_min_samples``.
    The backlog is cut into pieces of about :data:`PIECE_ROWS` consecutive rows, which the shards
    claim one at a time (:func:`shard`)."""
    settings = rt.settings
    samples = min(pending, settings.wake_max_samples)
    shards = min(settings.wake_shards, samples // settings.wake_shard_min_samples)
    if shards < 2 or not rt.jobs.can_fan_out or rt.redis is None:
        return None
    with rt.db.session(read_only=True) as s:
        if not rt.versions.mergeable(s, brain):
            return None
        count = samplelog.pending(s, brain.id, brain.learned_position, limit=samples)
        if count < 2 * settings.wake_shard_min_samples:
            return None
        pieces = max(shards, -(-count // PIECE_ROWS))
        cuts = [round(i * count / pieces) for i in range(pieces + 1)]
        ends = samplelog.ids_at(s, brain.id, brain.learned_position, cuts[1:])  # each piece's last row
    after = [brain.learned_position, *ends[:-1]]
    return {"id": uuid.uuid4().hex, "brain": brain.id, "base": brain.current_version,
            "start": brain.learned_position, "end": ends[-1], "samples": count, "pending": pending,
            "shards": shards, "pieces": [[after[i], ends[i], cuts[i + 1] - cuts[i]] for i in range(pieces)]}


def shard(rt: Runtime, job_id: str, plan: dict, index: int) -> dict:
    """Shard ``index`` of ``plan``: claim pieces of the backlog one at a time until none is left
    (a shard whose worker is slower claims fewer: the shards end together), sum their wake
    statistics and store the sums; what a merge needs to know, as JSON: the pieces summed and the
    key (none when it claimed nothing), or why there is none (``refused``). Never raises."""
    started, at = time.perf_counter(), time.time()
    out: dict = {"shard": index, "plan": plan["id"]}
    try:
        brain = samplelog.brain_row(rt.db, plan["brain"])
        if brain is None or brain.current_version != plan["base"]:
            return {**out, "refused": f"version {plan['base']} is no longer current"}
        rt.jobs.heartbeat(job_id)
        learner = rt.training.checkout(rt.versions, brain, rt.device)
        try:
            summed = _statistics(rt, job_id, brain, learner, plan)
        finally:  # wake_statistics changes nothing: the learner is still the base version
            rt.training.checkin(brain, plan["base"], learner)
        if isinstance(summed, str):
            return {**out, "refused": summed}
        total, claimed = summed
        done = {**out, "pieces": claimed, "base": plan["base"], "samples": sum(plan["pieces"][i][2] for i in claimed),
                "by": whoami("worker"), "at": round(at, 3)}  # when it started (epoch seconds): a timeline
        if not claimed:
            return {**done, "bytes": 0, "seconds": round(time.perf_counter() - started, 4)}
        total = {name: value.cpu().contiguous() for name, value in total.items()}
        data = save_tensors(total)
        key = f"pb:shard:{plan['id']}:{index}"
        rt.redis.set(key, data, ex=TTL_SECONDS)
        _held.clear()
        _held[key] = total
        return {**done, "key": key, "bytes": len(data), "seconds": round(time.perf_counter() - started, 4)}
    except Exception as exc:  # the merge learns the log itself instead
        log.exception("shard %d of plan %s (job %s) failed", index, plan["id"], job_id)
        return {**out, "refused": f"{type(exc).__name__}: {exc}"[:500]}


def _claim(rt: Runtime, plan: dict) -> int | None:
    """The next piece of ``plan`` nobody claimed yet, or None."""
    key = f"pb:shard:{plan['id']}:claimed"
    claimed = int(rt.redis.incr(key)) - 1
    if claimed == 0:
        rt.redis.expire(key, TTL_SECONDS)
    return claimed if claimed < len(plan["pieces"]) else None


def _statistics(rt: Runtime, job_id: str, brain: Brain, learner: Learner, plan: dict
                ) -> tuple[dict[str, torch.Tensor], list[int]] | str:
    """The summed statistics of the pieces this shard claimed, with the rows they hold (:data:`ROWS`),
    and the pieces; or why not."""
    if not learner.mergeable():
        return "the learner cannot merge"
    known: dict[int, Task] = {}
    dim = input_dim(brain.input_shape, brain.encoder)
    total: dict[str, torch.Tensor] = {}
    read: dict[str, list[int]] = {name: [] for name in ROWS}
    claimed: list[int] = []
    while (piece := _claim(rt, plan)) is not None:
        claimed.append(piece)
        after, through, count = plan["pieces"][piece]
        with rt.db.session(read_only=True) as s:
            rows = samplelog.read_after(s, brain.id, after, count, through=through)
        if len(rows) != count:
            return f"the log holds {len(rows)} of piece {piece}'s {count} rows"
        for task_id, x, y in samplelog.batches(rows, dim):
            task = samplelog.task_of(rt.db, brain.id, known, task_id)
            add_statistics(total, learner.wake_statistics(x.to(rt.device), y.to(rt.device), task.name))
        for name, column in ROWS.items():
            read[name].extend(getattr(r, column) for r in rows)
        rt.jobs.heartbeat(job_id)
    if ROWS.keys() & total.keys():
        return f"the learner's statistics use a reserved name ({sorted(ROWS.keys() & total.keys())})"
    rows_read = {name: torch.tensor(values, dtype=torch.int64) for name, values in read.items()}
    return {**total, **rows_read}, claimed


def refusal(brain: Brain, plan: dict, results: list[dict]) -> str | None:
    """Why the shards' sums must not be merged into ``brain`` as it is now, or None."""
    if brain.current_version != plan["base"] or brain.learned_position != plan["start"]:
        return (f"the brain moved on from the plan (version {plan['base']} at log position {plan['start']}) "
                f"to version {brain.current_version} at {brain.learned_position}")
    if [r.get("shard") for r in results] != list(range(plan["shards"])) or any(
            r.get("plan") != plan["id"] for r in results):
        return "the shards' answers do not match the plan"
    refused = [f"shard {r['shard']}: {r['refused']}" for r in results if "refused" in r]
    if refused:
        return "; ".join(refused)
    # each piece is claimed once (an atomic counter): a piece no answer holds was claimed by a shard
    # that was lost, or delivered twice, whose other run's answer the chord did not keep
    if sorted(p for r in results for p in r["pieces"]) != list(range(len(plan["pieces"]))):
        return "pieces of the backlog are missing (a shard that claimed them was lost)"
    return None


def load(rt: Runtime, results: list[dict]) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]] | None:
    """The shards' sums added in shard order, and the rows they read (:data:`ROWS`, in log order);
    None when a shard's are gone from Redis (expired, Redis lost), even where this process still
    holds them: whether a merge can use a shard's sums does not depend on where it runs."""
    total: dict[str, torch.Tensor] = {}
    columns: dict[str, list[torch.Tensor]] = {name: [] for name in ROWS}
    for result in results:
        key = result.get("key")
        if key is None:  # it claimed no piece
            continue
        if key in _held:
            if not rt.redis.exists(key):
                return None
            part = _held[key]
        else:
            data = rt.redis.get(key)
            if data is None:
                return None
            part = load_tensors(data)
        for name in ROWS:
            columns[name].append(part[name])
        add_statistics(total, {name: value for name, value in part.items() if name not in ROWS})
    order = torch.cat(columns[ROW_IDS]).argsort() if columns[ROW_IDS] else torch.zeros(0, dtype=torch.int64)
    return total, {name: torch.cat(parts)[order].tolist() if parts else [] for name, parts in columns.items()}


def offer(rt: Runtime, brain: Brain, plan: dict, buffer: ReplayBuffer, rows: dict[str, list[int]]) -> tuple[int, int]:
    """Offer ``plan``'s samples, the ``rows`` its shards read (:func:`load`), to the replay buffer
    as one worker's wake does (in log order, in its chunks and batches: the reservoir's draws
    follow them), reading from the log only the inputs that end up stored; the samples offered and
    the tasks seen (the highest ordinal + 1). Raises when the rows are not the plan's (the buffer
    is then as it was)."""
    all_ids, all_labels, all_tasks = rows[ROW_IDS], rows["log.label"], rows["log.task"]
    if len(all_ids) != plan["samples"] or (all_ids and (all_ids[0] <= plan["start"] or all_ids[-1] != plan["end"])):
        raise RuntimeError(f"the shards read {len(all_ids)} rows, not the plan's {plan['samples']}")
    ids: list[list[int]] = []
    labels: list[list[int]] = []
    for chunk in range(0, len(all_ids), samplelog.WAKE_CHUNK):  # as samplelog.chunks cuts the log
        for start, end in samplelog.spans(all_tasks[chunk:chunk + samplelog.WAKE_CHUNK]):
            ids.append(all_ids[chunk + start:chunk + end])
            labels.append(all_labels[chunk + start:chunk + end])
    known: dict[int, Task] = {}
    tasks_seen = max((samplelog.task_of(rt.db, brain.id, known, task).ordinal + 1 for task in set(all_tasks)), default=0)
    offered = len(all_ids)
    dim = input_dim(brain.input_shape, brain.encoder)

    def fetch(keys: list[tuple[int, int]]) -> np.ndarray:
        wanted = [ids[b][i] for b, i in keys]
        with rt.db.session(read_only=True) as s:
            found = samplelog.inputs(s, brain.id, wanted)
        return samplelog.decode([found[i] for i in wanted], dim).numpy()

    buffer.add_batches(labels, fetch)
    return offered, tasks_seen


def drop(rt: Runtime, results: list[dict]) -> None:
    keys = [r["key"] for r in results if "key" in r]
    for key in keys:
        _held.pop(key, None)
    if keys and rt.redis is not None:
        rt.redis.delete(*keys)

