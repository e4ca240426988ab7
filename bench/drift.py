"""Drift detectors (service.drift) on streams with a known change point: detection delay and false alarms.

    python -m bench.drift [--seeds 50] [--only error|confidence|input] [--restored] [--json docs/bench/drift.json]

Streams, each ``N`` samples with the change at ``CHANGE`` (drift-free twins: ``N_CLEAN`` samples, no change):
- bernoulli p0->p1: a synthetic prequential error stream whose error rate jumps.
- Fashion-MNIST through a real classifier (scikit-learn's LogisticRegression on 2x2-pooled images of
  classes 0-4, fitted once with seed 0); before the change, test images of classes 0-4; after it,
  ``new-classes`` (half the images from classes 5-9, never seen), ``dimmed`` (contrast x0.7),
  ``brightened`` (+0.2, clipped) or ``inverted`` (1 - x). Each gives three signals: the error (0/1),
  the confidence (top probability) and the input's mean (mean pixel of the image).

Per seed the stream is drawn again (images sampled with replacement from the pools). Reported: the
share of seeds whose first event after the change comes within the ``N - CHANGE`` samples left
(``found``), the share with an event before the change (``early``), the delay (first event at or
after the change, minus ``CHANGE``) median and 90th percentile over the found seeds, and false alarms:
events per 10,000 samples on the drift-free streams.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.data import fashion_mnist
from service.drift import DriftMonitor

N, CHANGE, N_CLEAN = 4000, 2000, 10_000
SEEN, UNSEEN = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "dimmed": lambda x: x * 0.7,
    "brightened": lambda x: np.clip(x + 0.2, 0.0, 1.0),
    "inverted": lambda x: 1.0 - x,
}


def pool2(x: np.ndarray) -> np.ndarray:
    """28x28 images -> 14x14 (2x2 means): the classifier fits in about a second."""
    return x.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(-1, 196)


@lru_cache(maxsize=2)
def fashion_signals(seed: int = 0, train: int = 2000) -> dict[str, dict[str, np.ndarray]]:
    """``{pool: {"error", "confidence", "input"}}`` per test image of each pool ("seen": classes 0-4;
    "unseen": 5-9; each shift of SHIFTS applied to the seen ones), from a LogisticRegression fitted on
    ``train`` training images of classes 0-4."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    xtr, ytr = fashion_mnist("train")
    xte, yte = fashion_mnist("test")
    rng = np.random.default_rng(seed)
    fit = rng.permutation(np.flatnonzero(np.isin(ytr, SEEN)))[:train]
    with threadpool_limits(1):  # a second of work: BLAS threads only fight over a loaded machine's cores
        clf = LogisticRegression(max_iter=300).fit(pool2(xtr[fit]), ytr[fit])
    seen = np.isin(yte, SEEN)
    pools = {"seen": (xte[seen], yte[seen]), "unseen": (xte[~seen], yte[~seen])}
    pools |= {name: (shift(xte[seen]), yte[seen]) for name, shift in SHIFTS.items()}
    out = {}
    for name, (x, y) in pools.items():
        proba = clf.predict_proba(pool2(x))
        out[name] = {"error": (clf.classes_[proba.argmax(1)] != y).astype(np.float64),
                     "confidence": proba.max(1), "input": x.mean(1).astype(np.float64)}
    return out


def fashion_stream(signals: dict[str, dict[str, np.ndarray]], shift: str | None, signal: str, *,
                   rng: np.random.Generator, n: int = N, change: int = CHANGE) -> np.ndarray:
    """``n`` values of ``signal``: seen images, then from ``change`` on the ``shift``ed ones
    (``new-classes``: half seen, half unseen images); ``shift=None``: no change."""
    seen = signals["seen"][signal]
    values = seen[rng.integers(len(seen), size=n)]
    if shift is None:
        return values
    after = n - change
    if shift == "new-classes":
        unseen = signals["unseen"][signal]
        new = rng.random(after) < 0.5
        values[change:][new] = unseen[rng.integers(len(unseen), size=int(new.sum()))]
    else:
        shifted = signals[shift][signal]
        values[change:] = shifted[rng.integers(len(shifted), size=after)]
    return values


def bernoulli_stream(p0: float, p1: float, *, rng: np.random.Generator, n: int = N,
                     change: int = CHANGE) -> np.ndarray:
    """0/1 errors at rate ``p0``, then ``p1`` from ``change`` on."""
    rate = np.where(np.arange(n) < change, p0, p1)
    return (rng.random(n) < rate).astype(np.float64)


def events(monitor: DriftMonitor, values: Iterable[float]) -> list[int]:
    """The indices at which ``monitor`` fired over ``values``."""
    return [e.index for v in values if (e := monitor.update(v)) is not None]


def events_restored(monitor: DriftMonitor, values: np.ndarray, at: int) -> list[int]:
    """``events`` where the monitor is saved (its state through JSON) and restored before ``values[at]``."""
    fired = events(monitor, values[:at])
    restored = DriftMonitor.restore(json.loads(json.dumps(monitor.state())))
    return fired + events(restored, values[at:])


@dataclass
class Row:
    signal: str
    stream: str
    detector: str
    seeds: int
    found: float
    early: float
    delay_median: float | None
    delay_p90: float | None
    false_per_10k: float


