"""A text brain on the default encoder against a jointly trained logistic regression (issue 15).

    python -m bench.text                                  # as in docs/bench/text.md
    python -m bench.text --sizes small --seeds 0          # a quick look
    python -m bench.text --params '{"ridge": 1.0}' --params '{"layers": [{"hidden": 4096, "k": 512}]}'

The data are fortunes labelled by topic (Debian's ``fortunes``, ``bench.data.fortunes``), embedded
once with the service's default text encoder (``all-minilm-l6-v2``: 384-d unit-norm sentence
embeddings, ``models.encoders``). A fixed, class-stratified split (seed ``SPLIT_SEED``) holds out a
test and a validation share of every topic; the rest is the training pool. Two streams are drawn
from it: ``small`` (the first ``SMALL_PER_TOPIC`` training texts of each topic, a few hundred in
all) and ``large`` (the whole pool). For each stream, params and seed (seeds vary the sample order,
never the split):

- ``stream``: a plastic brain (the default params unless ``--params``) driven as the service drives
  it (``bench.quality.LocalBrain``: the service's 500-sample reservoir replay buffer, its sleep
  budget), class-incrementally: tasks of ``TASK_TOPICS`` topics in the order of ``TOPICS``,
  batches of ``BATCH``, a sleep after each task;
- ``joint``: the same brain fitted on the whole stream at once (one task, shuffled, one sleep);
- ``LR``: scikit-learn's ``LogisticRegression`` on the same training embeddings, fitted jointly,
  its ``C`` chosen on the validation split from ``C_GRID``.

Reported: test accuracy of each, the gaps of the brains to LR, and the brains' validation accuracy
(on the topics seen so far) just before and just after each sleep. Everything chosen (topics, C,
the params one tries) is chosen on validation; test is only reported. The diagnosis (``--diagnose``)
adds, on validation only, what separates the brain from LR: LR on the brain's sparse code instead
of the embeddings (does the code lose information?), a ridge readout on the embeddings themselves
(does the least-squares loss?) and the brain at fixed ridges (is the penalty the sleep chooses the
right one?).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from bench.data import fortunes, hold_out
from bench.quality import LocalBrain

# Topics with their own vocabularies and at least ~150 entries each, in the order tasks take them
# (docs/bench/text.md says how they were chosen).
TOPICS = ("computers", "food", "law", "sports", "politics", "love", "drugs", "startrek")
ENCODER = "all-minilm-l6-v2"
SPLIT_SEED = 0
TEST_FRACTION = 0.2  # of each topic
VAL_FRACTION = 0.15  # of each topic's rest
SMALL_PER_TOPIC = 40  # training texts per topic in the small stream
TASK_TOPICS = 2
BATCH = 32
REPLAY = 500
C_GRID = tuple(float(c) for c in np.logspace(-2, 3, 11))
RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # the diagnosis's fixed penalties


@lru_cache(maxsize=2)
def embedded(topics: tuple[str, ...] = TOPICS) -> tuple[np.ndarray, np.ndarray]:
    """``(x [N, 384] float32, y [N])``: the fortunes of ``topics``, embedded once per process."""
    from models.encoders import encode

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts, y = fortunes(topics)
    x = encode(ENCODER, list(texts), [1]).numpy()
    x.setflags(write=False)
    return x, y


@dataclass(frozen=True)
class Corpus:
    x: np.ndarray
    y: np.ndarray
    topics: tuple[str, ...]
    train: np.ndarray  # indices into x, y; a random order fixed by the split's seed
    val: np.ndarray
    test: np.ndarray

    def stream(self, size: str) -> np.ndarray:
        """The training indices of the ``small`` or ``large`` stream."""
        if size == "large":
            return self.train
        if size != "small":
            raise ValueError(f"size is small or large, not {size!r}")
        return np.concatenate([self.train[self.y[self.train] == c][:SMALL_PER_TOPIC]
                               for c in range(len(self.topics))])


def corpus(topics: tuple[str, ...] = TOPICS, *, x: np.ndarray | None = None, y: np.ndarray | None = None,
           seed: int = SPLIT_SEED) -> Corpus:
    """The fixed split of ``topics`` (embedded unless ``x``, ``y`` are given)."""
    if x is None or y is None:
        x, y = embedded(topics)
    rng = np.random.default_rng(seed)
    rest, test = hold_out(y, np.arange(len(y)), fraction=TEST_FRACTION, cap=None, rng=rng)
    train, val = hold_out(y, rest, fraction=VAL_FRACTION, cap=None, rng=rng)
    return Corpus(x, y, topics, train, val, test)


def accuracy(brain: LocalBrain, c: Corpus, idx: np.ndarray) -> float:
    return float((brain.predict(c.x[idx], None) == c.y[idx]).mean()) if len(idx) else float("nan")


@dataclass
class BrainRun:
    test: float
    val: float
    sleeps: list[list[float]] = field(default_factory=list)  # [before, after] validation accuracy per sleep
    brain: LocalBrain | None = None


def run_brain(c: Corpus, train: np.ndarray, params: dict, *, seed: int, joint: bool) -> BrainRun:
    """Stream ``train`` into a fresh plastic brain: class-incrementally, a task of ``TASK_TOPICS``
    topics at a time, or (``joint``) all at once; each task in an order drawn from ``seed``, in
    batches of ``BATCH``, and a sleep after it, measured on the validation texts of the topics
    seen so far."""
    rng = np.random.default_rng(seed)
    brain = LocalBrain("plastic", params, seed=seed, replay=REPLAY, max_labels=len(c.topics),
                       input_shape=(c.x.shape[1],), encoded=True)
    if joint:
        tasks = [("joint", rng.permutation(train))]
    else:
        tasks = [(f"task{n + 1}", rng.permutation(train[np.isin(c.y[train], np.arange(lo, lo + TASK_TOPICS))]))
                 for n, lo in enumerate(range(0, len(c.topics), TASK_TOPICS))]
    seen: set[int] = set()
    sleeps = []
    for name, idx in tasks:
        for lo in range(0, len(idx), BATCH):
            brain.learn(name, c.x[idx[lo:lo + BATCH]], c.y[idx[lo:lo + BATCH]])
        seen.update(int(v) for v in np.unique(c.y[idx]))
        val_seen = c.val[np.isin(c.y[c.val], sorted(seen))]
        before = accuracy(brain, c, val_seen)
        brain.sleep()
        sleeps.append([before, accuracy(brain, c, val_seen)])
    return BrainRun(accuracy(brain, c, c.test), accuracy(brain, c, c.val), sleeps, brain)


@dataclass
class LogReg:
    C: float
    val: float
    test: float
    val_by_C: dict[float, float]


def fit_logistic(x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, test: np.ndarray | None,
                 grid: tuple[float, ...] = C_GRID) -> LogReg:
    """LogisticRegression fitted on ``x[train]`` for each ``C`` of ``grid``; the C with the best
    accuracy on ``x[val]`` (the smallest among ties) is kept and scored on ``x[test]``."""
    from sklearn.linear_model import LogisticRegression

    models, scores = {}, {}
    for C in grid:
        model = LogisticRegression(C=C, max_iter=5000).fit(x[train], y[train])
        models[C], scores[C] = model, float(model.score(x[val], y[val]))
    best = max(grid, key=lambda C: (scores[C], -C))
    test_acc = float(models[best].score(x[test], y[test])) if test is not None else float("nan")
    return LogReg(best, scores[best], test_acc, scores)


def fit_ridge(x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray,
              grid: tuple[float, ...] = RIDGES + (100.0,)) -> float:
    """Best validation accuracy of a least-squares (ridge) classifier on ``x`` itself over ``grid``:
    the brain's kind of readout without its sparse code."""
    from sklearn.linear_model import RidgeClassifier

    return max(float(RidgeClassifier(alpha=a).fit(x[train], y[train]).score(x[val], y[val])) for a in grid)


