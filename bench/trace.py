"""Which of our files a labelled sample and a prediction pass through (issue 16, "one home").

    python -m bench.trace            # the lists, as in the README's "How it works"
    python -m bench.trace --json out.json

The embedded app runs in this process (Starlette's TestClient) on a temporary data dir. A
profiler hook on every thread records the files of this repository whose functions run while:

- **sample**: ``POST /v1/brains/{name}/samples`` is answered, then the wake job it submitted
  learns the samples and publishes a version. The job is run here, on the tracing thread, by
  ``service.orchestration.run_job`` (the executor only records the id), so the count does not
  depend on where the service runs its jobs;
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
    """The repository files whose functions are called while ``recording`` is on, on any thread."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.recording = False

    def hook(self, frame, event: str, arg) -> None:  # noqa: ANN001 - sys.setprofile's signature
        if event != "call" or not self.recording:
            return
        path = frame.f_code.co_filename
        if path.startswith(str(ROOT)):
            relative = Path(path).relative_to(ROOT).as_posix()
            if relative.split("/", 1)[0] in PACKAGES and relative != SELF:
                self.files.add(relative)

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
        self.recording = True
        try:
            work()
        finally:
            self.recording = False
        return sorted(self.files)


class _Recorded:
    """An executor that runs nothing: it keeps the ids of the jobs dispatched to it."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def dispatch(self, job_id: str, kind: str) -> None:
        self.ids.append(job_id)

    def shutdown(self) -> None:
        pass


def trace(data_dir: Path) -> dict[str, list[str]]:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.db import upgrade
    from service.orchestration import run_job
    from service.settings import Settings

    settings = Settings(data_dir=data_dir, redis_url=None, database_url=None, broker_url=None, jobs="inprocess")
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

        def sample() -> None:
            answer = client.post("/v1/brains/t/samples", json={"task": "t1", "samples": rows[32:]})
            assert answer.status_code == 202, answer.text
            for job_id in recorded.ids:
                assert run_job(rt, job_id)["learned"] == 32

        traced = {"sample": files.during(sample)}
        assert client.post("/v1/brains/t/predict", json=predict).status_code == 200  # warm again
        traced["predict"] = files.during(lambda: client.post("/v1/brains/t/predict", json=predict))
    return traced


def report(traced: dict[str, list[str]]) -> str:
    lines = []
    for path, files in traced.items():
        ours = [f for f in files if f not in PLUMBING]
        plumbing = [f for f in files if f in PLUMBING]
        lines.append(f"{path}: {len(files)} files, {len(ours)} without the HTTP plumbing")
        for package in PACKAGES:
            group = [f for f in ours if f.split("/", 1)[0] == package]
            if group:
                lines.append(f"  {package}: {', '.join(group)}")
        lines.append(f"  plumbing: {', '.join(plumbing)}")
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