def measure(make: Callable[[], DriftMonitor], drifting: Callable[[np.random.Generator], np.ndarray],
            clean: Callable[[np.random.Generator], np.ndarray], seeds: int,
            restore_at: int | None = None) -> tuple[float, float, list[int], float]:
    """``(found, early, delays, false alarms per 10k)`` over ``seeds`` seeds; with ``restore_at``, the
    monitor is saved and restored before that sample."""
    delays, early, false = [], 0, 0
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 1])
        values = drifting(rng)
        fired = events(make(), values) if restore_at is None else events_restored(make(), values, restore_at)
        early += any(i < CHANGE for i in fired)
        after = [i - CHANGE for i in fired if i >= CHANGE]
        if after:
            delays.append(after[0])
        quiet = clean(np.random.default_rng([seed, 2]))
        false += len(events(make(), quiet) if restore_at is None else events_restored(make(), quiet, restore_at))
    return len(delays) / seeds, early / seeds, delays, false / (seeds * N_CLEAN) * 10_000


DETECTORS: dict[str, dict[str, object]] = {
    "adwin d=0.002 clock=32 (river)": {"detector": "adwin", "delta": 0.002, "clock": 32, "grace_period": 10},
    "adwin d=0.0002": {"detector": "adwin", "delta": 0.0002},
    "adwin d=0.002": {"detector": "adwin", "delta": 0.002},
    "adwin d=0.01": {"detector": "adwin", "delta": 0.01},
    "adwin d=0.05": {"detector": "adwin", "delta": 0.05},
    "page-hinkley (river)": {"detector": "page_hinkley"},
    "page-hinkley thr=20": {"detector": "page_hinkley", "threshold": 20},
    "page-hinkley thr=10": {"detector": "page_hinkley", "threshold": 10},
    "kswin a=0.005 (river)": {"detector": "kswin"},
}
ADWINS = ["adwin d=0.0002", "adwin d=0.002", "adwin d=0.01", "adwin d=0.05"]
FOR_SIGNAL = {
    "error": ["adwin d=0.002 clock=32 (river)", *ADWINS],
    "confidence": [*ADWINS, "page-hinkley (river)", "page-hinkley thr=20", "page-hinkley thr=10", "kswin a=0.005 (river)"],
    "input": [*ADWINS, "page-hinkley thr=20", "page-hinkley thr=10"],
}
# KSWIN runs a two-sample KS test on every sample (about 0.5 ms each): it gets fewer seeds.
MAX_SEEDS = {"kswin a=0.005 (river)": 10}


def streams(signal: str) -> list[tuple[str, Callable, Callable]]:
    """``(name, drifting(rng), clean(rng))`` for ``signal``."""
    fm = fashion_signals()
    out = []
    if signal == "error":
        for p0, p1 in ((0.1, 0.4), (0.1, 0.2), (0.3, 0.4)):
            out.append((f"bernoulli {p0}->{p1}", lambda rng, a=p0, b=p1: bernoulli_stream(a, b, rng=rng),
                        lambda rng, a=p0: bernoulli_stream(a, a, rng=rng, n=N_CLEAN)))
    for shift in ("new-classes", *SHIFTS):
        out.append((f"fmnist {shift}", lambda rng, s=shift: fashion_stream(fm, s, signal, rng=rng),
                    lambda rng: fashion_stream(fm, None, signal, rng=rng, n=N_CLEAN)))
    return out


def run(signals: Iterable[str], seeds: int) -> list[Row]:
    rows = []
    for signal in signals:
        for stream, drifting, clean in streams(signal):
            for name in FOR_SIGNAL[signal]:
                params = DETECTORS[name]
                started = time.perf_counter()
                n = min(seeds, MAX_SEEDS.get(name, seeds))
                found, early, delays, false = measure(lambda p=params: DriftMonitor(signal, **p), drifting, clean, n)
                med = float(np.median(delays)) if delays else None
                p90 = float(np.percentile(delays, 90)) if delays else None
                rows.append(Row(signal, stream, name, n, found, early, med, p90, round(false, 2)))
                print(f"{signal:10s} {stream:22s} {name:32s} found {found:4.2f} early {early:4.2f} "
                      f"delay {med} p90 {p90} false/10k {false:.2f}  ({time.perf_counter() - started:.1f} s)",
                      flush=True)
    return rows


RESTORE_AT = CHANGE - 100
RESTORE_KEEP = (2000, 500, 200, 0)


def run_restored(seeds: int) -> list[Row]:
    """The error monitor saved and restored 100 samples before the change, keeping ``keep`` samples:
    what a restart costs in delay (keep=0: a monitor that starts fresh)."""
    rows = []
    for stream, drifting, clean in streams("error")[:2]:
        for keep in RESTORE_KEEP:
            found, early, delays, false = measure(lambda k=keep: DriftMonitor("error", keep=k), drifting, clean, seeds,
                                                  restore_at=RESTORE_AT)
            med = float(np.median(delays)) if delays else None
            p90 = float(np.percentile(delays, 90)) if delays else None
            rows.append(Row("error", stream, f"default, restored at {RESTORE_AT} keep={keep}", seeds, found, early,
                            med, p90, round(false, 2)))
            print(rows[-1], flush=True)
    return rows


def table(rows: list[Row]) -> str:
    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    lines = ["| signal | stream | detector | seeds | found | early | delay median | delay p90 | false alarms /10k |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.signal} | {r.stream} | {r.detector} | {r.seeds} | {r.found:.2f} | {r.early:.2f} | {num(r.delay_median)} | "
              f"{num(r.delay_p90)} | {r.false_per_10k:.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--only", choices=["error", "confidence", "input"], action="append")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--restored", action="store_true", help="only the table of restored monitors")
    args = parser.parse_args(argv)
    rows = [] if args.restored else run(args.only or ["error", "confidence", "input"], args.seeds)
    restored = run_restored(args.seeds) if args.restored or not args.only else []
    print(table(rows))
    print()
    print(table(restored))
    rows += restored
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1) + "\n")


if __name__ == "__main__":
    main()
