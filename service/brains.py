"""What the API does with brains: the registry, ingest into the sample log, labels and tasks,
evaluations and the metrics built from them. Keyword-only data functions over a Runtime; routes stay
thin and HTTP-agnostic errors (``service.errors``) carry the status."""

from __future__ import annotations

import json

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from models import encoders as encoder_registry
from models.metrics import cl_metrics
from models.registry import DEFAULT_STRATEGY, STRATEGIES, ParamsError, validate_params
from service import budgets, samplelog, schemas
from service.errors import Conflict, Invalid, NotFound
from service.inputs import check_kind, decode
from service.runtime import Runtime
from service.settings import Settings
from service.tables import Brain, Evaluation, Job, Sample, Task, Version
from service.versions import input_dim, new_learner

# encoder names by input kind, the default first (vector: flatten; image: pixels, efficientnet-lite0;
# text: all-minilm-l6-v2, alias minilm)
ENCODERS = {kind: tuple(encoder_registry.for_kind(kind)) for kind in ("vector", "image", "text")}


# -- registry -------------------------------------------------------------------------------------
def create_brain(rt: Runtime, *, body: schemas.BrainCreate) -> Brain:
    check_kind(body.input.kind, body.input.shape)
    raw = input_dim(body.input.shape)
    if raw > rt.settings.max_input_dim:
        raise Invalid(f"input shape {body.input.shape} has {raw} values; the limit is {rt.settings.max_input_dim}")
    strategy = body.strategy or DEFAULT_STRATEGY
    if strategy not in STRATEGIES:
        raise Invalid(f"unknown strategy {strategy!r}; known: {', '.join(sorted(STRATEGIES))}")
    encoder = check_encoder(body.input.kind, body.encoder)
    dim = input_dim(body.input.shape, encoder)
    if dim > rt.settings.max_input_dim:
        raise Invalid(f"encoder {encoder!r} gives {dim} values; the limit is {rt.settings.max_input_dim}")
    max_labels = body.max_labels or rt.settings.max_labels
    if max_labels > rt.settings.max_labels:
        raise Invalid(f"max_labels {max_labels} is above the service's limit of {rt.settings.max_labels} (BRAIN_MAX_LABELS)")
    try:
        params = validate_params(strategy, body.params)
    except ParamsError as exc:
        raise Invalid(f"params: {exc}") from None
    budgets.check_sleep_policy(rt.settings, body.sleep_policy)
    with rt.db.session() as s:
        if s.scalar(select(Brain.id).where(Brain.name == body.name)) is not None:
            raise Conflict(f"brain {body.name!r} already exists")
        brain = Brain(
            name=body.name, input_kind=body.input.kind, input_shape=list(body.input.shape),
            strategy=strategy, encoder=encoder, params=params,
            sleep_policy=body.sleep_policy.model_dump(exclude_none=True),
            replay=body.replay.model_dump(), seed=body.seed, max_labels=max_labels,
            labels=[], learned_position=0, samples_learned=0, samples_since_sleep=0,
        )
        budgets.check_model(rt.settings, brain)  # before it is built; also refuses params that do not fit
        try:  # params valid alone may still not fit this input (e.g. a conv layer on a vector)
            learner = new_learner(brain)
        except ParamsError as exc:
            raise Invalid(f"params: {exc}") from None
        s.add(brain)
        s.flush()
        rt.versions.publish(
            s, brain, learner, kind="init", lease=None, base=None, log_position=0, samples_learned=0,
            tasks_seen=0, stats={}, replay=None,
        )
    return brain


def check_encoder(kind: str, name: str | None) -> str:
    """The registered name of the brain's encoder (default: the kind's); 422 for an unknown one, one
    that does not take ``kind`` inputs, or one whose optional package is not installed."""
    takes = ENCODERS[kind]
    if name is None:
        name = takes[0]
    try:
        encoder = encoder_registry.get(name)
    except KeyError:
        raise Invalid(f"unknown encoder {name!r}; a {kind} brain takes one of {list(takes)}") from None
    if kind not in encoder.kinds:
        raise Invalid(f"encoder {name!r} does not take {kind} input; use one of {list(takes)}")
    try:
        encoder.check_available()
    except encoder_registry.EncoderUnavailable as exc:
        raise Invalid(str(exc)) from None
    return encoder.name


def get_brain(s: Session, name: str) -> Brain:
    brain = s.scalar(select(Brain).where(Brain.name == name))
    if brain is None:
        raise NotFound(f"brain {name!r} not found")
    return brain


