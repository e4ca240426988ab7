"""Several API processes (issue 17) on the full stack: two ``brain serve`` processes, one of them
with two uvicorn workers (``--workers 2``), on different ports, sharing Postgres and Redis, each
serving every brain. A version that a worker publishes, and a promotion made through any API
process, is served by every other one at once: their serving caches hear of it through Redis
(``service.changes``), with a serving TTL far too long to explain it."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.integration import test_full_stack
from tests.integration.synthetic import Clusters
from tests.integration.test_full_stack import Stack, _create, _learn, _ok, _poll

pytestmark = pytest.mark.integration
shared, stack = test_full_stack.shared, test_full_stack.stack  # its fixtures

RUN = uuid.uuid4().hex[:8]
LABELS = ["cat", "dog", "owl"]
NEVER = 3600.0  # serving TTL: a cache that is not told keeps its version for the whole test
AT_ONCE = 3.0  # seconds an announcement may take to reach the other processes


def _versions_served(url: str, name: str, probe: list[dict], times: int) -> set[int]:
    """The versions that ``times`` predictions answered with, each on a new connection (so that the
    processes of a ``--workers`` server share them)."""
    served = set()
    for _ in range(times):
        r = httpx.post(f"{url}/v1/brains/{name}/predict", json={"inputs": probe}, timeout=30)
        served.add(_ok(r)["version"])
    return served


def test_every_api_process_serves_a_new_version_at_once(stack: Stack) -> None:
    stack.configure(serving_ttl_seconds=NEVER)
    stack.start_worker()
    # two processes importing torch at once on a busy machine can take more than a minute
    (_, one), (_, two) = stack.serve(), stack.serve("--workers", "2", ready_timeout=180)
    name = f"apis-{RUN}"
    data = Clusters(LABELS, seed=17)
    probe, _ = data.inputs(LABELS, 1, seed=99)

    def everywhere(version: int) -> bool:
        return _versions_served(one, name, probe, 2) == {version} and _versions_served(two, name, probe, 12) == {version}

    with httpx.Client(base_url=one, timeout=120) as api1, httpx.Client(base_url=two, timeout=120) as api2:
        _create(api1, name)
        assert _learn(api1, name, "t1", data.samples(LABELS, 10, seed=1))["version"] == 2
        assert everywhere(2)  # every process has loaded version 2, and would keep it for an hour
        # a version published by the worker: learned through one API process, served by all
        assert _learn(api2, name, "t1", data.samples(LABELS, 10, seed=2))["version"] == 3
        _poll(lambda: everywhere(3), "version 3 served by every API process", timeout=AT_ONCE)
        # a promotion through one API process (the other's two workers and the first)
        assert _ok(api2.post(f"/v1/brains/{name}/versions/2/promote"))["current"] is True
        _poll(lambda: everywhere(2), "version 2 served after its promotion through the second", timeout=AT_ONCE)
        assert _ok(api1.post(f"/v1/brains/{name}/versions/3/promote"))["current"] is True
        _poll(lambda: everywhere(3), "version 3 served after its promotion through the first", timeout=AT_ONCE)
