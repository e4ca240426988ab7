"""Drift detection for one brain's streams of served predictions: pure logic (no FastAPI, no database),
so that it runs off the predict path, in a background thread or a worker.

Three kinds of stream, one monitor each, all river's ADWIN with measured deltas (``DEFAULTS``;
``python -m bench.drift``, docs/bench/drift.md):

- ``kind="error"``: the prequential error, 1 when a served prediction was wrong, 0 when right, known
  once feedback brings its label.
- ``kind="confidence"``: the top probability of each served prediction, for when labels do not come.
  It sees new classes and dimmed inputs, but not inputs the model is confidently wrong on (inverted
  images: wrong nearly always, at the confidence of right answers; docs/bench/drift.md).
- ``kind="input"``: a statistic of each input scaled into [0, 1] (the bench: an image's mean pixel),
  which sees what the confidence misses (brightened, inverted) and new classes only slowly. Without
  labels, run both.

``update(value)`` answers a ``DriftEvent`` (JSON-able) on the sample where the detector fires, else
None. river's detectors reset on the sample after they fire, so a detector only ever holds the samples
since its last event. ``state()`` is plain JSON: the settings, the counters and those samples (the
last ``keep``); ``DriftMonitor.restore(state)`` builds a fresh detector and feeds it the kept samples,
which rebuilds the same detector exactly when no more than ``keep`` samples came since the last event
(river's detectors are deterministic; KSWIN is seeded). river's own persistence is pickle, and ADWIN's
Rust core offers only a private byte layout (``__getstate__``) tied to river's version: neither is
used. Past ``keep``, the restored detector knows only the last ``keep`` samples, so a small change
takes longer to see; a monitor restored with nothing (keep=0) takes the new regime for normal when the
change comes within a few hundred samples of the restart (docs/bench/drift.md, the restore table).
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

# Each detector's constructor arguments that a monitor accepts (river's names), with their type and
# inclusive range: river checks few of them, and a bad one can panic in ADWIN's Rust core (clock=0,
# max_buckets=0) or fill the memory (KSWIN's window), so a state read back is checked here first.
BIG = 1 << 20
DETECTORS: dict[str, tuple[type, dict[str, tuple[type, float, float]]]] = {
    "adwin": (river_drift.ADWIN, {"delta": (float, 1e-12, 0.5), "clock": (int, 1, BIG), "max_buckets": (int, 1, 64),
                                  "min_window_length": (int, 1, BIG), "grace_period": (int, 0, BIG)}),
    "page_hinkley": (river_drift.PageHinkley, {"min_instances": (int, 1, BIG), "delta": (float, 0.0, 1.0),
                                               "threshold": (float, 1e-9, 1e9), "alpha": (float, 0.5, 1.0),
                                               "mode": (str, 0, 0)}),
    "kswin": (river_drift.KSWIN, {"alpha": (float, 1e-12, 0.5), "window_size": (int, 2, 100_000),
                                  "stat_size": (int, 1, 99_999), "seed": (int, 0, 2**63 - 1)}),
}


def checked(detector: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` when each is one of ``detector``'s arguments, of its type and in its range; else ValueError."""
    allowed = DETECTORS[detector][1]
    unknown = set(params) - set(allowed)
    if unknown:
        raise ValueError(f"{detector} takes {sorted(allowed)}, not {sorted(unknown)}")
    for name, value in params.items():
        kind, low, high = allowed[name]
        if kind is str:
            ok = value in ("up", "down", "both")
        elif isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
            ok = False
        else:
            ok = math.isfinite(value) and low <= value <= high
        if not ok:
            raise ValueError(f"{detector}'s {name} must be a {kind.__name__} in [{low}, {high}], not {value!r}")
    if detector == "kswin" and params.get("stat_size", 30) >= params.get("window_size", 100):
        raise ValueError("kswin's stat_size must be smaller than its window_size")
    return params


# Chosen on docs/bench/drift.md (50 seeds per stream, 500,000 drift-free samples per signal): ADWIN
# everywhere (PageHinkley was slower at equal false alarms, KSWIN raised 14 false alarms per 10,000
# samples and costs 1 ms a sample); per signal, the largest delta that raised no false alarm while
# the next larger one did, or, for the input (none did up to 0.05), the confidence's delta, since
# 0 in 500,000 cannot tell 0.05's rate from nothing and the bench's i.i.d. streams flatter it.
# error: 0.002 (0.01: 0.02-0.06 false alarms per 10,000; 0.1 -> 0.4 found after 53 samples, p90 72).
# confidence and input: 0.01 (0.05: 0.02 per 10,000 on the confidence).
# clock=1 tests every sample (river's 32: a 0.1 -> 0.4 jump found after 79 instead of 53) for 2 us a
# sample; grace_period=30 so a cut is never tested on a handful of samples.
DEFAULTS: dict[str, dict[str, Any]] = {
    "error": {"detector": "adwin", "delta": 0.002, "clock": 1, "grace_period": 30},
    "confidence": {"detector": "adwin", "delta": 0.01, "clock": 1, "grace_period": 30},
    "input": {"detector": "adwin", "delta": 0.01, "clock": 1, "grace_period": 30},
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
    event the monitor holds (for ``state()`` and an event's estimates). Not thread-safe: one thread
    feeds a monitor (its cost per sample: docs/bench/drift.md)."""

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
        settings = {k: v for k, v in defaults.items() if k in allowed} if detector == defaults["detector"] else {}
        if detector == "kswin":
            settings["seed"] = 0  # a detector rebuilt by replay must draw the same samples
        settings = checked(detector, settings | params)
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
