"""The reference library, Avalanche, in a virtual environment of its own.

Avalanche is no dependency of the project: the quality benchmark creates a separate
venv (default ``.bench-venv/avalanche``, git-ignored), installs ``avalanche-lib``
there with the SAME torch/torchvision releases as the project, and runs
``bench/avalanche_runner.py`` in it as a subprocess on a scenario written to an
``.npz`` file (see that script for the formats). Stdlib only: this module is
imported from the project venv.

    python -m bench.avalanche_env --check     # create the env, run a tiny scenario
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AVALANCHE_VERSION = "0.6.0"
TORCH_VERSION = "2.14.1"
TORCHVISION_VERSION = "0.29.1"
REQUIREMENTS = [
    f"avalanche-lib=={AVALANCHE_VERSION}",
    f"torch=={TORCH_VERSION}",
    f"torchvision=={TORCHVISION_VERSION}",
    "numpy",
    # GEM solves its QP with qpsolvers.solve_qp(..., solver="quadprog"); avalanche-lib
    # asks for qpsolvers[open_source_solvers], but the release pip resolves (qpsolvers
    # 4.13) brings no solver at all (available_solvers == []), so GEM fails without it.
    "quadprog",
]
DEFAULT_ENV = Path(".bench-venv/avalanche")
RUNNER = Path(__file__).resolve().with_name("avalanche_runner.py")
STAMP = "bench-avalanche.stamp"
# Nothing may be fetched at run time: we hand the runner tensors, never dataset names.
RUN_ENV = {
    "WANDB_MODE": "disabled",
    "WANDB_SILENT": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONWARNINGS": "ignore",
    "PYTHONHASHSEED": "0",
}


def env_python(path: Path) -> Path:
    return Path(path) / "bin" / "python"


def install_commands(path: Path, base_python: str = sys.executable) -> list[list[str]]:
    """The commands that create the venv and install the pinned packages in it."""
    path = Path(path)
    py = str(env_python(path))
    return [
        [base_python, "-m", "venv", str(path)],
        [py, "-m", "pip", "install", "--quiet", *REQUIREMENTS],
        [py, "-c", ("import avalanche, torch, torchvision, numpy, quadprog; "
                   "print(avalanche.__version__, torch.__version__, torchvision.__version__)")],
    ]


def _stamp_text() -> str:
    return json.dumps({"requirements": REQUIREMENTS})


def ensure_env(path: Path = DEFAULT_ENV, *, quiet: bool = False) -> Path:
    """Create (once) the Avalanche venv at ``path``; return its python.

    Idempotent: a stamp file records the pinned requirements once ``import avalanche``
    has worked there; with the same stamp nothing runs again."""
    path = Path(path).absolute()  # absolute(), not resolve(): bin/python is a symlink
    python = env_python(path)
    stamp = path / STAMP
    if python.exists() and stamp.exists() and stamp.read_text() == _stamp_text():
        return python
    started = time.monotonic()
    base = sys.executable
    for cmd in install_commands(path, base):
        if cmd[1:3] == ["-m", "venv"] and python.exists():
            continue
        if not quiet:
            print("+", " ".join(cmd), file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"creating the Avalanche env failed ({' '.join(cmd[:4])}...): "
                f"{_tail(proc.stderr or proc.stdout)}")
        if not quiet and proc.stdout.strip():
            print(proc.stdout.strip(), file=sys.stderr)
    stamp.write_text(_stamp_text())
    if not quiet:
        print(f"Avalanche env ready in {time.monotonic() - started:.0f} s: {python}", file=sys.stderr)
    return python


def _tail(text: str, n: int = 3000) -> str:
    return text[-n:] if text else "(no output)"


def runner_command(python: Path, scenario_npz: Path, config_json: Path, out_json: Path) -> list[str]:
    return [str(python), str(RUNNER), "--scenario", str(scenario_npz),
            "--config", str(config_json), "--out", str(out_json)]


def run(scenario_npz: Path, config: dict, python: Path, *, timeout: float | None = None,
        stream_stderr: bool = False) -> dict:
    """Run the Avalanche strategies of ``config`` on the scenario; the parsed result.

    Raises ``RuntimeError`` with the tail of the runner's stderr when it fails."""
    with tempfile.TemporaryDirectory(prefix="bench-avalanche-") as tmp:
        cfg = Path(tmp) / "config.json"
        out = Path(tmp) / "result.json"
        cfg.write_text(json.dumps(config))
        cmd = runner_command(Path(python).absolute(), Path(scenario_npz).absolute(), cfg, out)
        env = {**os.environ, **RUN_ENV}
        env.pop("PYTHONPATH", None)  # the project's packages must not leak in
        proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE,
                              stderr=None if stream_stderr else subprocess.PIPE,
                              text=True, env=env, timeout=timeout, cwd=tmp)
        if proc.returncode != 0:
            raise RuntimeError(f"avalanche runner failed (exit {proc.returncode}): "
                               f"{_tail(proc.stderr) if proc.stderr is not None else '(stderr shown above)'}")
        if not out.exists():
            raise RuntimeError(f"avalanche runner wrote no result: {_tail(proc.stderr or '')}")
        return json.loads(out.read_text())