def brain_out(s: Session, brain: Brain) -> schemas.BrainOut:
    pending = samplelog.pending(s, brain.id, brain.learned_position)
    return schemas.BrainOut(
        name=brain.name,
        input=schemas.InputOut(kind=brain.input_kind, shape=brain.input_shape),
        strategy=brain.strategy, encoder=brain.encoder, params=brain.params,
        sleep_policy=schemas.SleepPolicy(**brain.sleep_policy), replay=schemas.ReplaySpec(**brain.replay),
        seed=brain.seed, max_labels=brain.max_labels, labels=brain.labels, current_version=brain.current_version,
        samples_learned=brain.samples_learned, samples_pending=int(pending or 0), created_at=brain.created_at,
    )


def delete_brain(rt: Runtime, *, name: str) -> None:
    with rt.db.session() as s:
        brain = get_brain(s, name)
        brain_id = brain.id
        for table in (Sample, Evaluation, Job, Version, Task):
            s.execute(delete(table).where(table.brain_id == brain_id))
        s.delete(brain)
        s.flush()  # the brain's row first: a publish racing this one commits before, or not at all
        rt.versions.remove_brain(brain_id, session=s)  # with the commit
    rt.drop_replay(brain_id)
    rt.training.forget(brain_id)
    rt.locks.forget(brain_id)


# -- labels ---------------------------------------------------------------------------------------
def label_key(label: str | int) -> str:
    return json.dumps(label)  # "3" and 3 stay distinct


def label_index(labels: list[str | int]) -> dict[str, int]:
    """Class index of each known label, by :func:`label_key`."""
    return {label_key(v): i for i, v in enumerate(labels)}


def label_indices(brain: Brain, labels: list[str | int], *, limit: int) -> list[int]:
    """Map client labels to class indices; unseen labels get new ones (at most ``limit`` in all)."""
    index = label_index(brain.labels)
    known = list(brain.labels)
    out: list[int] = []
    for label in labels:
        key = label_key(label)
        if key not in index:
            if len(known) >= limit:
                raise Invalid(f"label {label!r} would be label number {len(known) + 1}; this brain holds at most {limit}")
            index[key] = len(known)
            known.append(label)
        out.append(index[key])
    if len(known) != len(brain.labels):
        brain.labels = known
    return out


# -- ingest ---------------------------------------------------------------------------------------
def ingest(rt: Runtime, *, name: str, body: schemas.SamplesIn) -> tuple[int, int, int]:
    """Append a batch to the durable sample log. Returns (brain id, accepted, duplicates)."""
    if len(body.samples) > rt.settings.max_batch:
        raise Invalid(f"{len(body.samples)} samples in one batch; the limit is {rt.settings.max_batch}")
    with rt.db.session(read_only=True) as s:  # decode and encode (a pretrained model: slow) first
        brain = get_brain(s, name)
        brain_id, kind, shape, encoder = brain.id, brain.input_kind, list(brain.input_shape), brain.encoder
    # the log stores the encoder's output: wake, sleep and replay never run the encoder again
    x = decode(body.samples, kind, shape, field="samples", encoder=encoder, max_pixels=rt.settings.max_decoded_pixels)
    with rt.db.session() as s:
        accepted, duplicates = append_samples(
            s, rt.settings, brain_id=brain_id, name=name, task=body.task, x=x,
            labels=[smp.label for smp in body.samples], keys=[smp.id for smp in body.samples])
        return brain_id, accepted, duplicates


def append_samples(s: Session, settings: Settings, *, brain_id: int, name: str, task: str, x: np.ndarray,
                   labels: list[str | int], keys: list[str | None], locked: Brain | None = None) -> tuple[int, int]:
    """Append decoded samples (rows of ``x``: the encoder's output) of ``task`` to the log in the
    writing session ``s``; samples whose key the log holds are skipped. (accepted, duplicates).
    ``locked``: the brain's row, when the caller locked it already in ``s``."""
    # The brain's row is locked (SQLite: the whole store) before its labels and tasks are read, so
    # concurrent batches never compute new indices from the same stale list.
    brain = locked or s.get(Brain, brain_id, with_for_update=True)
    if brain is None or brain.name != name:  # deleted (and maybe re-created) meanwhile
        raise NotFound(f"brain {name!r} not found")
    keep = _new_samples(s, brain, keys)
    if not keep:
        return 0, len(keys)
    indices = label_indices(brain, [labels[i] for i in keep], limit=brain.max_labels)
    row = _task(s, brain, task, settings=settings)
    row.labels = sorted(set(row.labels) | {int(v) for v in indices})
    row.samples += len(keep)
    samplelog.append(s, [
        {"brain_id": brain.id, "task_id": row.id, "sample_key": keys[i], "label": int(label),
         "x": x[i].astype("<f4").tobytes()}
        for i, label in zip(keep, indices)
    ])
    return len(keep), len(keys) - len(keep)


