"""Meta-training sets: a request checked, its background set stored for the job, and where.

The background set never enters the sample log, the replay buffer or the brain's labels: it is
stored, labels remapped to ``0..C-1``, as the blob ``<brain id>/meta/<uuid>.safetensors``
(``service.blobs``: tensors ``x`` float32 and ``y`` int64), where every worker reads it; the job's
payload names it and the job (``service.orchestration.meta_train``) deletes it when it ends.
"""

from __future__ import annotations

import uuid

import numpy as np
import torch

from models.registry import STRATEGIES
from service import budgets, schemas
from service.brains import get_brain, label_key
from service.errors import Invalid
from service.inputs import decode
from service.runtime import Runtime


def meta_set_key(brain_id: int, name: str) -> str:
    """The blob of the background set ``name`` (a payload's ``file``) of brain ``brain_id``."""
    return f"{brain_id}/meta/{name}"


def submit(rt: Runtime, *, name: str, body: schemas.MetaTrainIn) -> str:
    """Check the request, store the background set and submit a ``meta_train`` job; its id."""
    from safetensors.torch import save

    with rt.db.session() as s:
        brain = get_brain(s, name)
        s.expunge(brain)
    cls = STRATEGIES.get(brain.strategy)
    if cls is None or not cls.meta_trainable:
        able = ", ".join(sorted(n for n, c in STRATEGIES.items() if c.meta_trainable)) or "none"
        raise Invalid(f"strategy {brain.strategy!r} cannot be meta-trained; strategies that can: {able}")
    limit = rt.settings.max_meta_samples
    if len(body.samples) > limit:
        raise Invalid(f"{len(body.samples)} background samples; the limit is {limit} (BRAIN_MAX_META_SAMPLES)")
    index: dict[str, int] = {}
    y = [index.setdefault(label_key(smp.label), len(index)) for smp in body.samples]  # "3" != 3
    if len(index) < 2:
        raise Invalid(f"meta-training needs at least two distinct labels in the background set, got {len(index)}")
    budgets.check_meta_train(rt.settings, brain, inner_steps=body.inner_steps, classes=len(index),
                             first_order=body.first_order)
    x = decode(body.samples, brain.input_kind, brain.input_shape, field="samples", encoder=brain.encoder,
               max_pixels=rt.settings.max_decoded_pixels)
    name = f"{uuid.uuid4().hex}.safetensors"
    key = meta_set_key(brain.id, name)
    rt.blobs.put(key, save({"x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                            "y": torch.tensor(y, dtype=torch.int64)}))
    payload = {"file": name, "steps": body.steps, "inner_steps": body.inner_steps,
               "first_order": body.first_order, "samples": len(y), "classes": len(index)}
    try:
        return rt.jobs.submit("meta_train", brain.id, payload)
    except BaseException:
        rt.blobs.delete(key)
        raise
