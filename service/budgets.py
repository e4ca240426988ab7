"""Resource budgets: what a brain's params or one request may make the service allocate, checked
before anything is allocated, each refused with a 422 that names its setting (issue 14).

- ``BRAIN_MAX_MODEL_BYTES``: a brain at its largest, i.e. its learner sized on the meta device
  (``models.sizing``: after its tasks, memories full, with Adam's moments and the temporaries of the
  largest batch the service hands it) plus its replay buffer. Checked when a brain is created, when
  its params change (PATCH, with the tasks it has), when a sample batch brings a new task (with it:
  MyGO adds a generator per task, GEM a memory and a reference gradient), and with meta-training's
  own needs when one is requested. PNN is sized at ``max_columns`` whatever its tasks.
- ``BRAIN_MAX_SLEEP_BUDGET``: the samples one sleep may rehearse (a sleep policy's ``budget``).
- ``BRAIN_MAX_DECODED_PIXELS``: the images of a request (``service.inputs.check_images``).
"""

from __future__ import annotations

import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.learner import Learner
from models.registry import ParamsError
from models.sizing import learner_bytes, sample_bytes
from service import schemas
from service.errors import Invalid
from service.settings import Settings
from service.tables import Brain, Task
from service.versions import input_dim, new_learner

#: Rows of one batch of forward passes at serving (``service.serving.MicroBatcher``), sized here
#: because a learner's working memory is checked for the largest batch it is handed.
BATCH_ROWS = 4096


def check_model(settings: Settings, brain: Brain, *, params: dict | None = None, tasks: int = 1) -> None:
    """``brain`` with ``params`` (default: its own) fits ``BRAIN_MAX_MODEL_BYTES`` after ``tasks``
    tasks; a 422 naming the bytes otherwise, or for params that do not fit its input."""
    learner = _on_meta(brain, params)
    _within(settings, brain, learner_bytes(learner, tasks=tasks, batch=_largest_batch(settings, brain)),
            f"with {tasks} task{'s' if tasks != 1 else ''}")


def check_meta_train(settings: Settings, brain: Brain, *, inner_steps: int, classes: int,
                     first_order: bool | None) -> None:
    """The brain and what meta-training it over ``classes`` background classes adds fit."""
    learner = _on_meta(brain, None)
    need = learner_bytes(learner, tasks=1, batch=_largest_batch(settings, brain))
    need += learner.meta_train_bytes(inner_steps=inner_steps, classes=classes, first_order=first_order)
    _within(settings, brain, need, f"meta-training {classes} classes with {inner_steps} inner steps")


def check_sleep_policy(settings: Settings, policy: schemas.SleepPolicy) -> None:
    if policy.budget is not None and policy.budget > settings.max_sleep_budget:
        raise Invalid(f"sleep_policy.budget: {policy.budget} samples; the limit is {settings.max_sleep_budget} "
                      "(BRAIN_MAX_SLEEP_BUDGET)")


def tasks_of(s: Session, brain: Brain) -> int:
    """The tasks ``brain`` has, at least one (what a check after its creation sizes)."""
    return max(1, s.scalar(select(func.count()).select_from(Task).where(Task.brain_id == brain.id)) or 0)


def _on_meta(brain: Brain, params: dict | None) -> Learner:
    try:
        with torch.device("meta"):  # shapes without data: nothing is allocated
            return new_learner(brain, params)
    except ParamsError as exc:  # params valid alone may still not fit this input
        raise Invalid(f"params: {exc}") from None


def _largest_batch(settings: Settings, brain: Brain) -> int:
    """The most samples the service hands a learner at once: an ingest or evaluate batch, a batch of
    predictions, or a sleep's whole replay."""
    return max(settings.max_batch, settings.max_predict_inputs, BATCH_ROWS, int(brain.replay["size"]))


def _within(settings: Settings, brain: Brain, learner: int, what: str) -> None:
    replay = int(brain.replay["size"]) * sample_bytes(input_dim(brain.input_shape, brain.encoder))
    need, limit = learner + replay, settings.max_model_bytes
    if need > limit:
        raise Invalid(f"params: brain {brain.name!r} would need {_size(need)} ({brain.strategy} {what}: "
                      f"{_size(learner)}, replay buffer of {brain.replay['size']}: {_size(replay)}); "
                      f"the limit is {limit} bytes (BRAIN_MAX_MODEL_BYTES)")


def _size(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"
