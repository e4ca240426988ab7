"""The predict fast path: what a prediction needs, kept in memory, and one forward pass for many.

- :class:`ServingCache` keeps, per brain name, a :class:`Serving` snapshot: the brain's input
  spec, labels, tasks, current version and loaded learner. A prediction reads it without touching
  the database; the snapshot is dropped when ``service.changes`` announces that the brain changed
  (in this process at once, from other processes through Redis), and re-read after ``ttl`` seconds
  at the latest, should an announcement be lost.
- :class:`MicroBatcher` runs the forward passes on one inference thread. Requests for the same
  version and task that arrive while it is busy are stacked into one batch, so concurrent
  single-input predictions share a forward pass without waiting for a timer: at low load a request
  goes straight through, at high load batches form by themselves.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from sqlalchemy import select

from models import encoders
from models.learner import Learner
from service.brains import get_brain
from service.errors import Conflict, NotFound
from service.inference import BATCH_ROWS, InferenceCache, best, check_width, class_mask
from service.runtime import Runtime
from service.tables import Task


@dataclass
class Serving:
    """What predictions on one version of one brain need, read once."""

    brain_id: int
    name: str
    kind: str
    shape: list[int]
    encoder: str
    labels: list[str | int]
    tasks: dict[str, list[int]]  # task name -> label indices
    version: int
    learner: Learner
    loaded_at: float = field(default_factory=time.monotonic)
    _masks: dict[str | None, torch.Tensor] = field(default_factory=dict)

    @property
    def raw_inputs(self) -> bool:
        """The encoder passes inputs through: decoding is cheap enough for the event loop."""
        return isinstance(encoders.get(self.encoder), encoders.Identity)

    def mask(self, task: str | None) -> torch.Tensor:
        """The classes a prediction may answer: every label, or ``task``'s."""
        mask = self._masks.get(task)
        if mask is None:
            if task is None:
                allowed = list(range(len(self.labels)))
            elif task in self.tasks:
                allowed = self.tasks[task]
            else:
                raise NotFound(f"brain {self.name!r} has no task {task!r}")
            if not allowed:
                raise Conflict("the brain has not learned any label yet")
            mask = self._masks[task] = class_mask(self.learner.num_classes, allowed)
        return mask

    def check_width(self, x: np.ndarray) -> None:
        check_width(self.learner, x)

    def forward(self, x: np.ndarray, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Best class index and its probability per row."""
        return best(self.learner, x, mask)


class ServingCache:
    """``name -> Serving``; invalidated by ``rt.changes`` and by age."""

    def __init__(self, rt: Runtime, learners: InferenceCache, ttl: float) -> None:
        self.rt, self.learners, self.ttl = rt, learners, ttl
        self._by_name: dict[str, Serving] = {}
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every invalidation: a load that raced one is not kept
        rt.changes.listen(self.invalidate)

    def peek(self, name: str) -> Serving | None:
        """The cached snapshot when it is fresh; never blocks on I/O."""
        entry = self._by_name.get(name)
        if entry is None or time.monotonic() - entry.loaded_at > self.ttl:
            return None
        return entry

    def load(self, name: str) -> Serving:
        """Read the brain and its tasks, and the current version's learner (blocking I/O)."""
        with self._lock:
            generation = self._generation
        with self.rt.db.session(read_only=True) as s:
            brain = get_brain(s, name)
            tasks = {t.name: list(t.labels) for t in s.scalars(select(Task).where(Task.brain_id == brain.id))}
            s.expunge(brain)
        version, learner = self.learners.get(brain)
        entry = Serving(
            brain_id=brain.id, name=brain.name, kind=brain.input_kind, shape=list(brain.input_shape),
            encoder=brain.encoder, labels=list(brain.labels), tasks=tasks, version=version, learner=learner,
        )
        with self._lock:
            if generation == self._generation:
                self._by_name[name] = entry
        return entry

    def invalidate(self, brain_id: int | None) -> None:
        """Forget the brain ``brain_id`` (every brain when ``None``)."""
        with self._lock:
            self._generation += 1
            if brain_id is None:
                self._by_name.clear()
            else:
                for name in [n for n, e in self._by_name.items() if e.brain_id == brain_id]:
                    del self._by_name[name]


class MicroBatcher:
    """Forward passes on one thread; requests that arrive while it is busy go in the next batch.

    ``max_rows`` bounds a batch (a single request larger than it still runs whole). A request of at
    most ``inline_rows`` rows that finds nothing else waiting runs on the event loop itself: at
    one client a thread hop costs more than it saves; under load the thread lets the loop parse
    the next requests while torch computes (figures: docs/benchmarks.md, "What the predict path
    does now")."""

    def __init__(self, max_rows: int = BATCH_ROWS, inline_rows: int = 16) -> None:
        self.max_rows, self.inline_rows = max_rows, inline_rows
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._queue: OrderedDict[Hashable, tuple[Serving, torch.Tensor, list]] = OrderedDict()
        self._draining = False

    async def predict(self, entry: Serving, task: str | None, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask = entry.mask(task)
        future = asyncio.get_running_loop().create_future()
        key = (entry.brain_id, entry.version, task)
        self._queue.setdefault(key, (entry, mask, []))[2].append((x, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                key, (entry, mask, items) = self._queue.popitem(last=False)
                batch, rows = [], 0
                while items and (not batch or rows + len(items[0][0]) <= self.max_rows):
                    batch.append(items.pop(0))
                    rows += len(batch[-1][0])
                if items:  # the rest waits for the next round, behind other keys
                    self._queue[key] = (entry, mask, items)
                x = batch[0][0] if len(batch) == 1 else np.concatenate([b[0] for b in batch])
                try:
                    if len(batch) == 1 and not self._queue and len(x) <= self.inline_rows:
                        idx, conf = entry.forward(x, mask)  # alone: a thread hop would only add latency
                    else:
                        idx, conf = await loop.run_in_executor(self._pool, entry.forward, x, mask)
                except Exception as exc:  # noqa: BLE001 - it belongs to the requests of this batch
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for rows_x, future in batch:
                    end = start + len(rows_x)
                    if not future.done():  # the client may have gone
                        future.set_result((idx[start:end], conf[start:end]))
                    start = end
        finally:
            self._draining = False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
