"""Continual-learning quality benchmark: scenarios x strategies x seeds, next to Avalanche.

    python -m bench.quality                               # everything, as in docs/benchmarks.md
    python -m bench.quality --scenarios split-fmnist-class --strategies plastic,finetune --seeds 0
    python -m bench.quality --via http --url http://127.0.0.1:8000   # through a running service
    python -m bench.quality --via http                   # starts an embedded service of its own

Each run streams a scenario (``bench.scenarios``; each seed its own sample order, the same
training, validation and test images) into a brain as a service receives it: batches of
``--batch`` labelled samples (one POST each, learned at once), ``--epochs`` passes over each task
before the next, then an evaluation of the tasks on their test images and on their validation
images (training images never learned; the tasks seen so far, every task in the
domain-incremental scenario). Three protocols, each a run per strategy and seed:

- ``service``: the service's protocol. The brain has the service's replay buffer of ``--replay``
  samples (reservoir) and sleeps after each task; the mean validation accuracy of the tasks seen
  so far is measured just before and just after each sleep.
- ``pair``: our side of a pair with Avalanche (strategies with a counterpart), trained as
  Avalanche's is: no service replay buffer and no sleep, so the strategy's own memory is all it
  stores. Strategies in ``OWN_SLEEP`` keep a sleep, with no service buffer, because it is their
  own method rather than the service's rehearsal.
- ``joint-fit``: the same strategy, params and seed fitted on everything at once: all tasks'
  training samples shuffled into one task, the same passes and batch size, one sleep at the end
  (the service's buffer and budget), evaluated on every task with the same masks. The *gap to
  joint* of a strategy is its service run's average accuracy minus this run's.

- ``--via http`` streams through the HTTP API (``POST /v1/brains``, ``/samples?wait=true``,
  ``/sleep?wait=true``, ``/predict``).
- ``--via local`` calls the learners directly, with the service's own pieces and in the same order:
  labels mapped to indices in order of first appearance, ``num_classes`` = the brain's ``max_labels``
  (the scenario's classes, as in Avalanche's 10-output head), the same replay buffer and its seeds
  (the version number at sleep), the same sleep budget, the same masks at prediction. For the same
  seed both give the same accuracy. The joint fit always runs locally: its task-incremental
  evaluation masks the answer to a task's classes, which the API restricts only by task name.

For every run: the test and validation accuracy matrices, average accuracy, backward and forward
transfer, forgetting, wall time, the replay buffer's samples and bytes, and the samples the
strategy keeps in its own state (``Learner.stored_samples``) with the state's bytes.
``--avalanche`` runs the same streams with Avalanche in its own virtual environment
(``bench.avalanche_env``): the same MLP 784-400-400-10, class order, batch size, passes, memory
size and seeds. Results go to ``--out`` as ``quality.json`` and ``quality.md``, with
accuracy-matrix heatmaps and accuracy-over-tasks curves (PNG).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.scenarios import SCENARIOS, SHAPE, SPLIT_SCENARIOS, Scenario, build
from models.learner import Learner
from models.metrics import cl_metrics
from models.registry import DEFAULT_STRATEGY, create

# Our strategies and their Avalanche counterparts (None: Avalanche has none).
COUNTERPARTS = {
    "finetune": "naive", "joint": "joint", "ewc": "ewc", "lwf": "lwf", "replay": "replay",
    "gem": "gem", "agem": "agem", "mygo": "generative_replay", "plastic": None, "packnet": None,
    "pnn": None, "anml": None,
}
# Strategies whose sleep is their own method, not the service's rehearsal: they keep it in a pair.
# mygo's sleep trains its extractor and unified head on dreams of its generators, distilled from
# its task heads; with no replay buffer it dreams only, as Avalanche's GenerativeReplay trains on
# its generator's samples and no stored ones. joint's sleep is its pass over everything it holds,
# what makes it joint training (Avalanche's JointTraining trains once on the whole stream). Every
# other counterpart's sleep is rehearsal of the service's buffer and its own memory (replay, gem,
# agem), a Fisher that the next task's first batch computes identically anyway (ewc), or nothing
# (finetune, lwf).
OWN_SLEEP = frozenset({"mygo", "joint"})
DEFAULT_STRATEGIES = ("plastic", "finetune", "joint", "replay", "ewc", "lwf", "gem", "agem", "mygo")
SERVICE, PAIR, JOINT_FIT, AVALANCHE = "service", "pair", "joint-fit", "avalanche"
PROTOCOLS = (SERVICE, PAIR, JOINT_FIT)
PREDICT_CHUNK = 500
METRICS = ("average_accuracy", "backward_transfer", "forward_transfer", "forgetting")


@dataclass
class Run:
    scenario: str
    setting: str
    strategy: str
    seed: int
    epochs: int
    via: str
    matrix: list[list[float | None]]
    metrics: dict
    seconds: float
    replay_samples: int
    replay_bytes: int
    stored_samples: int
    state_bytes: int
    params: dict = field(default_factory=dict)
    protocol: str = SERVICE
    # R on the validation split, as ``matrix`` on the test split
    val_matrix: list[list[float | None]] = field(default_factory=list)
    # [before, after] per sleep: mean validation accuracy of the tasks seen so far
    sleeps: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.strategy.startswith("avalanche:"):  # quality.json files written before protocols
            self.protocol = AVALANCHE


@dataclass
class Stream:
    """What streaming a scenario into a brain measured."""

    matrix: list[list[float | None]]
    val_matrix: list[list[float | None]]
    sleeps: list[list[float]]
    seconds: float


# -- the two ways of driving a brain --------------------------------------------------------------
class LocalBrain:
    """A learner driven exactly as the service drives it, without HTTP, the database or versions:
    its wake steps and sleeps are the service's own (``service.orchestration.learn_batches`` and
    ``consolidate``), its labels are mapped and its predictions masked by the service's functions
    (``service.brains.label_indices``, ``service.serving.class_mask`` and ``best``)."""

    def __init__(self, strategy: str, params: dict, *, seed: int, replay: int, max_labels: int,
                 input_shape: tuple[int, ...] = SHAPE, encoded: bool = False) -> None:
        from service.orchestration import WAKE_BATCH
        from service.replay import MemoryStore, ReplayBuffer
        from service.tables import Brain

        self.wake_batch = WAKE_BATCH
        self.width = int(np.prod(input_shape))  # the encoded input's size (784 for the image scenarios)
        self.learner: Learner = create(strategy, input_dim=self.width, num_classes=max_labels, seed=seed,
                                       params=params, input_shape=list(input_shape), encoded=encoded)
        self.buffer = ReplayBuffer(MemoryStore(), capacity=replay, policy="reservoir", seed=seed, width=self.width)
        self.labels = Brain(labels=[])  # the label registry, kept on a brain row as the service does
        self.label_limit = max_labels
        self.task_labels: dict[str, list[int]] = {}
        self.version = 1  # the service publishes version 1 at creation
        self.learned = 0
        self.since_sleep = 0

    def _indices(self, y: np.ndarray) -> np.ndarray:
        from service.brains import label_indices

        idx = label_indices(self.labels, [int(v) for v in y.tolist()], limit=self.label_limit)
        return np.array(idx, dtype=np.int64)

    def learn(self, task: str, x: np.ndarray, y: np.ndarray) -> None:
        from service.orchestration import learn_batches

        idx = self._indices(y)
        known = self.task_labels.setdefault(task, [])
        known.extend(i for i in dict.fromkeys(idx.tolist()) if i not in known)
        learn_batches(self.learner, self.buffer, [
            (torch.from_numpy(x[lo: lo + self.wake_batch]), torch.from_numpy(idx[lo: lo + self.wake_batch]), task)
            for lo in range(0, len(idx), self.wake_batch)], "cpu")
        self.learned += len(idx)
        self.since_sleep += len(idx)
        self.version += 1

    def sleep(self) -> None:
        from service.orchestration import consolidate

        if self.learned == 0:
            return
        consolidate(self.learner, self.buffer, policy={}, samples_since_sleep=self.since_sleep,
                    version=self.version, device="cpu")
        self.since_sleep = 0
        self.version += 1

    def predict(self, x: np.ndarray, task: str | None, classes: tuple[int, ...] | None = None) -> np.ndarray:
        """Client labels predicted for ``x``, restricted to ``task``'s labels when given, else to the
        client labels ``classes`` when given (the joint fit's task masks)."""
        from service.serving import best, class_mask

        labels = np.array(self.labels.labels, dtype=np.int64)  # class index -> client label
        if task:
            allowed = self.task_labels[task]
        elif classes is not None:
            allowed = [i for i, label in enumerate(self.labels.labels) if label in classes]
        else:
            allowed = list(range(len(labels)))
        out = []
        for lo in range(0, len(x), PREDICT_CHUNK):
            idx, _ = best(self.learner, np.ascontiguousarray(x[lo: lo + PREDICT_CHUNK], dtype=np.float32),
                          class_mask(self.learner.num_classes, allowed))
            out.append(labels[idx])
        return np.concatenate(out)

    def memory(self) -> tuple[int, int, int, int]:
        n = len(self.buffer)
        state = self.learner.state_dict()
        return n, n * (self.width * 4 + 8), self.learner.stored_samples(), sum(t.numel() * t.element_size() for t in state.values())

    def close(self) -> None:
        pass


class HttpBrain:
    """The same stream through the HTTP API of a running service."""

    def __init__(self, http, name: str, strategy: str, params: dict, *, seed: int, replay: int,
                 max_labels: int) -> None:
        self.http = http  # an httpx.Client on the service (or a FastAPI TestClient)
        self.name = name
        self.http.delete(f"/v1/brains/{name}")
        self._ok(self.http.post("/v1/brains", json={
            "name": name, "input": {"kind": "vector", "shape": list(SHAPE)}, "strategy": strategy,
            "params": params, "seed": seed, "replay": {"size": replay, "policy": "reservoir"},
            "max_labels": max_labels,
        }))

    def _ok(self, r):
        if r.status_code >= 400:
            raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:500]}")
        return r.json()

    def learn(self, task: str, x: np.ndarray, y: np.ndarray) -> None:
        samples = [{"x": row.tolist(), "label": int(label)} for row, label in zip(x, y)]
        self._ok(self.http.post(f"/v1/brains/{self.name}/samples", params={"wait": True},
                                json={"task": task, "samples": samples}))

    def sleep(self) -> None:
        job = self._ok(self.http.post(f"/v1/brains/{self.name}/sleep", params={"wait": True}))
        if job["state"] != "succeeded":
            raise RuntimeError(f"sleep failed: {job}")

    def predict(self, x: np.ndarray, task: str | None) -> np.ndarray:
        out = []
        for lo in range(0, len(x), PREDICT_CHUNK):
            body: dict = {"inputs": [{"x": row.tolist()} for row in x[lo: lo + PREDICT_CHUNK]]}
            if task:
                body["task"] = task
            answer = self._ok(self.http.post(f"/v1/brains/{self.name}/predict", json=body))
            out.extend(p["label"] for p in answer["predictions"])
        return np.array(out, dtype=np.int64)

    def memory(self) -> tuple[int, int, int, int]:
        # The API does not expose the learner's state; the version's stats carry the replay size.
        return -1, -1, -1, -1

    def close(self) -> None:
        self.http.delete(f"/v1/brains/{self.name}")


