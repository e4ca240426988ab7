"""Serving predictions: a cache of loaded brains that swaps in a new version without dropping
requests (requests in flight keep the learner they started with), and the predict/evaluate logic.

Inputs reach ``predict`` already decoded and encoded by ``service.inputs.decode`` with the brain's
encoder (``models.encoders``): rows of the learner's ``input_dim``, the same vectors the sample log
stores for learning."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch

from models.learner import Learner
from service.errors import Conflict, Invalid, NotFound
from service.tables import Brain
from service.versions import VersionStore

BATCH_ROWS = 4096  # rows of one batch of forward passes (``service.serving.MicroBatcher``)


class InferenceCache:
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
    mask = torch.zeros(num_classes, dtype=torch.bool)
    mask[allowed] = True
    return mask


def check_width(learner: Learner, x: np.ndarray) -> None:
    """422 unless ``x`` is rows of the learner's input size."""
    if x.ndim != 2 or x.shape[1] != learner.input_dim:
        raise Invalid(f"inputs encode to {list(x.shape[1:])} values; this brain's learner takes {learner.input_dim}")


def best(learner: Learner, x: np.ndarray, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Best class index and its probability for each row, among the classes ``mask`` allows."""
    with torch.inference_mode():
        conf, idx = learner.predict(torch.from_numpy(x), mask).max(dim=1)
    return idx.numpy(), conf.numpy()


def predict(learner: Learner, x: np.ndarray, allowed: list[int]) -> tuple[list[int], list[float]]:
    """Best class index and its probability for each row, among the ``allowed`` classes."""
    if not allowed:
        raise Conflict("the brain has not learned any label yet")
    check_width(learner, x)
    idx, conf = best(learner, x, class_mask(learner.num_classes, allowed))
    return idx.tolist(), conf.tolist()
