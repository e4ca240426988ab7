"""The history checker (``bench.history``) on the full stack: Postgres (a fresh database), Redis (a
private ``redis-server`` when installed), two ``brain serve`` and two ``brain worker`` processes;
clients in threads and a client process; a worker killed mid-job, an API killed mid-load, and a
writer-lock timeout of a few seconds with jobs that run longer. The checker must find nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.history.config import Config
from tests.bench.test_history import assert_no_anomalies
from tests.conftest import PG_HOST, PG_PORT, PG_USER, require

pytestmark = pytest.mark.integration

# Before issue 14's fixes, with the short lock, some runs found two wake jobs of a brain at once (its
# lock expired under the first) learning the same rows, and versions published while a sleep held
# the lock (docs/reliability.md, "The history checker").


def test_a_short_full_stack_run_with_faults_has_no_anomalies(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from bench.history.run import run

    require("PostgreSQL", PG_HOST, PG_PORT)
    request.node.service_logs = lambda: [(p.name, p.read_text(errors="replace")[-20_000:])
                                         for p in sorted(tmp_path.glob("*.log"))]
    private = shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()
    config = Config(stack="full", clients=12, processes=1, process_clients=4, ops=240,
                    faults=["kill-worker", "kill-api", "short-lock"], out=tmp_path, apis=2, workers=2,
                    pg_url=f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres",
                    redis_url=None if private else request.getfixturevalue("redis_url"))
    outcome = run(config)
    figures = outcome.figures
    assert figures["faults_injected"] == ["kill-worker", "kill-api", "short-lock"], figures
    assert not figures["nemesis_errors"] and not figures["unsettled"], figures
    assert figures["by_kind_and_outcome"]["add"]["ok"] > 100
    assert_no_anomalies(outcome.report)