# -- one run ----------------------------------------------------------------------------------------
def accuracies(brain: LocalBrain | HttpBrain, scenario: Scenario, split: str, seen: int) -> list[float | None]:
    """Accuracy on each task's ``split`` ("test" or "val") images; ``None`` for the tasks after the
    first ``seen`` (every task in the domain-incremental scenario: forward transfer)."""
    row: list[float | None] = []
    for j, task in enumerate(scenario.tasks):
        if j >= seen and scenario.setting != "domain":
            row.append(None)
            continue
        x, y = (task.x_test, task.y_test) if split == "test" else (task.x_val, task.y_val)
        predicted = brain.predict(x, task.name if scenario.setting == "task" else None)
        row.append(float((predicted == y).mean()))
    return row


def _mean_seen(row: list[float | None], seen: int) -> float:
    return float(np.mean([v for v in row[:seen] if v is not None]))


def run_stream(brain: LocalBrain | HttpBrain, scenario: Scenario, *, epochs: int, batch: int, seed: int,
               sleep: bool = True) -> Stream:
    """Stream ``scenario`` into ``brain`` in the scenario's sample order (later passes reshuffled
    with ``seed``), sleeping after each task when ``sleep``."""
    rng = np.random.default_rng(seed)
    out = Stream([], [], [], 0.0)
    for i, task in enumerate(scenario.tasks):
        started = time.perf_counter()
        for epoch in range(epochs):
            order = rng.permutation(len(task.y_train)) if epoch > 0 else np.arange(len(task.y_train))
            for lo in range(0, len(order), batch):
                chunk = order[lo: lo + batch]
                brain.learn(task.name, task.x_train[chunk], task.y_train[chunk])
        if sleep:
            out.seconds += time.perf_counter() - started
            before = _mean_seen(accuracies(brain, scenario, "val", i + 1), i + 1)
            started = time.perf_counter()
            brain.sleep()
        out.seconds += time.perf_counter() - started
        out.matrix.append(accuracies(brain, scenario, "test", i + 1))
        out.val_matrix.append(accuracies(brain, scenario, "val", i + 1))
        if sleep:
            out.sleeps.append([before, _mean_seen(out.val_matrix[-1], i + 1)])
    return out


