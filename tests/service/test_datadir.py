"""One process owns an embedded data dir (issue 14): a second ``brain serve`` on it refuses to
start with a clear message while the first lives, and the dir is free again once the first is
gone, however it ended (kill -9 included)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service import datadir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAIN_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "brain_cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def _ready(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail("the API did not get ready")


def test_a_second_serve_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    first, url = _serve(data_dir)
    try:
        _ready(first, url)
        second, _ = _serve(data_dir)
        out, _ = second.communicate(timeout=60)
        out = " ".join(out.split())  # the console wraps long lines
        assert second.returncode == 1
        assert "in use by another plastic-brain process" in out and str(first.pid) in out
        assert httpx.get(url + "/readyz", timeout=5).status_code == 200  # the first one is untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    third, url = _serve(data_dir)  # the kernel dropped the lock with the killed process
    try:
        _ready(third, url)
    finally:
        third.terminate()
        third.wait(timeout=30)


def test_claims_are_counted_within_a_process(tmp_path: Path) -> None:
    first = datadir.claim(tmp_path)
    second = datadir.claim(tmp_path)
    first.release()
    probe = [sys.executable, "-c", f"from pathlib import Path; from service import datadir; datadir.claim(Path({str(tmp_path)!r}))"]
    assert subprocess.run(probe, capture_output=True).returncode != 0  # still held by `second`
    second.release()
    assert subprocess.run(probe, capture_output=True).returncode == 0
