"""Which of our files a labelled sample and a prediction pass through (issue 16, "one home").

    python -m bench.trace            # the lists, as in the README's "How it works"
    python -m bench.trace --json out.json

The embedded app runs in this process (Starlette's TestClient) on a temporary data dir. A
profiler hook on every thread records the files of this repository whose functions run while:

- **sample**: ``POST /v1/brains/{name}/samples`` of a task the brain knows is answered, then the
  wake job it submitted learns the samples and publishes a version. The job is run here, on the
  tracing thread, by ``service.orchestration.run_job`` (the executor only records the id), so the
  count does not depend on where the service runs its jobs;
- **sample, new task**: the same with a task the brain has not seen: registering it checks the
  model's size budget (``service.budgets``), which sizes a learner with one task more;
- **predict**: ``POST /v1/brains/{name}/predict`` on a brain whose serving snapshot is warm (the
  steady state: the snapshot is loaded by an earlier prediction).

Files are reported by package; ``service/app.py``, ``service/api/authgate.py``,
``service/api/fastjson.py``, ``service/api/deps.py`` and ``service/errors.py`` are the generic
HTTP plumbing every request goes through, listed apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "models", "workers", "brain_client", "bench", "brain_cli")
SELF = "bench/trace.py"  # the tracer's own frames
PLUMBING = frozenset({"service/app.py", "service/api/authgate.py", "service/api/fastjson.py",
                      "service/api/deps.py", "service/errors.py"})


class FileTrace:
    """The repository files whose functions are called while ``recording`` is on, on any thread,
    and the calls between them: ``(caller file, function) -> (callee file, function)``, the caller
    being the nearest of our frames below the call."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.calls: set[tuple[str, str, str, str]] = set()
        self.recording = False

    def hook(self, frame, event: str, arg) -> None:  # noqa: ANN001 - sys.setprofile's signature
        if event != "call" or not self.recording:
            return
        callee = _ours(frame.f_code.co_filename)
        if callee is None:
            return
        self.files.add(callee)
        below = frame.f_back
        while below is not None and _ours(below.f_code.co_filename) is None:
            below = below.f_back
        if below is not None:
            caller = _ours(below.f_code.co_filename)
            if caller != callee:
                self.calls.add((caller, below.f_code.co_name, callee, frame.f_code.co_name))

    def returns(self) -> list[str]:
        """Calls from a file into one that also calls it (in this recording): ``a.f -> b.g``."""
        edges = {(a, b) for a, _, b, _ in self.calls}
        return sorted(f"{a}:{f} -> {b}:{g}" for a, f, b, g in self.calls if (b, a) in edges)

    @contextmanager
    def installed(self) -> Iterator[None]:
        sys.setprofile(self.hook)
        threading.setprofile(self.hook)
        try:
            yield
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]

    def during(self, work: Callable[[], object]) -> list[str]:
        self.files.clear()
        self.calls.clear()
        self.recording = True
        try:
            work()
        finally:
            self.recording = False
        return sorted(self.files)


def _ours(path: str) -> str | None:
    """``path`` relative to the repository when it is a file of ours (not the tracer's), else None."""
    if not path.startswith(str(ROOT)):
        return None
    relative = Path(path).relative_to(ROOT).as_posix()
    return relative if relative.split("/", 1)[0] in PACKAGES and relative != SELF else None


class _Recorded:
    """An executor that runs nothing: it keeps the ids of the jobs dispatched to it."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def dispatch(self, job_id: str, kind: str) -> None:
        self.ids.append(job_id)

    def shutdown(self) -> None:
        pass


def trace(data_dir: Path) -> dict[str, dict[str, list[str]]]:
    """``{"files": {path: files}, "returns": {path: calls back into a caller}}`` for each path."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.db import upgrade
    from service.orchestration import run_job
    from service.settings import Settings

    # the drift watch's thread (a consumer of what was served, on a timer) is kept out of the paths
    settings = Settings(data_dir=data_dir, redis_url=None, database_url=None, broker_url=None, jobs="inprocess",
                        drift_check_seconds=3600)
    upgrade(settings.database_url)
    files = FileTrace()
    rows = [{"x": [float(i % 7), float(i % 3), 1.0, 0.5], "label": "ab"[i % 2]} for i in range(64)]
    with files.installed(), TestClient(create_app(settings)) as client:
        rt = client.app.state.runtime
        recorded = rt.jobs.executor = _Recorded()
        assert client.post("/v1/brains", json={"name": "t", "input": {"kind": "vector", "shape": [4]}}).status_code == 201
        client.post("/v1/brains/t/samples", json={"task": "warm", "samples": rows[:32]})
        for job_id in recorded.ids:
            run_job(rt, job_id)
        recorded.ids.clear()
        predict = {"inputs": [{"x": [1.0, 2.0, 1.0, 0.5]}]}
        assert client.post("/v1/brains/t/predict", json=predict).status_code == 200

        def sample(task: str, part: list[dict]) -> Callable[[], None]:
            def work() -> None:
                recorded.ids.clear()
                answer = client.post("/v1/brains/t/samples", json={"task": task, "samples": part})
                assert answer.status_code == 202, answer.text
                for job_id in recorded.ids:
                    assert run_job(rt, job_id)["learned"] == len(part)
            return work

        traced: dict[str, dict[str, list[str]]] = {"files": {}, "returns": {}}

        def record(path: str, work: Callable[[], object]) -> None:
            traced["files"][path] = files.during(work)
            traced["returns"][path] = files.returns()

        record("sample", sample("warm", rows[32:48]))
        record("sample, new task", sample("t1", rows[48:]))
        assert client.post("/v1/brains/t/predict", json=predict).status_code == 200  # warm again
        record("predict", lambda: client.post("/v1/brains/t/predict", json=predict))
    return traced


def report(traced: dict[str, dict[str, list[str]]]) -> str:
    lines = []
    for path, files in traced["files"].items():
        ours = [f for f in files if f not in PLUMBING]
        plumbing = [f for f in files if f in PLUMBING]
        lines.append(f"{path}: {len(files)} files, {len(ours)} without the HTTP plumbing")
        for package in PACKAGES:
            group = [f for f in ours if f.split("/", 1)[0] == package]
            if group:
                lines.append(f"  {package}: {', '.join(group)}")
        lines.append(f"  plumbing: {', '.join(plumbing)}")
        lines.append("  calls back into a caller's file: " + ("; ".join(traced["returns"][path]) or "none"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="also write the lists here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pb-trace-") as work:
        traced = trace(Path(work))
    print(report(traced))
    if args.json:
        args.json.write_text(json.dumps(traced, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
