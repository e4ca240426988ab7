"""Drift watching: each brain's served predictions feed its drift monitors (``service.drift``) off
the predict path, and an event is recorded, counted and, with ``sleep_policy.on_drift``, answered
by a sleep.

Signals, one monitor each per brain and API process:

- ``error``: 1 when a served prediction was wrong, 0 when right, as feedback labels them;
- ``confidence``: the top probability of each served prediction, when labels do not come;
- ``input``: the mean pixel of each input of an image brain whose inputs reach the learner as
  pixels (in [0, 1]; the confidence misses inputs the brain is confidently wrong on, such as
  inverted images, and the input mean sees them: docs/bench/drift.md).

Nothing of this runs on the predict path: the route keeps what it served for feedback
(``service.feedback.ServedPredictions``), whose ``recent`` queue a thread of the watch drains every
``BRAIN_DRIFT_CHECK_SECONDS`` into the monitors, with the outcomes that feedback reported. An
event is a ``drift_events`` row; after one, that monitor starts afresh. Monitors live in the API
process: a restarted process starts them afresh (a change within a few hundred samples of the
restart may be missed), and behind several API processes each watches its own share of the traffic
while the events of all of them are recorded in one table.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from sqlalchemy import select

from service import drift
from service.feedback import ServedPredictions
from service.runtime import Runtime
from service.tables import Brain, DriftRecord, Job

log = logging.getLogger(__name__)

SIGNALS = ("error", "confidence", "input")


class DriftWatch:
    def __init__(self, rt: Runtime, served: ServedPredictions, *, interval: float) -> None:
        self.rt = rt
        self.source = served
        self.interval = interval
        self._queue: deque[tuple[int, str, list[float], int]] = deque()  # (brain, signal, values, version)
        self._monitors: dict[tuple[int, str], drift.DriftMonitor] = {}
        self.fed: dict[tuple[int, str], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drift-watch", daemon=True)
        self._thread.start()

    def labelled(self, brain_id: int, correct: list[bool], version: int) -> None:
        """Outcomes of served predictions, from feedback."""
        self._queue.append((brain_id, "error", [0.0 if ok else 1.0 for ok in correct], version))

    # -- the thread ----------------------------------------------------------------------------------
    def drain(self) -> list[DriftRecord]:
        """Feed what was queued to the monitors; the events recorded."""
        events: list[tuple[int, str, int, drift.DriftEvent]] = []
        while self.source.recent:
            served = self.source.recent.popleft()
            self._queue.append((served.brain_id, "confidence", served.confidence, served.version))
            if served.pixels:
                self._queue.append((served.brain_id, "input", served.x, served.version))
        while self._queue:
            brain_id, signal, values, version = self._queue.popleft()
            if signal == "forget":
                for key in [k for k in self._monitors if k[0] == brain_id]:
                    del self._monitors[key]
                    self.fed.pop(key, None)
                continue
            if signal == "input":
                values = [min(1.0, max(0.0, float(v))) for v in values.reshape(len(values), -1).mean(axis=1)]
            monitor = self._monitors.get((brain_id, signal))
            if monitor is None:
                monitor = self._monitors[(brain_id, signal)] = drift.DriftMonitor(signal)
            for value in values:
                event = monitor.update(value)
                if event is not None:
                    events.append((brain_id, signal, version, event))
                    monitor = self._monitors[(brain_id, signal)] = drift.DriftMonitor(signal)
            self.fed[(brain_id, signal)] = self.fed.get((brain_id, signal), 0) + len(values)
        return [self._record(*e) for e in events]

    def _record(self, brain_id: int, signal: str, version: int, event: drift.DriftEvent) -> DriftRecord:
        with self.rt.db.session() as s:
            brain = s.get(Brain, brain_id)
            on_drift = brain is not None and bool((brain.sleep_policy or {}).get("on_drift"))
            row = DriftRecord(brain_id=brain_id, signal=signal, detector=event.detector, version=version,
                              statistic={k: v for k, v in event.to_json().items() if k not in ("detector", "kind")})
            if brain is not None:
                s.add(row)
        log.warning("drift on brain %s (%s, %s): %s", brain_id, signal, event.detector, row.statistic)
        if on_drift:
            row.slept = self._sleep(brain_id)
            with self.rt.db.session() as s:
                s.get(DriftRecord, row.id).slept = row.slept
        return row

    def _sleep(self, brain_id: int) -> str | None:
        """A sleep for the brain, unless one is running (a queued one is joined)."""
        with self.rt.db.session(read_only=True) as s:
            if s.scalar(select(Job.id).where(Job.brain_id == brain_id, Job.kind == "sleep",
                                             Job.state == "running").limit(1)):
                return None
        return self.rt.jobs.submit("sleep", brain_id, {"reason": "drift"}, join_queued=True,
                                   resend_after=self.rt.settings.lock_timeout_seconds)

    def forget(self, brain_id: int) -> None:
        """A deleted brain's monitors go (on the watch's thread, which alone touches them)."""
        self._queue.append((brain_id, "forget", [], 0))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.drain()
            except Exception:  # noqa: BLE001 - a watch that failed once must go on watching
                log.exception("drift watch failed")
