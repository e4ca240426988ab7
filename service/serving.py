"""Serving predictions: the one path from a loaded version to an answer, and what keeps it fast.

- :class:`LearnerCache`: an LRU of loaded learners, ``brain id -> (version, learner)``, read-only
  on the CPU; a new version is swapped in without dropping requests (requests in flight keep the
  learner they started with).
- :class:`Serving`: what predictions on one version of one brain need (input spec, labels, tasks,
  the learner), with the one class mask (:meth:`Serving.mask`) and forward pass
  (:meth:`Serving.forward`) that predict and evaluate both use.
- :class:`ServingCache` keeps, per brain name, a :class:`Serving` snapshot. A prediction reads it
  without touching the database; the snapshot is dropped when ``service.changes`` announces that
  the brain changed (in this process at once, from other processes through Redis), and re-read
  after ``ttl`` seconds at the latest, should an announcement be lost.
- :class:`MicroBatcher` runs the forward passes on one inference thread. Requests for the same
  version and task that arrive while it is busy are stacked into one batch, so concurrent
  single-input predictions share a forward pass without waiting for a timer: at low load a request
  goes straight through, at high load batches form by themselves.

Inputs reach a forward pass already decoded and encoded by ``service.inputs.decode`` with the
brain's encoder (``models.encoders``): rows of the learner's ``input_dim``, the same vectors the
sample log stores for learning.
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
from service.budgets import BATCH_ROWS
from service.errors import Conflict, Invalid, NotFound
from service.runtime import Runtime
from service.tables import Brain, Task
from service.versions import VersionStore


class LearnerCache:
    """LRU of ``(brain id, version) -> Learner``, loaded read-only on the CPU."""

    def __init__(self, versions: VersionStore, capacity: int = 16) -> None:
        self.versions = versions
        self.capacity = capacity
        self._items: OrderedDict[int, tuple[int, Learner]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[int, int], threading.Lock] = {}

    def get(self, brain: Brain) -> tuple[int, Learner]:
        version = brain.current_version
        if version is None:
            raise Conflict(f"brain {brain.name!r} has no version yet")
        with self._lock:
            item = self._items.get(brain.id)
            if item is not None and item[0] == version:
                self._items.move_to_end(brain.id)
                return item
            gate = self._loading.setdefault((brain.id, version), threading.Lock())
        with gate:  # one load per version, however many requests ask for it at once
            with self._lock:
                item = self._items.get(brain.id)
                if item is not None and item[0] == version:
                    return item
            try:
                learner = self.versions.load(brain, version)
            except FileNotFoundError:
                raise NotFound(f"version {version} of brain {brain.name!r} is missing") from None
            with self._lock:
                current = self._items.get(brain.id)
                if current is None or current[0] < version or version == brain.current_version:
                    self._items[brain.id] = (version, learner)
                    self._items.move_to_end(brain.id)
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
                self._loading.pop((brain.id, version), None)
            return version, learner

    def forget(self, brain_id: int) -> None:
        with self._lock:
            self._items.pop(brain_id, None)


def class_mask(num_classes: int, allowed: list[int]) -> torch.Tensor:
    """The classes a prediction may answer, as a mask over the learner's outputs."""
    mask = torch.zeros(num_classes, dtype=torch.bool)
    mask[allowed] = True
    return mask


def best(learner: Learner, x: np.ndarray, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Best class index and its probability for each row, among the classes ``mask`` allows."""
    with torch.inference_mode():
        conf, idx = learner.predict(torch.from_numpy(x), mask).max(dim=1)
    return idx.numpy(), conf.numpy()


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
        """422 unless ``x`` is rows of the learner's input size."""
        if x.ndim != 2 or x.shape[1] != self.learner.input_dim:
            raise Invalid(f"inputs encode to {list(x.shape[1:])} values; this brain's learner takes "
                          f"{self.learner.input_dim}")

    def forward(self, x: np.ndarray, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Best class index and its probability per row."""
        return best(self.learner, x, mask)


class ServingCache:
    """``name -> Serving``; invalidated by ``rt.changes`` and by age."""

    def __init__(self, rt: Runtime, learners: LearnerCache, ttl: float) -> None:
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