def _new_samples(s: Session, brain: Brain, keys: list[str | None]) -> list[int]:
    """Indices of the samples to keep: those without a key, or whose key is new to the brain."""
    seen = samplelog.known_keys(s, brain.id, (k for k in keys if k is not None))
    keep = []
    for i, key in enumerate(keys):
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        keep.append(i)
    return keep


def _task(s: Session, brain: Brain, name: str, *, settings: Settings) -> Task:
    task = s.scalar(select(Task).where(Task.brain_id == brain.id, Task.name == name))
    if task is None:
        ordinal = s.scalar(select(func.count()).select_from(Task).where(Task.brain_id == brain.id)) or 0
        if ordinal >= settings.max_tasks:
            raise Invalid(f"task {name!r} would be task number {ordinal + 1}; a brain holds at most "
                          f"{settings.max_tasks} (BRAIN_MAX_TASKS)")
        budgets.check_model(settings, brain, tasks=ordinal + 1)  # what a task adds (MyGO, GEM) must fit
        task = Task(brain_id=brain.id, name=name, ordinal=int(ordinal), labels=[], samples=0)
        s.add(task)
        s.flush()
    return task


def task_out(brain: Brain, task: Task) -> schemas.TaskOut:
    return schemas.TaskOut(
        name=task.name, ordinal=task.ordinal, labels=[brain.labels[i] for i in task.labels],
        samples=task.samples, created_at=task.created_at,
    )


# -- evaluations and metrics ----------------------------------------------------------------------
def record_evaluation(
    rt: Runtime, *, brain_id: int, version: int, task: str, mode: str, accuracy: float, samples: int
) -> None:
    """Record the accuracy of ``version`` (the one that answered) on held-out samples of ``task``."""
    with rt.db.session() as s:
        tasks_seen = s.scalar(select(Version.tasks_seen).where(
            Version.brain_id == brain_id, Version.number == version
        ))
        s.add(Evaluation(
            brain_id=brain_id, version=version, task=task, mode=mode,
            accuracy=accuracy, samples=samples, tasks_seen=int(tasks_seen or 0),
        ))


def metrics(s: Session, brain: Brain, *, mode: str) -> schemas.MetricsOut:
    evals = s.scalars(
        select(Evaluation).where(Evaluation.brain_id == brain.id, Evaluation.mode == mode)
        .order_by(Evaluation.version, Evaluation.id)
    ).all()
    tasks = s.scalars(select(Task).where(Task.brain_id == brain.id).order_by(Task.ordinal)).all()
    names = [t.name for t in tasks]
    names += sorted({e.task for e in evals} - set(names))  # evaluated before any sample arrived
    ordinal = {t.name: t.ordinal for t in tasks}
    versions = sorted({e.version for e in evals})
    row_of = {v: i for i, v in enumerate(versions)}
    col_of = {n: j for j, n in enumerate(names)}
    matrix: list[list[float | None]] = [[None] * len(names) for _ in versions]
    seen_at = [0] * len(versions)
    for e in evals:  # later evaluations of the same cell win
        matrix[row_of[e.version]][col_of[e.task]] = e.accuracy
        seen_at[row_of[e.version]] = e.tasks_seen
    learned_at: list[int | None] = []
    for n in names:
        rows = [i for i, k in enumerate(seen_at) if n in ordinal and k == ordinal[n] + 1]
        learned_at.append(rows[-1] if rows else None)
    chance = [
        (1.0 / len(t.labels) if mode == "task" and t.labels else 0.0) for t in tasks
    ] + [0.0] * (len(names) - len(tasks))
    summary = cl_metrics(matrix, learned_at, chance) if versions else {}
    history = [
        schemas.HistoryRow(
            version=v, tasks_seen=seen_at[i],
            accuracy={names[j]: a for j, a in enumerate(matrix[i]) if a is not None},
        )
        for i, v in enumerate(versions)
    ]
    return schemas.MetricsOut(
        mode=mode, tasks=names, versions=versions, accuracy_matrix=matrix,
        average_accuracy=summary.get("average_accuracy"),
        backward_transfer=summary.get("backward_transfer"),
        forward_transfer=summary.get("forward_transfer"),
        forgetting=summary.get("forgetting"),
        history=history,
    )
