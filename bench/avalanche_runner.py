"""Run Avalanche (the reference continual-learning library) on one of our scenarios.

STANDALONE: this script runs in the separate Avalanche venv that
``bench/avalanche_env.py`` creates; it imports only the standard library, numpy,
torch and avalanche, never the project's packages.

    python bench/avalanche_runner.py --scenario s.npz --config c.json [--out r.json]

Scenario (.npz), written by the benchmark:
    x_train_<t>, x_test_<t>  float32 [N, 784] in [0, 1]   t = 0 .. n_tasks-1, in OUR order
    y_train_<t>, y_test_<t>  int64 [N], GLOBAL class ids
    n_tasks                  int scalar (optional: else counted from the arrays)
    setting                  str scalar "class" | "task" | "domain" (optional, default "class";
                             a JSON sidecar ``<scenario>.json`` with {"setting", "n_tasks"}
                             is read too, and wins)

Config (.json), every key optional:
    strategies  ["naive", "joint", "ewc", "lwf", "replay", "gem", "agem", "generative_replay"]
    seeds [0], epochs 1, batch_size 128, lr 1e-3, memory 500, hidden 400, layers 2,
    eval_batch_size 1000, threads 2 (torch.set_num_threads; on a 2-core machine that other
    jobs also load, use 1: docs/bench/network-strategies.md),
    device "cpu"
    per-strategy keyword overrides, e.g. {"ewc": {"ewc_lambda": 100.0}}; defaults:
      ewc                {"ewc_lambda": 100.0, "mode": "separate"}
      lwf                {"alpha": 1.0, "temperature": 2.0}
      replay             {"mem_size": memory}              (ExperienceBalancedBuffer)
      gem                {"patterns_per_exp": memory // n_tasks, "memory_strength": 0.5}
      agem               {"patterns_per_exp": memory // n_tasks, "sample_size": batch_size}
      generative_replay  {}   (Avalanche's default generator: MlpVAE((1, 28, 28), nhid=2),
                               Adam lr 0.01, trained after each experience with the same
                               epochs and batch size)

Network, for every strategy: MLP 784-hidden-hidden-n_classes (ReLU), one shared head
(n_classes = largest class id + 1), Adam(lr), CrossEntropy, ``epochs`` passes per
experience, minibatch ``batch_size``. Inputs are handed to Avalanche as [N, 1, 28, 28]
(the model flattens) so that GenerativeReplay's default image VAE fits.

Settings:
    class   no task labels (all 0), single head, evaluation argmax over all outputs.
    domain  the same (every task has all classes), single head, task label 0.
    task    experience t carries task label t (Avalanche's ``with_task_labels``); the
            network is still ONE shared head, and evaluation is MASKED: argmax over the
            classes of the evaluated task only (the classes present in its train/test
            labels). Training is unmasked (plain Avalanche strategies).

Evaluation (our own loop on the raw test tensors, outside the timed section): after
training on experience i, accuracy on EVERY task's test set j (full matrix, j > i
included, so rows are complete). Joint trains once on all experiences together
(Avalanche ``JointTraining``); its matrix has ONE row.

Output JSON:
    {"avalanche_version", "torch_version", "setting", "n_tasks", "config",
     "results": [{"strategy", "seed", "matrix": [[acc, ...], ...],
                  "final_accuracy": mean of the last row, "train_seconds",
                  "memory_samples", "params": the strategy's keyword arguments}]}
train_seconds is wall time inside ``strategy.train`` only (generator training of
GenerativeReplay included, evaluation excluded). memory_samples is the number of
stored input samples at the end: Replay buffer length, GEM/A-GEM memories, 0 for
Naive/EWC/LwF/GenerativeReplay (which keeps a generator, not samples), and the whole
training set for Joint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("WANDB_MODE", "disabled")

import avalanche
import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils.classification_dataset import (
    _make_taskaware_tensor_classification_dataset as make_tensor_dataset,
)
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.supervised import (
    AGEM,
    EWC,
    GEM,
    GenerativeReplay,
    JointTraining,
    LwF,
    Naive,
    Replay,
)
from torch import nn

ALL_STRATEGIES = ["naive", "joint", "ewc", "lwf", "replay", "gem", "agem", "generative_replay"]
DEFAULTS = {
    "strategies": ALL_STRATEGIES, "seeds": [0], "epochs": 1, "batch_size": 128, "lr": 1e-3,
    "memory": 500, "hidden": 400, "layers": 2, "eval_batch_size": 1000, "threads": 2,
    "device": "cpu",
}
ALIASES = {"a-gem": "agem", "a_gem": "agem", "generativereplay": "generative_replay",
           "generative-replay": "generative_replay", "gr": "generative_replay",
           "er": "replay", "joint_training": "joint"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- scenario

def load_scenario(path: Path) -> dict:
    data = np.load(path, allow_pickle=False)
    meta = {}
    sidecar = Path(path).with_suffix(".json")
    if sidecar.exists():
        meta = json.loads(sidecar.read_text())
    if "n_tasks" in meta:
        n_tasks = int(meta["n_tasks"])
    elif "n_tasks" in data.files:
        n_tasks = int(data["n_tasks"])
    else:
        n_tasks = sum(1 for k in data.files if k.startswith("x_train_"))
    if "setting" in meta:
        setting = str(meta["setting"])
    elif "setting" in data.files:
        setting = str(data["setting"])
    else:
        setting = "class"
    if setting not in ("class", "task", "domain"):
        raise ValueError(f"unknown setting {setting!r}: class, task or domain")
    tasks = []
    for t in range(n_tasks):
        task = {k: data[f"{k}_{t}"] for k in ("x_train", "y_train", "x_test", "y_test")}
        for k in ("x_train", "x_test"):
            task[k] = np.asarray(task[k], dtype=np.float32).reshape(len(task[k]), -1)
        for k in ("y_train", "y_test"):
            task[k] = np.asarray(task[k], dtype=np.int64).reshape(-1)
        task["classes"] = sorted(set(task["y_train"].tolist()) | set(task["y_test"].tolist()))
        tasks.append(task)
    n_features = tasks[0]["x_train"].shape[1]
    n_classes = 1 + max(max(t["classes"]) for t in tasks)
    return {"tasks": tasks, "setting": setting, "n_tasks": n_tasks,
            "n_features": n_features, "n_classes": n_classes}


def _as_input(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.view(-1, 1, 28, 28) if t.shape[1] == 784 else t


def build_benchmark(scn: dict):
    """Avalanche benchmark from our tensors: one experience per task, OUR order."""
    train, test = [], []
    for t, task in enumerate(scn["tasks"]):
        label = t if scn["setting"] == "task" else 0
        for split, out in (("train", train), ("test", test)):
            x, y = _as_input(task[f"x_{split}"]), torch.from_numpy(task[f"y_{split}"])
            out.append(make_tensor_dataset(x, y, targets=y.tolist(), task_labels=label))
    return with_classes_timeline(with_task_labels(benchmark_from_datasets(train=train, test=test)))


# ---------------------------------------------------------------- model / strategies

def make_model(n_features: int, n_classes: int, hidden: int, layers: int) -> nn.Module:
    mods: list[nn.Module] = [nn.Flatten()]
    width = n_features
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, n_classes))
    return nn.Sequential(*mods)


def strategy_params(name: str, cfg: dict, n_tasks: int) -> dict:
    per_exp = max(1, int(cfg["memory"]) // max(1, n_tasks))
    defaults = {
        "naive": {}, "joint": {}, "generative_replay": {},
        "ewc": {"ewc_lambda": 100.0, "mode": "separate"},
        "lwf": {"alpha": 1.0, "temperature": 2.0},
        "replay": {"mem_size": int(cfg["memory"])},
        "gem": {"patterns_per_exp": per_exp, "memory_strength": 0.5},
        "agem": {"patterns_per_exp": per_exp, "sample_size": int(cfg["batch_size"])},
    }[name]
    return {**defaults, **cfg.get(name, {})}


def make_strategy(name: str, model: nn.Module, cfg: dict, params: dict):
    common = {
        "optimizer": torch.optim.Adam(model.parameters(), lr=float(cfg["lr"])),
        "criterion": nn.CrossEntropyLoss(),
        "train_mb_size": int(cfg["batch_size"]), "train_epochs": int(cfg["epochs"]),
        "eval_mb_size": int(cfg["eval_batch_size"]), "device": cfg["device"],
        "evaluator": EvaluationPlugin(loggers=[]), "eval_every": -1,
    }
    cls = {"naive": Naive, "joint": JointTraining, "ewc": EWC, "lwf": LwF, "replay": Replay,
           "gem": GEM, "agem": AGEM, "generative_replay": GenerativeReplay}[name]
    if name == "joint":
        common.pop("eval_every")
    return cls(model=model, **common, **params)


def memory_samples(name: str, strategy, scn: dict) -> int:
    if name == "joint":
        return int(sum(len(t["y_train"]) for t in scn["tasks"]))
    total = 0
    for p in getattr(strategy, "plugins", []):
        pname = type(p).__name__
        if pname == "ReplayPlugin":
            total += len(p.storage_policy.buffer)
        elif pname == "GEMPlugin":
            total += sum(int(v.shape[0]) for v in p.memory_x.values())
        elif pname == "AGEMPlugin":
            total += sum(len(b) for b in p.buffers)
    return total


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model: nn.Module, scn: dict, device: str, batch: int) -> list[float]:
    model.eval()
    accs = []
    for task in scn["tasks"]:
        x, y = _as_input(task["x_test"]), torch.from_numpy(task["y_test"])
        mask = None
        if scn["setting"] == "task":
            mask = torch.full((scn["n_classes"],), float("-inf"))
            mask[task["classes"]] = 0.0
        correct = 0
        for i in range(0, len(y), batch):
            out = model(x[i:i + batch].to(device)).cpu()
            if mask is not None:
                out = out + mask
            correct += int((out.argmax(1) == y[i:i + batch]).sum())
        accs.append(correct / max(1, len(y)))
    model.train()
    return accs


def seed_everything(seed: int) -> None:
    RNGManager.set_random_seeds(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_one(name: str, seed: int, scn: dict, cfg: dict) -> dict:
    seed_everything(seed)
    bm = build_benchmark(scn)
    model = make_model(scn["n_features"], scn["n_classes"], int(cfg["hidden"]), int(cfg["layers"]))
    model.to(cfg["device"])
    params = strategy_params(name, cfg, scn["n_tasks"])
    strategy = make_strategy(name, model, cfg, params)
    matrix, train_seconds = [], 0.0
    # Avalanche's progress output goes to stderr: stdout may carry the JSON result.
    with contextlib.redirect_stdout(sys.stderr):
        if name == "joint":
            started = time.perf_counter()
            strategy.train(bm.train_stream, eval_streams=[])
            train_seconds += time.perf_counter() - started
            matrix.append(evaluate(model, scn, cfg["device"], int(cfg["eval_batch_size"])))
        else:
            for exp in bm.train_stream:
                started = time.perf_counter()
                strategy.train(exp, eval_streams=[])
                train_seconds += time.perf_counter() - started
                matrix.append(evaluate(model, scn, cfg["device"], int(cfg["eval_batch_size"])))
    return {"strategy": name, "seed": seed, "matrix": matrix,
            "final_accuracy": float(np.mean(matrix[-1])), "train_seconds": train_seconds,
            "memory_samples": memory_samples(name, strategy, scn), "params": params}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--config", type=Path, help="config JSON file (defaults otherwise)")
    parser.add_argument("--out", type=Path, help="result JSON file (stdout otherwise)")
    args = parser.parse_args(argv)
    cfg = {**DEFAULTS, **(json.loads(args.config.read_text()) if args.config else {})}
    torch.set_num_threads(int(cfg["threads"]))
    scn = load_scenario(args.scenario)
    names = [ALIASES.get(s.lower(), s.lower()) for s in cfg["strategies"]]
    for s in names:
        if s not in ALL_STRATEGIES:
            raise SystemExit(f"unknown strategy {s!r}; known: {', '.join(ALL_STRATEGIES)}")
    results = []
    for seed in cfg["seeds"]:
        for name in names:
            r = run_one(name, int(seed), scn, cfg)
            log(f"[avalanche] {name:<18} seed {seed}: final {r['final_accuracy']:.3f} "
                f"train {r['train_seconds']:.1f} s memory {r['memory_samples']}")
            results.append(r)
    out = {"avalanche_version": avalanche.__version__, "torch_version": torch.__version__,
           "setting": scn["setting"], "n_tasks": scn["n_tasks"], "config": cfg,
           "results": results}
    text = json.dumps(out)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