def joint_fit(brain: LocalBrain, scenario: Scenario, *, epochs: int, batch: int, seed: int) -> Stream:
    """Every task's training samples as one shuffled task, ``epochs`` passes, one sleep; one row
    per split, each task answered with the same mask as in the stream."""
    x = np.concatenate([t.x_train for t in scenario.tasks])
    y = np.concatenate([t.y_train for t in scenario.tasks])
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for lo in range(0, len(order), batch):
            chunk = order[lo: lo + batch]
            brain.learn("joint", x[chunk], y[chunk])
    brain.sleep()
    seconds = time.perf_counter() - started
    rows = []
    for split in ("test", "val"):
        row: list[float | None] = []
        for task in scenario.tasks:
            xs, ys = (task.x_test, task.y_test) if split == "test" else (task.x_val, task.y_val)
            classes = task.classes if scenario.setting == "task" else None
            row.append(float((brain.predict(xs, None, classes) == ys).mean()))
        rows.append([row])
    return Stream(rows[0], rows[1], [], seconds)


def one_run(scenario: Scenario, strategy: str, seed: int, args: argparse.Namespace, url: str | None,
            protocol: str = SERVICE) -> Run:
    params = json.loads(args.params).get(strategy, {}) if args.params else {}
    torch.manual_seed(seed)
    replay = 0 if protocol == PAIR else args.replay
    via = "local" if protocol == JOINT_FIT else args.via
    if via == "local":
        brain: LocalBrain | HttpBrain = LocalBrain(strategy, params, seed=seed, replay=replay,
                                                   max_labels=scenario.num_classes)
    else:
        import httpx

        http = httpx.Client(base_url=url, timeout=600)
        brain = HttpBrain(http, f"bench-{strategy}-{seed}-{protocol}", strategy, params, seed=seed, replay=replay,
                          max_labels=scenario.num_classes)
    try:
        if protocol == JOINT_FIT:
            assert isinstance(brain, LocalBrain)
            stream = joint_fit(brain, scenario, epochs=args.epochs, batch=args.batch, seed=seed)
        else:
            stream = run_stream(brain, scenario, epochs=args.epochs, batch=args.batch, seed=seed,
                                sleep=protocol == SERVICE or strategy in OWN_SLEEP)
        memory = brain.memory()
    finally:
        brain.close()
        if via == "http":
            http.close()
    learned_at = [0] * len(scenario.tasks) if protocol == JOINT_FIT else list(range(len(scenario.tasks)))
    metrics = cl_metrics(stream.matrix, learned_at, scenario.chance())
    return Run(scenario.name, scenario.setting, strategy, seed, args.epochs, via, stream.matrix,
               {k: metrics[k] for k in METRICS}, round(stream.seconds, 2), *memory, params=params,
               protocol=protocol, val_matrix=stream.val_matrix, sleeps=stream.sleeps)


