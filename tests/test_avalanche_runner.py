"""The Avalanche side of the quality benchmark, without the Avalanche venv.

``bench/avalanche_env.py`` must build the right commands and config files, and
``bench/avalanche_runner.py`` (run inside the other venv) must never import the
project's packages. The end-to-end check, which creates the real venv (a few GB),
runs only with ``BENCH_AVALANCHE=1``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench import avalanche_env

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "bench" / "avalanche_runner.py"
PROJECT_PACKAGES = {"bench", "service", "models", "workers", "tests", "plastic_brain"}
ALLOWED_THIRD_PARTY = {"numpy", "torch", "avalanche"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: would be a project package
                roots.add("." * node.level + (node.module or ""))
            else:
                roots.add(node.module.split(".")[0])
    return roots


def test_runner_imports_only_stdlib_numpy_torch_avalanche() -> None:
    roots = _imported_roots(RUNNER)
    assert not roots & PROJECT_PACKAGES, roots & PROJECT_PACKAGES
    assert not any(r.startswith(".") for r in roots)
    others = {r for r in roots - ALLOWED_THIRD_PARTY if r not in sys.stdlib_module_names}
    assert others == {"__future__"} or not others, others


def test_env_module_is_stdlib_only_at_import_time() -> None:
    tree = ast.parse((ROOT / "bench" / "avalanche_env.py").read_text())
    top = set()
    for node in tree.body:  # module level only: numpy is imported lazily inside functions
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add(node.module.split(".")[0])
    assert all(r in sys.stdlib_module_names or r == "__future__" for r in top), top


def test_install_commands_pin_the_project_torch(tmp_path: Path) -> None:
    cmds = avalanche_env.install_commands(tmp_path / "venv", "/usr/bin/python3")
    assert cmds[0] == ["/usr/bin/python3", "-m", "venv", str(tmp_path / "venv")]
    pip = cmds[1]
    assert pip[:4] == [str(tmp_path / "venv" / "bin" / "python"), "-m", "pip", "install"]
    assert "avalanche-lib==0.6.0" in pip
    assert "torch==2.14.1" in pip and "torchvision==0.29.1" in pip
    assert "quadprog" in pip  # GEM's QP solver
    assert "import avalanche" in cmds[2][-1]


def test_ensure_env_runs_once_then_uses_the_stamp(tmp_path: Path, monkeypatch) -> None:
    calls = []
    env = tmp_path / "venv"

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        if cmd[1:3] == ["-m", "venv"]:
            (env / "bin").mkdir(parents=True)
            (env / "bin" / "python").write_text("")
        return subprocess.CompletedProcess(cmd, 0, stdout="0.6.0\n", stderr="")

    monkeypatch.setattr(avalanche_env.subprocess, "run", fake_run)
    python = avalanche_env.ensure_env(env, quiet=True)
    assert python == env.absolute() / "bin" / "python"
    assert [c[1:3] for c in calls] == [["-m", "venv"], ["-m", "pip"], ["-c", calls[2][2]]]
    assert (env / avalanche_env.STAMP).exists()
    calls.clear()
    assert avalanche_env.ensure_env(env, quiet=True) == python
    assert calls == []  # idempotent


def test_ensure_env_reports_pip_failure(tmp_path: Path, monkeypatch) -> None:
    def fake_run(cmd, **kwargs):
        if cmd[1:3] == ["-m", "venv"]:
            (tmp_path / "v" / "bin").mkdir(parents=True)
            (tmp_path / "v" / "bin" / "python").write_text("")
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: no matching distribution")

    monkeypatch.setattr(avalanche_env.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="no matching distribution"):
        avalanche_env.ensure_env(tmp_path / "v", quiet=True)
    assert not (tmp_path / "v" / avalanche_env.STAMP).exists()


def test_run_passes_config_file_and_parses_result(tmp_path: Path, monkeypatch) -> None:
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"], seen["env"] = cmd, kwargs["env"]
        args = dict(zip(cmd[2::2], cmd[3::2]))
        seen["config"] = json.loads(Path(args["--config"]).read_text())
        Path(args["--out"]).write_text(json.dumps({"results": [], "avalanche_version": "0.6.0"}))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(avalanche_env.subprocess, "run", fake_run)
    config = {"strategies": ["naive"], "seeds": [0], "epochs": 1}
    result = avalanche_env.run(tmp_path / "s.npz", config, Path("/venv/bin/python"))
    assert result["avalanche_version"] == "0.6.0"
    assert seen["config"] == config
    assert seen["cmd"][0] == "/venv/bin/python"
    assert seen["cmd"][1] == str(RUNNER)
    assert seen["cmd"][seen["cmd"].index("--scenario") + 1] == str((tmp_path / "s.npz").absolute())
    assert seen["env"]["WANDB_MODE"] == "disabled" and "PYTHONPATH" not in seen["env"]


def test_run_raises_with_stderr_tail(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(avalanche_env.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "Traceback...\nValueError: boom"))
    with pytest.raises(RuntimeError, match="boom"):
        avalanche_env.run(tmp_path / "s.npz", {}, Path("/venv/bin/python"))


def test_write_scenario_format(tmp_path: Path) -> None:
    tasks = [SimpleNamespace(x_train=np.zeros((4, 28, 28)), y_train=[0, 1, 0, 1],
                             x_test=np.ones((2, 784)), y_test=[0, 1]) for _ in range(3)]
    path = avalanche_env.write_scenario(tmp_path / "s.npz", tasks, "task")
    data = np.load(path)
    assert int(data["n_tasks"]) == 3 and str(data["setting"]) == "task"
    assert data["x_train_2"].shape == (4, 784) and data["x_train_2"].dtype == np.float32
    assert data["y_test_1"].dtype == np.int64


@pytest.mark.skipif(os.environ.get("BENCH_AVALANCHE") != "1",
                    reason="creates the Avalanche venv (several GB); set BENCH_AVALANCHE=1")
def test_real_env_smoke() -> None:
    python = avalanche_env.ensure_env(ROOT / avalanche_env.DEFAULT_ENV)
    result = avalanche_env._smoke(python)
    assert result["avalanche_version"] == "0.6.0"
    names = {r["strategy"] for r in result["results"]}
    assert names == {"naive", "joint", "ewc", "lwf", "replay", "gem", "agem", "generative_replay"}
    for r in result["results"]:
        assert all(0.0 <= a <= 1.0 for row in r["matrix"] for a in row)