def write_scenario(path: Path, tasks, setting: str = "class") -> Path:
    """Write tasks (objects with x_train/y_train/x_test/y_test, e.g. ``bench.data.Task``)
    in the runner's npz format. numpy is imported lazily (the module stays stdlib-only)."""
    import numpy as np

    arrays = {"n_tasks": np.array(len(tasks)), "setting": np.array(setting)}
    for t, task in enumerate(tasks):
        arrays[f"x_train_{t}"] = np.asarray(task.x_train, dtype=np.float32).reshape(len(task.x_train), -1)
        arrays[f"y_train_{t}"] = np.asarray(task.y_train, dtype=np.int64)
        arrays[f"x_test_{t}"] = np.asarray(task.x_test, dtype=np.float32).reshape(len(task.x_test), -1)
        arrays[f"y_test_{t}"] = np.asarray(task.y_test, dtype=np.int64)
    path = Path(path)
    np.savez(path, **arrays)
    return path


def _smoke(python: Path) -> dict:
    """A tiny synthetic class-incremental scenario (2 tasks x 2 classes), every strategy."""
    from types import SimpleNamespace

    import numpy as np

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 784)).astype(np.float32)

    def sample(classes, n):
        y = np.repeat(np.array(classes, dtype=np.int64), n)
        x = np.clip(0.5 + 0.2 * centers[y] + 0.05 * rng.normal(size=(len(y), 784)), 0, 1)
        return x.astype(np.float32), y

    tasks = []
    for cls in [(0, 1), (2, 3)]:
        xtr, ytr = sample(cls, 64)
        xte, yte = sample(cls, 16)
        tasks.append(SimpleNamespace(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte))
    config = {"strategies": ["naive", "joint", "ewc", "lwf", "replay", "gem", "agem",
                             "generative_replay"],
              "seeds": [0], "epochs": 2, "batch_size": 32, "lr": 0.01, "hidden": 32, "memory": 20, "threads": 1,
              "gem": {"patterns_per_exp": 8}, "agem": {"patterns_per_exp": 8, "sample_size": 8}}
    with tempfile.TemporaryDirectory(prefix="bench-avalanche-smoke-") as tmp:
        npz = write_scenario(Path(tmp) / "smoke.npz", tasks, "class")
        return run(npz, config, python, stream_stderr=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", type=Path, default=DEFAULT_ENV, help="venv folder")
    parser.add_argument("--check", action="store_true", help="run a tiny smoke scenario")
    args = parser.parse_args(argv)
    started = time.monotonic()
    python = ensure_env(args.env)
    print(f"env: {python} ({time.monotonic() - started:.0f} s)")
    if args.check:
        result = _smoke(python)
        print(f"avalanche {result['avalanche_version']}, torch {result['torch_version']}")
        for r in result["results"]:
            final = r["matrix"][-1]
            print(f"  {r['strategy']:<18} seed {r['seed']}  final row {final}  "
                  f"train {r['train_seconds']:.1f} s  memory {r['memory_samples']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