# -- Avalanche --------------------------------------------------------------------------------------
def run_avalanche(scenario: Scenario, strategies: list[str], seed: int, args: argparse.Namespace,
                  work: Path) -> list[Run]:
    """Avalanche's counterparts of ``strategies`` on ``scenario``, streamed as for ``seed`` (none:
    nothing to run). The scenario file holds the training samples in the stream's order (the
    validation split is left out: nobody learns it), one file per seed."""
    from bench import avalanche_env

    counterparts = [c for c in dict.fromkeys(COUNTERPARTS.get(s) for s in strategies) if c]
    if not counterparts:
        return []
    python = avalanche_env.ensure_env(Path(args.avalanche_env))
    npz = avalanche_env.write_scenario(work / f"{scenario.name}-seed{seed}.npz", scenario.tasks,
                                       setting=scenario.setting)
    config = {"strategies": counterparts,
              "seeds": [seed], "epochs": args.epochs, "batch_size": args.batch, "lr": 1e-3,
              "memory": args.replay, "hidden": 400, "threads": args.threads,
              **avalanche_memories(strategies, args)}
    result = avalanche_env.run(npz, config, python)
    runs = []
    for r in result["results"]:
        matrix = r["matrix"]
        if scenario.setting != "domain":  # our matrices hold only the tasks seen so far
            matrix = [[v if j <= i or len(matrix) == 1 else None for j, v in enumerate(row)] for i, row in enumerate(matrix)]
        learned_at = [0] * len(scenario.tasks) if len(matrix) == 1 else list(range(len(scenario.tasks)))
        metrics = cl_metrics(matrix, learned_at, scenario.chance())
        runs.append(Run(scenario.name, scenario.setting, f"avalanche:{r['strategy']}", r["seed"], args.epochs,
                        "avalanche", matrix, {k: metrics[k] for k in METRICS},
                        round(r["train_seconds"], 2), 0, 0, int(r.get("memory_samples") or 0), -1,
                        params=r.get("params", {}), protocol=AVALANCHE))
    return runs


