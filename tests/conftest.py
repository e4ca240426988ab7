"""Shared fixtures: embedded apps on a temporary data dir, and real Postgres and Redis.

Integration fixtures skip with a clear reason when a service is not reachable; with ``CI=true``
they fail instead, so CI can never pass by skipping what it must test.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import upgrade
from service.settings import Settings

PG_HOST, PG_PORT = os.environ.get("TEST_PG_HOST", "127.0.0.1"), int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
REDIS_HOST, REDIS_PORT = os.environ.get("TEST_REDIS_HOST", "127.0.0.1"), int(os.environ.get("TEST_REDIS_PORT", "6379"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(service: str, host: str, port: int) -> None:
    """Skip (or, under CI, fail) when ``host:port`` does not accept connections."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{service} is not reachable at {host}:{port} ({exc})"
        if IN_CI:
            pytest.fail(f"{message}; CI must run the integration tests", pytrace=False)
        pytest.skip(f"integration test skipped: {message}")


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Embedded settings unless ``overrides`` say otherwise. Embedded jobs run on threads of the test
    process (``inprocess``), so that a test may stand in for ``run_job``; the default embedded
    executor, a job process, is tested on its own (tests/service/test_job_process.py) and by every
    test that starts ``brain serve``. With a Redis URL, jobs follow the default (Celery)."""
    jobs = "auto" if overrides.get("redis_url") else "inprocess"
    base = {"data_dir": data_dir, "redis_url": None, "database_url": None, "broker_url": None, "jobs": jobs,
            "sleep_check_seconds": 0.2}
    return Settings(**{**base, **overrides})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = make_settings(tmp_path / "var")
    upgrade(s.database_url)
    return s


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The app of ``settings`` behind a real uvicorn server on a free port, in a thread; its URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """The embedded app (the ``settings`` fixture) behind a real HTTP server."""
    with serve(settings) as url:
        yield url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh Postgres database for this test session, dropped at the end."""
    require("PostgreSQL", PG_HOST, PG_PORT)
    from sqlalchemy import create_engine, text

    name = f"pb_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database number of its own, flushed before and after the session."""
    require("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{os.environ.get('TEST_REDIS_DB', '13')}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()
