"""The client installs and works alone: ``pip install ./client`` into a fresh virtual environment
(no system site-packages) gives ``brain_client`` and ``brain-client`` without torch or the
service, and they drive a real embedded service over HTTP."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

# Runs inside the client's venv against the service at argv[1].
SESSION = textwrap.dedent("""
    import importlib.util, sys
    import numpy as np
    from brain_client import Client

    absent = [m for m in ("torch", "service", "models", "workers", "bench", "fastapi") if importlib.util.find_spec(m)]
    assert not absent, f"importable in the client's venv: {absent}"
    x = np.concatenate([np.tile([1.0, 0, 0, 0], (20, 1)), np.tile([0, 0, 0, 1.0], (20, 1))]).astype("float32")
    x += np.random.default_rng(0).normal(0, 0.05, x.shape).astype("float32")
    y = ["left"] * 20 + ["right"] * 20
    with Client(sys.argv[1]) as client:
        client.create_brain("alone", kind="vector", shape=[4])
        learned = client.brain("alone").learn(x, y, task="t1", wait=True)
        answer = client.brain("alone").predict(np.array([[0.9, 0.1, 0, 0], [0, 0, 0.1, 0.9]], "float32"))
    assert learned.accepted == 40 and learned.version is not None, learned
    assert [p.label for p in answer.predictions] == ["left", "right"], answer
    print("client alone: ok, version", answer.version)
""")


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the client distribution, built from a copy of client/ and brain_client/
    (pip builds in the source folder; the copy keeps the work tree clean)."""
    base = tmp_path_factory.mktemp("client-install")
    for part in ("client", "brain_client"):
        shutil.copytree(ROOT / part, base / "src" / part, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(base / "src" / "client")],
                         env=_clean_env(), capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return venv


def _clean_env() -> dict[str, str]:
    """This process's environment without what would put the repository on the venv's path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _run(venv: Path, *argv: str, cwd: Path) -> str:
    done = subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=cwd, env=_clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_client_alone_drives_a_real_service(client_venv: Path, live_server: str, tmp_path: Path) -> None:
    assert "client alone: ok" in _run(client_venv, "python", "-c", SESSION, live_server, cwd=tmp_path)
    listed = _run(client_venv, "brain-client", "brains", "list", "--url", live_server, cwd=tmp_path)
    assert "alone" in listed and "vector [4]" in listed
    assert "demo" in _run(client_venv, "brain-client", "--help", cwd=tmp_path)
