"""The service under test, as real processes that can be killed with SIGKILL and restarted.

- :class:`Embedded`: one ``brain serve --data-dir D`` (SQLite, in-process jobs); a restart reuses
  the same data dir and port.
- :class:`Full`: ``brain serve`` processes and ``brain worker`` processes over Postgres (a fresh
  database on the given server, dropped at the end) and Redis (a private ``redis-server`` on a free
  port unless a URL is given). Process handling is the integration tests' (``Stack`` of
  ``tests/integration/test_full_stack.py``, ``PrivateRedis`` of ``tests/integration/test_faults.py``):
  this module needs the repository's ``tests`` package, so it runs from the repository root.

Both give the API URLs (each API keeps its port across restarts, so clients need not be told), the
``Settings`` that reach the state (the database and the version store), and ``kill_api`` /
``restart_api``; the full stack also ``kill_worker`` / ``restart_worker`` and ``worker_of``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.serve import free_port, postgres_database, service_env
from service.settings import Settings

READY_TIMEOUT = 90.0
ROOT = Path(__file__).resolve().parents[2]  # the checkout whose service runs


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name}: exited ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{log.name}: not ready after {timeout:.0f} s")
        time.sleep(0.05)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started in its own session and everything it started: a crash."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(proc)


def job_pid(by: str | None) -> int | None:
    """The pid in a job event's ``by`` (``role@host:pid``), when that process is on this machine."""
    if not by or "@" not in by or ":" not in by:
        return None
    host, _, pid = by.split("@", 1)[1].rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


class Embedded:
    kind = "embedded"

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.data_dir = work / "data"
        self.port = free_port()
        self.env = service_env(self.data_dir, **env)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port}"]

    @property
    def apis(self) -> int:
        return 1

    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, database_url=None, redis_url=None, broker_url=None, jobs="inprocess",
                        keep_versions=int(self.env.get("BRAIN_KEEP_VERSIONS", 10)))

    def start(self) -> None:
        self.restart_api(0)

    def restart_api(self, index: int = 0) -> None:
        self.starts += 1
        log = self.work / f"api-{self.starts}.log"
        cmd = [sys.executable, "-m", "brain_cli", "serve", "--data-dir", str(self.data_dir),
               "--host", "127.0.0.1", "--port", str(self.port)]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=ROOT)
        _wait_ready(self.urls[0], self.proc, log)

    def kill_api(self, index: int = 0) -> int:
        assert self.proc is not None
        pid = self.proc.pid
        _kill_group(self.proc)
        return pid

    def worker_of(self, pid: int) -> int | None:
        """The API process runs the jobs: its index when ``pid`` is it."""
        return 0 if self.proc is not None and pid == self.proc.pid else None

    def kill_worker(self, index: int) -> int:
        return self.kill_api(index)

    def restart_worker(self, index: int) -> None:
        self.restart_api(index)

    def close(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


class Full:
    kind = "full"

    def __init__(self, work: Path, env: dict[str, str], *, pg_url: str, redis_url: str | None,
                 apis: int = 2, workers: int = 2) -> None:
        self.work, self.extra, self.pg_admin, self.redis_url = work, env, pg_url, redis_url
        self._apis, self._workers = apis, workers
        self.ports = [free_port() for _ in range(apis)]
        self.api_procs: list[subprocess.Popen | None] = [None] * apis
        self.worker_procs: list[subprocess.Popen | None] = [None] * workers
        self.exit = contextlib.ExitStack()
        self.stack = None

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    @property
    def apis(self) -> int:
        return self._apis

    def settings(self) -> Settings:
        return self.stack.settings

    def start(self) -> None:
        from service.db import upgrade
        from tests.integration.test_full_stack import Stack

        database_url = self.exit.enter_context(postgres_database(self.pg_admin))
        redis_url = self.redis_url or self._private_redis()
        upgrade(database_url)
        data_dir = self.work / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.stack = Stack(self.work, data_dir, database_url, redis_url)
        self.exit.callback(self.stack.close)
        self.stack.configure(**{k.removeprefix("BRAIN_").lower(): v for k, v in self.extra.items()
                                if k.startswith("BRAIN_")})
        self.stack.env.update({k: v for k, v in self.extra.items() if not k.startswith("BRAIN_")})
        # the ``brain`` script imports the installed package (maybe another checkout's): this one's first
        self.stack.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), self.stack.env.get("PYTHONPATH")]))
        self.stack.redis.flushdb()  # a given Redis database is this run's alone
        for i in range(self._workers):
            self.restart_worker(i)
        for i in range(self._apis):  # started together, then waited for
            self._spawn_api(i)
        for i in range(self._apis):
            self._wait_api(i)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.stack._pong():
            if time.monotonic() > deadline:
                raise RuntimeError("no worker answered a ping")

    def _private_redis(self) -> str:
        from tests.integration.test_faults import PrivateRedis

        if not (shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()):
            raise RuntimeError("no redis-server to start a private Redis: give --redis-url")
        redis = PrivateRedis(self.work)
        redis.start()
        self.exit.callback(redis.stop)
        return redis.url

    def restart_api(self, index: int) -> None:
        self._spawn_api(index)
        self._wait_api(index)

    def _spawn_api(self, index: int) -> None:
        port = str(self.ports[index])
        self.api_procs[index] = self.stack._spawn("api", "serve", "--host", "127.0.0.1", "--port", port)

    def _wait_api(self, index: int) -> None:
        proc = self.api_procs[index]
        log = next(path for _, p, path in self.stack.procs if p is proc)
        _wait_ready(self.urls[index], proc, log)

    def kill_api(self, index: int) -> int:
        proc = self.api_procs[index]
        self.stack.kill(proc)
        return proc.pid

    def restart_worker(self, index: int) -> None:
        self.worker_procs[index] = self.stack._spawn("worker", "worker", "--concurrency", "1")

    def kill_worker(self, index: int) -> int:
        proc = self.worker_procs[index]
        self.stack.kill(proc)
        return proc.pid

    def worker_of(self, pid: int) -> int | None:
        """The index of the worker whose process group ``pid`` (a pool process) belongs to."""
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            return None
        return next((i for i, p in enumerate(self.worker_procs) if p is not None and p.pid == group), None)

    def close(self) -> None:
        self.exit.close()
