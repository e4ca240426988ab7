"""Feedback on served predictions: the inputs served are kept for a while, and a label that arrives
later turns one into a sample (learned like any other) and into a point of the brain's prequential
accuracy (was the version that answered right?).

- Ids. A predict request gets an id made of the time it was served (milliseconds, hex) and a random
  part; its ``i``-th prediction is ``<request id>-<i>``. The time in the id tells a prediction that
  is no longer kept (410) from one that never was (404) without keeping anything about it.
- :class:`ServedPredictions`: what each request served (the brain, the version that answered, the
  task, the decoded inputs, the predicted class and its probability), kept in the API process for
  ``BRAIN_FEEDBACK_WINDOW_SECONDS`` and at most ``BRAIN_FEEDBACK_MAX_KEPT`` predictions (the oldest
  go first). Keeping a request is a dictionary insert on the predict path; the inputs are the
  decoded array the forward pass read, not a copy. Feedback reaches the API process that served the
  prediction: the embedded default has one; behind several API processes it needs a sticky route
  (a prediction served by another process, or before a restart, is answered 410).
- :func:`record`: feedback in one transaction: the samples appended to the log (the prediction id
  as the sample id, so feedback sent twice is learned once) and one ``feedback`` row each.
- :func:`prequential`: accuracy of the labelled predictions, overall, per version and over time.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import Integer, func, select
from sqlalchemy.orm import Session

from service import brains, schemas
from service.errors import Gone, Invalid, NotFound
from service.settings import Settings
from service.tables import Brain, Feedback

FEEDBACK_TASK = "feedback"  # the task of feedback on a prediction made without one, unless given


@dataclass(frozen=True)
class Served:
    """One predict request's answers, as served."""

    brain_id: int
    version: int
    task: str | None
    at: float  # time.time() when served
    x: np.ndarray  # [n, d] the decoded inputs (the encoder's output), as the forward pass read them
    predicted: list[int]  # class index per input
    confidence: list[float]


def request_id(now: float) -> str:
    return f"{int(now * 1000):011x}{secrets.token_hex(5)}"


def prediction_ids(rid: str, n: int) -> list[str]:
    return [f"{rid}-{i}" for i in range(n)]


def parse_prediction_id(pid: str) -> tuple[str, int, float]:
    """(request id, index, served at) of a prediction id; Invalid when it is not one of ours."""
    rid, _, index = pid.rpartition("-")
    try:
        if len(rid) != 21 or not index.isdigit():
            raise ValueError
        return rid, int(index), int(rid[:11], 16) / 1000
    except ValueError:
        raise Invalid(f"{pid!r} is not a prediction id (each prediction in a predict answer has one)") from None


class ServedPredictions:
    """The requests served in this process, newest last, bounded by age and by predictions kept."""

    def __init__(self, window: float, max_kept: int) -> None:
        self.window, self.max_kept = window, max_kept
        self.started = time.time()
        self._requests: OrderedDict[str, Served] = OrderedDict()
        self._kept = 0  # predictions held
        self._evicted_until = 0.0  # the newest served time evicted for room
        self._lock = threading.Lock()

    def keep(self, rid: str, served: Served) -> None:
        if self.max_kept == 0:
            return
        with self._lock:
            self._requests[rid] = served
            self._kept += len(served.predicted)
            self._evict(served.at)

    def get(self, rid: str, at: float, brain_id: int) -> Served:
        """The request ``rid`` (served at ``at``) of brain ``brain_id``: Gone when it is no longer
        kept, NotFound when this process never served it."""
        now = time.time()
        with self._lock:
            self._evict(now)
            served = self._requests.get(rid)
            evicted_until = self._evicted_until
        if served is not None and served.brain_id == brain_id:
            return served
        if served is None and (at < now - self.window or at <= evicted_until or at < self.started):
            raise Gone(f"prediction served at {_iso(at)} is no longer kept for feedback: the inputs of served "
                       f"predictions are kept {self.window:g} s (BRAIN_FEEDBACK_WINDOW_SECONDS), at most "
                       f"{self.max_kept} of them (BRAIN_FEEDBACK_MAX_KEPT), by the API process that served them")
        raise NotFound("no such prediction of this brain (a prediction id from its predict answer)")

    def _evict(self, now: float) -> None:
        while self._requests:
            rid, oldest = next(iter(self._requests.items()))
            if oldest.at >= now - self.window and self._kept <= self.max_kept:
                return
            del self._requests[rid]
            self._kept -= len(oldest.predicted)
            self._evicted_until = max(self._evicted_until, oldest.at)