def avalanche_memories(strategies: list[str], args: argparse.Namespace) -> dict:
    """Avalanche's memory settings equal to our strategies' own (their params, defaults filled in):
    in a pair, each side stores the same number of samples."""
    from models.registry import validate_params

    given = json.loads(args.params) if args.params else {}
    out = {}
    for strategy in strategies:
        twin = COUNTERPARTS.get(strategy)
        if twin not in ("replay", "gem", "agem"):
            continue
        params = validate_params(strategy, given.get(strategy, {}))
        if twin == "replay":
            out[twin] = {"mem_size": params["memory_size"]}
        else:
            out[twin] = {"patterns_per_exp": params["memory_per_task"]}
            if twin == "agem":
                out[twin]["sample_size"] = params["memory_batch"]
    return out


# -- an embedded service for --via http without --url ------------------------------------------------
@contextmanager
def embedded_service(data_dir: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "BRAIN_JOBS": "inprocess", "BRAIN_LOG_LEVEL": "WARNING"}
    env.pop("BRAIN_DATABASE_URL", None)
    env.pop("BRAIN_REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "brain_cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_until_healthy(url: str, proc: subprocess.Popen | None = None, *, timeout: float = 120.0) -> None:
    """Return once the service at ``url`` answers 200 on ``/healthz`` (``service.api.health``);
    RuntimeError when ``proc`` exits first or ``timeout`` seconds pass without it."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the service exited: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the service at {url} did not answer /healthz within {timeout:.0f} s")
        time.sleep(0.2)


# -- reporting -----------------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _points(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}" + (f" ± {100 * spread:.1f}" if spread else "")


def _stat(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def final_val(run: Run) -> float | None:
    """Mean validation accuracy over the tasks of the last row."""
    if not run.val_matrix:
        return None
    return float(np.mean([v for v in run.val_matrix[-1] if v is not None]))


def sleep_gain(run: Run) -> float | None:
    """Mean over the run's sleeps of (validation accuracy after minus before)."""
    return float(np.mean([after - before for before, after in run.sleeps])) if run.sleeps else None


def summarise(runs: list[Run]) -> list[dict]:
    """Mean and spread over seeds per (scenario, strategy, protocol); a service row also has the
    gap to joint (against the joint-fit runs of the same seeds) and the sleep gain."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.scenario, r.strategy, r.protocol), []).append(r)
    rows = []
    for (scenario, strategy, protocol), rs in groups.items():
        fits = {r.seed: r for r in groups.get((scenario, strategy, JOINT_FIT), [])}
        gaps = [r.metrics["average_accuracy"] - fits[r.seed].metrics["average_accuracy"]
                for r in rs if protocol == SERVICE and r.seed in fits]
        gains = [g for g in map(sleep_gain, rs) if g is not None]
        vals = [v for v in map(final_val, rs) if v is not None]
        rows.append({
            "scenario": scenario, "strategy": strategy, "protocol": protocol, "seeds": len(rs),
            **{k: _stat([r.metrics[k] for r in rs if r.metrics.get(k) is not None]) for k in METRICS},
            "validation_accuracy": _stat(vals), "gap_to_joint": _stat(gaps), "sleep_gain": _stat(gains),
            # per sleep: [before, after], each the mean over seeds
            "sleeps": [list(map(statistics.fmean, zip(*per_sleep))) for per_sleep in zip(*(r.sleeps for r in rs))],
            "seconds": statistics.fmean(r.seconds for r in rs),
            "replay_samples": max(r.replay_samples for r in rs), "stored_samples": max(r.stored_samples for r in rs),
            "state_mb": max(r.state_bytes for r in rs) / 2**20 if rs[0].state_bytes >= 0 else None,
        })
    return rows


def _acc(row: dict | None) -> str:
    if row is None or row["average_accuracy"][0] is None:
        return "-"
    acc, spread = row["average_accuracy"]
    return f"{_pct(acc)} ± {_pct(spread)}"


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    by_key = {(r["scenario"], r["strategy"], r["protocol"]): r for r in rows}
    lines = [f"Command: `python -m bench.quality {' '.join(args.argv)}`".rstrip(), ""]
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        mine = [r for r in rows if r["scenario"] == scenario]
        service = sorted((r for r in mine if r["protocol"] == SERVICE), key=lambda r: -(r["average_accuracy"][0] or 0))
        lines += [f"### {scenario} ({args.epochs} pass{'es' if args.epochs > 1 else ''}, batch {args.batch}, "
                  f"replay {args.replay})", ""]
        if service:
            lines += [f"The service's protocol: its replay buffer of {args.replay} samples and a sleep after each task. "
                      "Gap to joint: accuracy minus that of the same strategy fitted on all tasks at once; "
                      "sleep gain: validation accuracy just after a sleep minus just before, mean over the sleeps "
                      "(points).", "",
                      "| strategy | accuracy % | validation % | forgetting % | BWT % | FWT % | gap to joint | "
                      "sleep gain, validation | train s | replay + own samples | state MB |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in service:
            lines.append("| " + " | ".join([
                f"**{r['strategy']}**" if r["strategy"] == DEFAULT_STRATEGY else r["strategy"], _acc(r),
                _pct(r["validation_accuracy"][0]), _pct(r["forgetting"][0]), _pct(r["backward_transfer"][0]),
                _pct(r["forward_transfer"][0]), _points(*r["gap_to_joint"]), _points(*r["sleep_gain"]),
                f"{r['seconds']:.1f}",
                f"{r['replay_samples']} + {r['stored_samples']}" if r["replay_samples"] >= 0 else "-",
                f"{r['state_mb']:.1f}" if r["state_mb"] is not None else "-",
            ]) + " |")
        pairs = [r for r in mine if r["protocol"] == PAIR]
        theirs = [r for r in mine if r["protocol"] == AVALANCHE]
        if pairs or theirs:
            lines += ["", "Like for like with Avalanche: ours with no service buffer and no service sleep "
                      f"({' and '.join(sorted(OWN_SLEEP))} keep their own sleep, with no service buffer), theirs with the same "
                      "network, stream, memory size and passes. Time ratio: ours / theirs, these runs.", "",
                      "| strategy | ours % | own samples | train s | Avalanche counterpart | theirs % | their samples | "
                      "accuracy diff | time ratio | ours with the service's sleep % |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
        matched = set()
        for r in sorted(pairs, key=lambda r: -(r["average_accuracy"][0] or 0)):
            twin_name = COUNTERPARTS.get(r["strategy"])
            twin = by_key.get((scenario, f"avalanche:{twin_name}", AVALANCHE))
            matched.add(f"avalanche:{twin_name}")
            ok = twin is not None and twin["average_accuracy"][0] is not None and r["average_accuracy"][0] is not None
            lines.append("| " + " | ".join([
                r["strategy"], _acc(r), str(r["stored_samples"]), f"{r['seconds']:.1f}", twin_name or "-", _acc(twin),
                str(twin["stored_samples"]) if twin else "-",
                f"{100 * (r['average_accuracy'][0] - twin['average_accuracy'][0]):+.1f}" if ok else "-",
                f"{r['seconds'] / max(twin['seconds'], 1e-9):.2f}" if ok else "-",
                _acc(by_key.get((scenario, r["strategy"], SERVICE))),
            ]) + " |")
        for r in theirs:
            if r["strategy"] not in matched:
                lines.append(f"| - | - | - | - | {r['strategy'].split(':', 1)[1]} | {_acc(r)} | {r['stored_samples']} "
                             "| - | - | - |")
        lines.append("")
    return "\n".join(lines)


def plots(runs: list[Run], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for scenario in dict.fromkeys(r.scenario for r in runs):
        mine = [r for r in runs if r.scenario == scenario and r.seed == min(x.seed for x in runs) and len(r.matrix) > 1
                and r.protocol in (SERVICE, AVALANCHE)]
        if not mine:
            continue
        cols = min(4, len(mine))
        rows = (len(mine) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
        for ax, r in zip(axes.flat, mine):
            data = np.array([[np.nan if v is None else v for v in row] for row in r.matrix], dtype=float)
            ax.imshow(data, vmin=0, vmax=1, cmap="viridis")
            for (i, j), v in np.ndenumerate(data):
                if not np.isnan(v):
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 0.6 else "black")
            ax.set_title(r.strategy, fontsize=9)
            ax.set_xlabel("task evaluated", fontsize=7)
            ax.set_ylabel("after task", fontsize=7)
            ax.set_xticks(range(data.shape[1]))
            ax.set_yticks(range(data.shape[0]))
        for ax in list(axes.flat)[len(mine):]:
            ax.axis("off")
        fig.suptitle(f"{scenario}: accuracy matrix (seed {mine[0].seed})")
        fig.tight_layout()
        path = out / f"{scenario}-matrix.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

        fig, ax = plt.subplots(figsize=(7, 4))
        ours = [r.strategy for r in mine if not r.strategy.startswith("avalanche:")]
        colour = {name: plt.cm.tab10(i % 10) for i, name in enumerate(ours)}
        colour.update({f"avalanche:{COUNTERPARTS[name]}": colour[name] for name in ours if COUNTERPARTS.get(name)})
        for r in mine:
            curve = [np.mean([v for v in row if v is not None]) for row in r.matrix]
            style = "-" if not r.strategy.startswith("avalanche:") else "--"
            ax.plot(range(1, len(curve) + 1), curve, style, marker="o", label=r.strategy,
                    color=colour.get(r.strategy, "grey"), linewidth=2.5 if r.strategy == DEFAULT_STRATEGY else 1.2)
        ax.set_xticks(range(1, max(len(r.matrix) for r in mine) + 1))
        ax.set_xlabel("tasks learned (dashed: Avalanche's counterpart, same colour)")
        ax.set_ylabel("mean accuracy on tasks evaluated")
        ax.set_ylim(0, 1)
        ax.set_title(f"{scenario}: accuracy over tasks")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out / f"{scenario}-curves.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# -- command line -----------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=1, help="passes over each task before the next")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--replay", type=int, default=500, help="the service's replay buffer (samples)")
    p.add_argument("--params", default=None, help='JSON: {"strategy": {params}}')
    p.add_argument("--via", choices=("local", "http"), default="local")
    p.add_argument("--url", default=None, help="--via http: a running service (default: start one)")
    p.add_argument("--avalanche", action="store_true", help="also run Avalanche's counterparts of the strategies run")
    p.add_argument("--avalanche-env", default=".bench-venv/avalanche")
    p.add_argument("--protocols", default=",".join(PROTOCOLS),
                   help="service: the service's buffer and sleeps; pair: like Avalanche (strategies with a "
                        "counterpart); joint-fit: the same strategy on all tasks at once (the gap to joint)")
    p.add_argument("--class-order-seeds", default="",
                   help="extra runs of the split scenarios whose seed also permutes the class order "
                        "(reported as <scenario>+class-order)")
    p.add_argument("--small", action="store_true",
                   help="1,000 training, 200 validation and 500 test samples per task (quick look)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (ours and Avalanche's)")
    p.add_argument("--out", default="docs/bench", help="folder for quality.json, quality.md and plots")
    p.add_argument("--from-json", default=None, help="redo the table and plots of an earlier quality.json")
    p.add_argument("--update", default=None, metavar="QUALITY_JSON",
                   help="rerun the given scenarios x strategies x seeds and replace those runs in an earlier "
                        "quality.json (the others are kept: runs are independent and deterministic)")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.class_order_seeds = [int(s) for s in args.class_order_seeds.split(",") if s]
    args.protocols = [p for p in args.protocols.split(",") if p]
    unknown = set(args.protocols) - set(PROTOCOLS)
    if unknown:
        raise SystemExit(f"unknown protocols {sorted(unknown)}; known: {', '.join(PROTOCOLS)}")
    return args


def protocols(strategy: str, args: argparse.Namespace) -> list[str]:
    """The protocols run for ``strategy``: a pair only where Avalanche has a counterpart."""
    return [p for p in args.protocols if p != PAIR or COUNTERPARTS.get(strategy)]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    strategies = [s for s in args.strategies.split(",") if s]
    if args.from_json:
        earlier = json.loads(Path(args.from_json).read_text())
        first = earlier["args"][: earlier["args"].index("&&")] if "&&" in earlier["args"] else earlier["args"]
        saved = parse(first)  # the run's passes, batch and replay name its tables
        saved.argv = earlier["args"]
        return report([Run(**r) for r in earlier["runs"]], saved, out)
    runs: list[Run] = []
    work = Path(tempfile.mkdtemp(prefix="pb-quality-"))
    try:
        with (embedded_service(work / "service") if args.via == "http" and not args.url else _given(args.url)) as url:
            names = [s for s in args.scenarios.split(",") if s]
            plan = [(name, seed, False) for name in names for seed in args.seeds]
            plan += [(name, seed, True) for name in names if name in SPLIT_SCENARIOS for seed in args.class_order_seeds]
            for name, seed, class_order in plan:
                scenario = build(name, small=args.small, seed=seed, class_order=class_order)
                for strategy in strategies:
                    for protocol in protocols(strategy, args):
                        run = one_run(scenario, strategy, seed, args, url, protocol)
                        runs.append(run)
                        gain = sleep_gain(run)
                        print(f"{scenario.name:20s} {strategy:10s} {protocol:9s} seed {seed}: accuracy "
                              f"{_pct(run.metrics['average_accuracy'])}%, validation {_pct(final_val(run))}%, "
                              f"forgetting {_pct(run.metrics['forgetting'])}, sleep gain {_points(gain)}, "
                              f"{run.seconds:.1f}s", flush=True)
                if args.avalanche:
                    for run in run_avalanche(scenario, strategies, seed, args, work):
                        runs.append(run)
                        print(f"{scenario.name:20s} {run.strategy:28s} seed {run.seed}: accuracy "
                              f"{_pct(run.metrics['average_accuracy'])}%, {run.seconds:.1f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.update:
        earlier = json.loads(Path(args.update).read_text())
        runs = replace_runs([Run(**r) for r in earlier["runs"]], runs)
        args.argv = [*earlier["args"], "&&", "python", "-m", "bench.quality", *args.argv]
    return report(runs, args, out)


def replace_runs(earlier: list[Run], fresh: list[Run]) -> list[Run]:
    """``earlier`` with the runs of the same scenario, strategy, seed, passes, path and protocol as
    one in ``fresh`` replaced by it."""
    def key(run: Run) -> tuple:
        return run.scenario, run.strategy, run.seed, run.epochs, run.via, run.protocol

    new = {key(r): r for r in fresh}
    kept = [new.pop(key(r), r) for r in earlier]
    return kept + list(new.values())


def report(runs: list[Run], args: argparse.Namespace, out: Path) -> int:
    rows = summarise(runs)
    (out / "quality.json").write_text(json.dumps({"args": args.argv, "runs": [asdict(r) for r in runs],
                                                  "summary": rows}, indent=1))
    table = markdown(rows, args)
    (out / "quality.md").write_text(table + "\n")
    for path in plots(runs, out):
        print(f"wrote {path}")
    print(table)
    return 0


@contextmanager
def _given(url: str | None):
    yield url


if __name__ == "__main__":
    raise SystemExit(main())
