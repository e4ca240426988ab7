"""Drift detection for one brain's stream of served predictions: pure logic (no FastAPI, no database),
so that it runs off the predict path, in a background thread or a worker.

Two streams, two monitors (their defaults measured by ``python -m bench.drift``, docs/bench/drift.md):

- ``kind="error"``: the prequential error, 1 when a served prediction was wrong, 0 when right, known
  once feedback brings the label. river's ADWIN.
- ``kind="confidence"``: the top probability of each served prediction, for when labels do not come.
  river's ADWIN as well (it beat PageHinkley and KSWIN on the measured streams).

A monitor's ``update(value)`` answers a ``DriftEvent`` (JSON-able) on the sample where its detector
fires, else None. river's detectors reset on the sample after they fire, so a monitor's detector only
ever holds the samples since its last event. ``state()`` is plain JSON: the settings, the counters
and those samples (at most ``keep`` of them); ``DriftMonitor.restore(state)`` builds a fresh detector
and feeds it the kept samples again, which rebuilds the same detector exactly when no more than
``keep`` samples came since the last event (river's detectors are deterministic; KSWIN is seeded).
river's own serialisation is pickle (and ADWIN's Rust core has only a private byte layout), which
nothing the store wrote may go through. Past ``keep``, the restored detector knows only the last
``keep`` samples: its reference window is shorter, so it needs a larger change to fire until it has
grown again (a warm-up, measured in docs/bench/drift.md).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from river import drift as river_drift

Kind = Literal["error", "confidence", "input"]
STATE_VERSION = 1

# Each detector's constructor arguments that a monitor accepts (river's names).
DETECTORS: dict[str, tuple[type, tuple[str, ...]]] = {
    "adwin": (river_drift.ADWIN, ("delta", "clock", "max_buckets", "min_window_length", "grace_period")),
    "page_hinkley": (river_drift.PageHinkley, ("min_instances", "delta", "threshold", "alpha", "mode")),
    "kswin": (river_drift.KSWIN, ("alpha", "window_size", "stat_size", "seed")),
}

# Chosen on the measurements of docs/bench/drift.md (50 seeds per stream):
# error: delta=0.002 (river's default) gives ~no false alarm on 10,000 drift-free samples at error
# rates 0.1-0.3 and finds a 0.1 -> 0.4 jump in ~100 samples; clock=1 checks every sample (a tenth of
# the delay of the default clock=32 at a cost of microseconds per sample).
# confidence: see docs/bench/drift.md for the comparison that chose it.
DEFAULTS: dict[str, dict[str, Any]] = {
    "error": {"detector": "adwin", "delta": 0.002, "clock": 1, "grace_period": 30},
    "confidence": {"detector": "adwin", "delta": 0.002, "clock": 1, "grace_period": 30},
    "input": {"detector": "adwin", "delta": 0.002, "clock": 1, "grace_period": 30},
}
DEFAULT_KEEP = 2000


@dataclass(frozen=True)
class DriftEvent:
    """A detector fired. ``index``: the 0-based position, in everything this monitor was fed (across
    restores), of the sample on which it fired. ``change_at``, ``before``, ``after``: where the change
    most likely began and the stream's mean before and after it, estimated from the samples since the
    last event (the last ``keep``): the split that maximises the two-sample mean-shift statistic
    ``k (n - k) / n * (mean_left - mean_right) ** 2`` (None with fewer than 2 samples)."""

    detector: str
    kind: str
    index: int
    change_at: int | None
    before: float | None
    after: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def split(values: list[float]) -> tuple[int, float, float] | None:
    """``(k, mean of values[:k], mean of values[k:])`` for the k that best splits ``values`` in two
    by mean (the least-squares single change point); None with fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    csum = np.cumsum(np.asarray(values, dtype=np.float64))
    k = np.arange(1, n)
    left, right = csum[:-1] / k, (csum[-1] - csum[:-1]) / (n - k)
    best = int(np.argmax(k * (n - k) / n * (left - right) ** 2))
    return best + 1, float(left[best]), float(right[best])


