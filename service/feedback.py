"""Feedback on served predictions: the inputs served are kept for a while, and a label that arrives
later turns one into a sample (learned like any other) and into a point of the brain's prequential
accuracy (was the version that answered right?).

- Ids. A predict request gets an id made of the time it was served (milliseconds, hex) and a random
  part; its ``i``-th prediction is ``<request id>-<i>``. The time in the id tells a prediction that
  is no longer kept (410) from one that never was (404) without keeping anything about it.
- :class:`ServedPredictions` (:func:`served_predictions` picks it): what each request served (the brain, the version that answered, the
  task, the decoded inputs, the predicted class and its probability), kept in the API process for
  ``BRAIN_FEEDBACK_WINDOW_SECONDS`` and at most ``BRAIN_FEEDBACK_MAX_KEPT`` predictions (the oldest
  go first). Keeping a request is a dictionary insert on the predict path; the inputs are the
  decoded array the forward pass read, not a copy. On the full stack (:class:`SharedServedPredictions`)
  a thread also writes each request to Redis (``pb:served:<request id>``, expiring with the window;
  a JSON header and the inputs' float32 bytes, never pickled) within a fraction of a second, so
  that feedback may reach any API process, before or after a restart. Embedded, a prediction served
  before a restart is answered 410.
- :func:`record`: feedback in one transaction: the samples appended to the log (the prediction id
  as the sample id, so feedback sent twice is learned once) and one ``feedback`` row each.
- :func:`prequential`: accuracy of the labelled predictions, overall, per version and over time.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import Integer, func, select
from sqlalchemy.orm import Session

from service import brains, schemas
from service.errors import Gone, Invalid, NotFound
from service.settings import Settings
from service.tables import Brain, Feedback

log = logging.getLogger(__name__)

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
    pixels: bool = False  # the inputs are an image's pixels in [0, 1] (drift watches their mean)


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
        #: every request served, for one reader (``service.drift_watch``) to take in order; bounded
        #: so that a process without a reader keeps nothing more
        self.recent: deque[Served] = deque(maxlen=100_000)

    def keep(self, rid: str, served: Served) -> None:
        self.recent.append(served)
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

    def close(self) -> None:
        """Nothing to stop here (see :class:`SharedServedPredictions`)."""

    def _evict(self, now: float) -> None:
        while self._requests:
            rid, oldest = next(iter(self._requests.items()))
            if oldest.at >= now - self.window and self._kept <= self.max_kept:
                return
            del self._requests[rid]
            self._kept -= len(oldest.predicted)
            self._evicted_until = max(self._evicted_until, oldest.at)


class SharedServedPredictions(ServedPredictions):
    """Served requests kept here and, through a writer thread, in Redis for every API process."""

    FLUSH_SECONDS = 0.05

    def __init__(self, window: float, max_kept: int, redis) -> None:  # noqa: ANN001 - redis.Redis
        super().__init__(window, max_kept)
        self.redis = redis
        self._pending: list[tuple[str, Served]] = []
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="served-writer", daemon=True)
        self._writer.start()

    def keep(self, rid: str, served: Served) -> None:
        super().keep(rid, served)
        if self.max_kept:
            self._pending.append((rid, served))  # list.append is atomic; the writer swaps the list

    def get(self, rid: str, at: float, brain_id: int) -> Served:
        try:
            return super().get(rid, at, brain_id)
        except (Gone, NotFound) as missing:
            if at < time.time() - self.window:
                raise
            try:
                served = decode_served(self.redis.get(f"pb:served:{rid}"))
            except ValueError:
                served = None
            if served is None or served.brain_id != brain_id:
                raise NotFound("no such prediction of this brain (a prediction id from its predict answer)") from missing
            return served

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        pipe = self.redis.pipeline(transaction=False)
        for rid, served in pending:
            ttl = max(1, int(served.at + self.window - time.time()) + 1)
            pipe.set(f"pb:served:{rid}", encode_served(served), ex=ttl)
        pipe.execute()

    def close(self) -> None:
        self._stop.set()
        self._writer.join(timeout=5)

    def _write_loop(self) -> None:
        while not self._stop.wait(self.FLUSH_SECONDS):
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - Redis away: those requests stay local only
                log.warning("served predictions not written to Redis: %s", exc)


def encode_served(served: Served) -> bytes:
    """A served request as bytes: a JSON header's length (4 bytes), the header, the inputs as
    little-endian float32."""
    x = np.ascontiguousarray(served.x, dtype="<f4")
    header = json.dumps({"brain_id": served.brain_id, "version": served.version, "task": served.task,
                         "at": served.at, "predicted": served.predicted, "confidence": served.confidence,
                         "shape": list(x.shape)}).encode()
    return len(header).to_bytes(4, "big") + header + x.tobytes()


def decode_served(data: bytes | None) -> Served | None:
    """The request :func:`encode_served` wrote (ValueError when the bytes are not one)."""
    if data is None:
        return None
    size = int.from_bytes(data[:4], "big")
    try:
        head = json.loads(data[4:4 + size])
        shape = [int(n) for n in head["shape"]]
        x = np.frombuffer(data[4 + size:], dtype="<f4").reshape(shape)
        return Served(brain_id=int(head["brain_id"]), version=int(head["version"]), task=head["task"],
                      at=float(head["at"]), x=x, predicted=[int(i) for i in head["predicted"]],
                      confidence=[float(c) for c in head["confidence"]])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a served request: {exc}") from None


def served_predictions(settings: Settings, redis) -> ServedPredictions:  # noqa: ANN001 - redis.Redis | None
    """Where this API process keeps served requests: in Redis too when the deployment has it."""
    if redis is None:
        return ServedPredictions(settings.feedback_window_seconds, settings.feedback_max_kept)
    return SharedServedPredictions(settings.feedback_window_seconds, settings.feedback_max_kept, redis)


@dataclass
class Recorded:
    brain_id: int
    accepted: int  # samples appended to the log
    duplicates: int  # feedback already given (or samples already in the log)
    outcomes: list[tuple[int, bool]]  # (the version that answered, was it right) per new feedback


def record(s: Session, settings: Settings, served: ServedPredictions, *, name: str,
           body: schemas.FeedbackIn) -> Recorded:
    """Append the labelled inputs to the log and record each prediction's outcome, in one writing
    session; feedback already given counts as a duplicate."""
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
    outcomes: list[tuple[int, bool]] = []
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
            correct = index[brains.label_key(item.label)] == req.predicted[i]
            outcomes.append((req.version, correct))
            s.add(Feedback(brain_id=brain_id, prediction=item.prediction, version=req.version, correct=correct,
                           confidence=float(req.confidence[i]), served_at=datetime.fromtimestamp(req.at, timezone.utc)))
    return Recorded(brain_id, accepted, duplicates, outcomes)


def prequential(s: Session, brain: Brain, *, bucket_seconds: int) -> schemas.PrequentialOut:
    """Accuracy of the served predictions later labelled: overall, per version that answered, and
    per ``bucket_seconds`` of serving time (the newest 100 buckets)."""
    counts = s.execute(select(Feedback.version, func.count(), func.sum(Feedback.correct.cast(Integer)))
                       .where(Feedback.brain_id == brain.id).group_by(Feedback.version)
                       .order_by(Feedback.version)).all()
    per_version = [schemas.PrequentialPoint(version=v, labelled=n, accuracy=int(c or 0) / n) for v, n, c in counts]
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
    labelled = sum(n for _, n, _ in counts)
    correct = sum(int(c or 0) for _, _, c in counts)
    return schemas.PrequentialOut(labelled=labelled, accuracy=correct / labelled if labelled else None,
                                  per_version=per_version, bucket_seconds=bucket_seconds, over_time=over_time)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")