def record(s: Session, settings: Settings, served: ServedPredictions, *, name: str,
           body: schemas.FeedbackIn) -> tuple[int, int, int]:
    """Append the labelled inputs to the log and record each prediction's outcome, in one writing
    session. (brain id, accepted, duplicates): feedback already given counts as a duplicate."""
    brain = brains.get_brain(s, name)
    brain_id = brain.id
    parsed = [(item, *parse_prediction_id(item.prediction)) for item in body.feedback]
    found = [(item, served.get(rid, at, brain_id), i) for item, rid, i, at in parsed]
    for item, req, i in found:
        if i >= len(req.predicted):
            raise NotFound(f"no such prediction of this brain: {item.prediction!r}")
    brain = s.get(Brain, brain_id, with_for_update=True)  # labels and tasks below: read under the lock
    if brain is None or brain.name != name:
        raise NotFound(f"brain {name!r} not found")
    done = set(s.scalars(select(Feedback.prediction).where(
        Feedback.brain_id == brain_id, Feedback.prediction.in_([item.prediction for item, _, _ in found]))))
    accepted = duplicates = 0
    by_task: dict[str, list[tuple[schemas.FeedbackItem, Served, int]]] = {}
    for entry in found:
        item, req, _ = entry
        if item.prediction in done:
            duplicates += 1
            continue
        done.add(item.prediction)
        by_task.setdefault(item.task or body.task or req.task or FEEDBACK_TASK, []).append(entry)
    for task, entries in by_task.items():
        x = np.stack([req.x[i] for _, req, i in entries])
        new, dup = brains.append_samples(
            s, settings, brain_id=brain_id, name=name, task=task, x=x, locked=brain,
            labels=[item.label for item, _, _ in entries], keys=[item.prediction for item, _, _ in entries])
        accepted, duplicates = accepted + new, duplicates + dup
        index = brains.label_index(brain.labels)
        for item, req, i in entries:
            s.add(Feedback(brain_id=brain_id, prediction=item.prediction, version=req.version,
                           correct=index[brains.label_key(item.label)] == req.predicted[i],
                           confidence=float(req.confidence[i]),
                           served_at=datetime.fromtimestamp(req.at, timezone.utc)))
    return brain_id, accepted, duplicates


def prequential(s: Session, brain: Brain, *, bucket_seconds: int) -> schemas.PrequentialOut:
    """Accuracy of the served predictions later labelled: overall, per version that answered, and
    per ``bucket_seconds`` of serving time (the newest 100 buckets)."""
    def rows(group):
        return s.execute(select(group, func.count(), func.sum(Feedback.correct.cast(Integer)))
                         .where(Feedback.brain_id == brain.id).group_by(group).order_by(group)).all()

    per_version = [schemas.PrequentialPoint(version=v, labelled=n, accuracy=int(c or 0) / n)
                   for v, n, c in rows(Feedback.version)]
    served = s.execute(select(Feedback.served_at, Feedback.correct).where(Feedback.brain_id == brain.id)
                       .order_by(Feedback.served_at.desc()).limit(100_000)).all()
    buckets: dict[int, list[int]] = {}
    for at, correct in served:
        start = int(at.timestamp()) // bucket_seconds * bucket_seconds
        tally = buckets.setdefault(start, [0, 0])
        tally[0] += 1
        tally[1] += int(correct)
    over_time = [schemas.PrequentialPoint(at=datetime.fromtimestamp(start, timezone.utc), labelled=n,
                                          accuracy=c / n)
                 for start, (n, c) in sorted(buckets.items())[-100:]]
    labelled = sum(p.labelled for p in per_version)
    correct = sum(round(p.accuracy * p.labelled) for p in per_version)
    return schemas.PrequentialOut(labelled=labelled, accuracy=correct / labelled if labelled else None,
                                  per_version=per_version, bucket_seconds=bucket_seconds, over_time=over_time)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")