class DriftMonitor:
    """One stream's drift detector. ``params``: ``detector`` ("adwin", "page_hinkley", "kswin") and
    that detector's river arguments; what is left out comes from ``DEFAULTS[kind]`` (for another
    detector than the kind's default, from river's defaults). ``keep``: how many samples since the last
    event the monitor holds (for ``state()`` and an event's estimates)."""

    def __init__(self, kind: Kind = "error", *, keep: int = DEFAULT_KEEP, **params: Any) -> None:
        if kind not in DEFAULTS:
            raise ValueError(f"kind must be one of {sorted(DEFAULTS)}, not {kind!r}")
        if not isinstance(keep, int) or keep < 0:
            raise ValueError("keep must be an integer >= 0")
        defaults = dict(DEFAULTS[kind])
        detector = params.pop("detector", defaults["detector"])
        if detector not in DETECTORS:
            raise ValueError(f"detector must be one of {sorted(DETECTORS)}, not {detector!r}")
        cls, allowed = DETECTORS[detector]
        unknown = set(params) - set(allowed)
        if unknown:
            raise ValueError(f"{detector} takes {list(allowed)}, not {sorted(unknown)}")
        settings = {k: v for k, v in defaults.items() if k in allowed} if detector == defaults["detector"] else {}
        if detector == "kswin":
            settings["seed"] = 0  # a detector rebuilt by replay must draw the same samples
        settings.update(params)
        self.kind, self.detector, self.params, self.keep = kind, detector, settings, keep
        self._detector = cls(**settings)
        self.n = 0  # samples fed so far
        self.events = 0
        self._since: deque[float] = deque(maxlen=keep)  # the samples since the last event (the last keep)

    def _check(self, value: float | int | bool) -> float:
        x = float(value)
        if self.kind == "error" and x not in (0.0, 1.0):
            raise ValueError(f"an error is 0 or 1, not {value!r}")
        if not (math.isfinite(x) and 0.0 <= x <= 1.0):
            raise ValueError(f"a {self.kind} value is a number in [0, 1], not {value!r}")
        return x

    def _feed(self, x: float) -> bool:
        """Feed the detector; True when it fired on ``x``."""
        self._detector.update(x)
        if self._detector.drift_detected:
            return True
        self._since.append(x)
        return False

    def update(self, value: float | int | bool) -> DriftEvent | None:
        """Feed one value (kind "error": 0 or 1; the others: a number in [0, 1]); the event when the
        detector fires on it. ValueError for a value outside the kind's range."""
        x = self._check(value)
        index = self.n
        self.n += 1
        if not self._feed(x):
            return None
        self._since.append(x)
        window = list(self._since)
        self._since.clear()
        self.events += 1
        found = split(window)
        if found is None:
            return DriftEvent(self.detector, self.kind, index, None, None, None)
        k, before, after = found
        return DriftEvent(self.detector, self.kind, index, index + 1 - len(window) + k, round(before, 6), round(after, 6))

    # -- persistence: JSON only ----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild this monitor, as JSON-able values (no pickle)."""
        since = [int(v) for v in self._since] if self.kind == "error" else list(self._since)
        return {"version": STATE_VERSION, "kind": self.kind, "detector": self.detector, "params": dict(self.params),
                "keep": self.keep, "n": self.n, "events": self.events, "since": since}

    @classmethod
    def restore(cls, state: dict[str, Any]) -> DriftMonitor:
        """A monitor rebuilt from ``state()``'s output: a fresh detector fed the kept samples. An event
        it fires while being fed them (possible only where fewer samples than came since the last
        event were kept) is not reported, and the samples before it are dropped. ValueError when the
        state is not one this version writes."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a drift monitor state of version {STATE_VERSION}")
        try:
            monitor = cls(state["kind"], keep=state["keep"], detector=state["detector"], **state["params"])
            since = [monitor._check(v) for v in state["since"]]
            n, events = state["n"], state["events"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed drift monitor state: {exc!r}") from exc
        if not (isinstance(n, int) and isinstance(events, int) and 0 <= events and len(since) <= min(n, monitor.keep)):
            raise ValueError("inconsistent drift monitor state")
        for x in since:
            if monitor._feed(x):
                monitor._since.clear()
        monitor.n, monitor.events = n, events
        return monitor