def diagnose(c: Corpus, train: np.ndarray, params: dict, *, seed: int) -> dict[str, float]:
    """Validation accuracy of what might separate the brain from LR (never the test split): the
    brain fitted jointly; LR on the brain's sparse code of the same texts; the brain at each fixed
    ridge of ``RIDGES``."""
    joint = run_brain(c, train, params, seed=seed, joint=True)
    codes = joint.brain.learner.encode(torch.from_numpy(c.x.copy())).numpy()  # x is read-only
    out = {"brain (joint)": joint.val,
           "LR on the brain's code": fit_logistic(codes, c.y, train, c.val, None).val,
           "ridge readout on the embeddings": fit_ridge(c.x, c.y, train, c.val)}
    for ridge in RIDGES:
        out[f"brain, ridge {ridge:g}"] = run_brain(c, train, {**params, "ridge": ridge}, seed=seed, joint=True).val
    return out


# -- the run and its table ---------------------------------------------------------------------------
def _pct(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def run(sizes: list[str], params_list: list[dict], seeds: list[int], *, diagnosis: bool = False,
        topics: tuple[str, ...] = TOPICS) -> dict:
    c = corpus(topics)
    result: dict = {"topics": list(topics), "counts": np.bincount(c.y).tolist(),
                    "split": {"train": len(c.train), "val": len(c.val), "test": len(c.test)}, "rows": [],
                    "diagnosis": []}
    for size in sizes:
        train = c.stream(size)
        lr = fit_logistic(c.x, c.y, train, c.val, c.test)
        for params in params_list:
            started = time.perf_counter()
            streamed = [run_brain(c, train, params, seed=s, joint=False) for s in seeds]
            joint = [run_brain(c, train, params, seed=s, joint=True) for s in seeds]
            result["rows"].append({
                "size": size, "train": len(train), "params": params, "seeds": seeds,
                "stream_test": [r.test for r in streamed], "joint_test": [r.test for r in joint],
                "stream_val": [r.val for r in streamed], "joint_val": [r.val for r in joint],
                "stream_sleeps": [r.sleeps for r in streamed], "joint_sleeps": [r.sleeps for r in joint],
                "lr_C": lr.C, "lr_val": lr.val, "lr_test": lr.test, "seconds": time.perf_counter() - started,
            })
            if diagnosis and params == params_list[0]:
                result["diagnosis"].append({"size": size, "params": params, "lr_val": lr.val,
                                            **diagnose(c, train, params, seed=seeds[0])})
    return result


def markdown(result: dict) -> str:
    lines = ["| stream | texts | params | brain streamed (test) | brain joint (test) | LR (test, C) "
             "| streamed − LR | joint − LR | validation: streamed / joint / LR |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        gap_s = [s - row["lr_test"] for s in row["stream_test"]]
        gap_j = [j - row["lr_test"] for j in row["joint_test"]]
        lines.append(
            f"| {row['size']} | {row['train']} | `{json.dumps(row['params'])}` | {_pct(row['stream_test'])} "
            f"| {_pct(row['joint_test'])} | {100 * row['lr_test']:.1f} (C={row['lr_C']:g}) "
            f"| {_pct(gap_s)} | {_pct(gap_j)} | {100 * statistics.fmean(row['stream_val']):.1f} / "
            f"{100 * statistics.fmean(row['joint_val']):.1f} / {100 * row['lr_val']:.1f} |")
    lines += ["", "Validation accuracy (topics seen so far) just before → just after each sleep, mean over seeds:",
              "", "| stream | params | class-incremental, per task | joint |", "|---|---|---|---|"]
    for row in result["rows"]:
        cells = []
        for key in ("stream_sleeps", "joint_sleeps"):
            per_sleep = np.mean(np.array(row[key]), axis=0)  # [sleeps, 2]
            cells.append(", ".join(f"{100 * b:.1f} → {100 * a:.1f}" for b, a in per_sleep))
        lines.append(f"| {row['size']} | `{json.dumps(row['params'])}` | {cells[0]} | {cells[1]} |")
    if result["diagnosis"]:
        keys = [k for k in result["diagnosis"][0] if k not in ("size", "params")]
        lines += ["", "Diagnosis, validation accuracy (first seed; the brain fitted jointly):", "",
                  "| stream | params | " + " | ".join(k.replace("lr_val", "LR on the embeddings") for k in keys) + " |",
                  "|---|---|" + "---|" * len(keys)]
        for d in result["diagnosis"]:
            lines.append(f"| {d['size']} | `{json.dumps(d['params'])}` | "
                         + " | ".join(f"{100 * d[k]:.1f}" for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.text", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,large", help="streams: small, large (comma-separated)")
    parser.add_argument("--seeds", default="0,1,2", help="stream orders, comma-separated")
    parser.add_argument("--params", action="append", type=json.loads,
                        help="plastic params as JSON (repeatable; default: {} only)")
    parser.add_argument("--diagnose", action="store_true", help="add the validation diagnosis (first params)")
    parser.add_argument("--json", type=Path, help="also write the raw result here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = run(args.sizes.split(","), args.params or [{}], [int(s) for s in args.seeds.split(",")],
                 diagnosis=args.diagnose)
    counts = ", ".join(f"{t} {n}" for t, n in zip(result["topics"], result["counts"]))
    print(f"Topics (texts): {counts}. Split: {result['split']}.\n")
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
