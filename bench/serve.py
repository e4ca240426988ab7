"""Serving-speed benchmark: how fast the service answers, learns and sleeps, next to its ceiling.

    python -m bench.serve                                  # embedded, plus the full stack when
                                                           # Postgres and Redis answer locally
    python -m bench.serve --quick                          # 1 s cells, 1 and 16 clients, embedded
    python -m bench.serve --stack full --duration 3 --concurrency 1,16,64

Everything runs on this machine, against services this command starts and stops itself:

- **ceiling**: a bare FastAPI app (``bare_app``: the same route, reads the body, answers a constant
  JSON) under uvicorn with the same settings as ``brain serve`` (1 worker, httptools and uvloop when
  installed, log level warning for both), and the benchmark brain's forward pass timed alone in
  this process (``service.serving.best`` on the version the service published), as
  predictions/s for batches of 1 and 64.
- **ours, embedded**: ``brain serve`` on a temporary data dir (SQLite, its default jobs: a job process;
  ``--service-env BRAIN_JOBS=inprocess`` runs them on threads of the API process), a brain
  of the default strategy taught 2,000 Fashion-MNIST images (``bench.data``).
- **load** from a separate process (``bench.loadgen``: keep-alive HTTP/1.1 on raw asyncio, one
  pre-serialised request): predict with 1 and 64 inputs per request (JSON ``x``, and the 64-input
  request as ``x_b64``) at each ``--concurrency``, on the bare app and on ours with byte-identical
  bodies; ingest (``POST /samples``, 64 per request, 16 clients).
- **time-to-learn**: seconds from the answer to a ``POST /samples`` of 16 (``wait=false``) to the
  first prediction answered by a version that holds them (the wake job's ``result.version``).
- **sleep**: seconds of a sleep with a budget of 10,000 samples (the default strategy and
  ``replay``), per 10,000 samples it actually replayed (the default rehearses at most its replay
  buffer, whatever the budget).
- **latency during a job**: 1-client predict p50/p99 against idle while the replay brain sleeps
  (budget ``--job-budget``); while it ingests 2,048-sample POSTs and wakes on them ("during
  ingest and wake": the API parses and stores each POST's 20 MB of JSON); and while one wake job
  learns a backlog posted before the cell ("during wake": ``--wake-backlog-posts`` POSTs).
- **memory**: the server's resident memory per extra brain taught and loaded for prediction.
- **full stack** (``--stack full|both``): Postgres (a database of its own, dropped at the end),
  Redis (``--redis-url``, a database number flushed before and after) and a Celery worker:
  time-to-learn, ingest, 1-input predict at 16 clients and Redis bytes per replayed sample.

Results go to ``--out`` as ``serve.json`` and ``serve.md``, and a table is printed; every figure is
shown next to its ceiling (ours/bare requests/s; for 64 inputs also predictions/s against the
forward pass alone). Both the client and the servers share this machine's CPUs: the figures are
for comparing runs on one machine, not absolute capacity.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
from fastapi import FastAPI, Request, Response

from bench.data import fashion_mnist
from bench.loadgen import percentile

PREDICT = "/v1/brains/{name}/predict"
BARE_ANSWER = b'{"version":1,"predictions":[{"label":0,"confidence":1.0}]}'
BRAIN = "bench"
DIM = 784


# -- the ceiling: a bare endpoint and the forward pass alone -----------------------------------------
def bare_app() -> FastAPI:
    """The same route as ours that reads the body and answers a constant JSON: what uvicorn and
    FastAPI cost before the service does anything (``uvicorn bench.serve:bare_app --factory``).
    ``Request`` and ``Response`` are imported at module level: FastAPI resolves the (postponed)
    annotations in this module's globals."""
    app = FastAPI()

    @app.post(PREDICT)
    async def predict(name: str, request: Request) -> Response:
        await request.body()
        return Response(content=BARE_ANSWER, media_type="application/json")

    @app.post("/v1/brains/{name}/samples")
    async def samples(name: str, request: Request) -> Response:
        await request.body()
        return Response(content=b'{"accepted":64}', media_type="application/json", status_code=202)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(content=b'{"status":"ok"}', media_type="application/json")

    return app


def forward_pass(data_dir: Path, name: str, x: np.ndarray, *, seconds: float) -> dict[str, Any]:
    """Predictions/s of the brain's current version called in-process, for batches of 1 and 64:
    loaded as the service loads it (``VersionStore.load``), predicted with the service's
    ``service.serving.best`` over every label."""
    import torch

    from service import brains
    from service.runtime import build_runtime
    from service.serving import best, class_mask
    from service.settings import Settings

    rt = build_runtime(Settings(data_dir=data_dir, database_url=None, redis_url=None, broker_url=None,
                                jobs="inprocess"), executor=False)
    try:
        with rt.db.session() as s:
            brain = brains.get_brain(s, name)
            s.expunge(brain)
        learner = rt.versions.load(brain, brain.current_version)
    finally:
        rt.close()
    every_label = class_mask(learner.num_classes, list(range(len(brain.labels))))
    default_threads = torch.get_num_threads()
    out: dict[str, Any] = {"version": brain.current_version, "by_threads": {}}
    try:
        with torch.inference_mode():
            for threads in sorted({1, default_threads}):  # the faster is the ceiling (a busy CPU
                torch.set_num_threads(threads)             # can make more threads much slower)
                timings = out["by_threads"][threads] = {}
                for batch in (1, 64):
                    rows = np.ascontiguousarray(x[:batch], dtype=np.float32)
                    for _ in range(3):  # warm-up
                        best(learner, rows, every_label)
                    calls, started = 0, time.perf_counter()
                    while time.perf_counter() - started < seconds:
                        best(learner, rows, every_label)
                        calls += 1
                    elapsed = time.perf_counter() - started
                    timings[f"batch{batch}"] = {"calls_per_s": calls / elapsed, "ms_per_call": 1000 * elapsed / calls,
                                                "predictions_per_s": calls * batch / elapsed}
    finally:
        torch.set_num_threads(default_threads)
    for batch in ("batch1", "batch64"):
        best = max(out["by_threads"], key=lambda t: out["by_threads"][t][batch]["predictions_per_s"])
        out[batch] = {**out["by_threads"][best][batch], "threads": best}
    return out


# -- processes -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mib(self) -> float:
        """Resident memory of the server process (``VmRSS``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")  # pragma: no cover


@contextlib.contextmanager
def process(name: str, cmd: list[str], env: dict[str, str], work: Path, *, health: str | None,
            timeout: float = 120) -> Iterator[Server]:
    """A subprocess (logging to ``work/<name>.log``), ready when ``health`` answers 200; always
    terminated (then killed) on the way out."""
    import httpx

    log = work / f"{name}.log"
    port = free_port()
    cmd = [part.replace("{port}", str(port)) for part in cmd]
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    server = Server(name, proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout
        while health is not None:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                if httpx.get(server.url + health, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {health} in {timeout:.0f} s: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def service_env(data_dir: Path, **brain_vars: str) -> dict[str, str]:
    """The environment of ``brain serve`` / ``brain worker``: ``BRAIN_*`` from ``brain_vars`` and
    ``--service-env`` only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAIN_")}
    env.update({"BRAIN_DATA_DIR": str(data_dir), "BRAIN_LOG_LEVEL": "WARNING", **SERVICE_ENV, **brain_vars})
    return env


SERVICE_ENV: dict[str, str] = {}  # --service-env


def serve_cmd() -> list[str]:
    return [sys.executable, "-m", "brain_cli", "serve", "--host", "127.0.0.1", "--port", "{port}"]


def bare_cmd() -> list[str]:
    # the same uvicorn settings as ``brain serve``: 1 worker, loop and http "auto" (uvloop, httptools)
    return [sys.executable, "-m", "uvicorn", "bench.serve:bare_app", "--factory", "--host", "127.0.0.1",
            "--port", "{port}", "--workers", "1", "--log-level", "warning"]


# -- the HTTP side ------------------------------------------------------------------------------------
class Api:
    """A thin httpx client on one service that raises on an error status."""

    def __init__(self, url: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=600)

    def __call__(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text[:500]}")
        return r.json() if r.content else None

    def close(self) -> None:
        self.http.close()


def samples_body(x: np.ndarray, y: np.ndarray, task: str = "t") -> bytes:
    return json.dumps({"task": task, "samples": [{"x": row.tolist(), "label": int(label)}
                                                  for row, label in zip(x, y)]}).encode()


def predict_bodies(x: np.ndarray) -> dict[str, bytes]:
    """The request bodies of the predict scenarios (the bare app gets the same bytes)."""
    b64 = [{"x_b64": base64.b64encode(row.astype("<f4").tobytes()).decode()} for row in x[:64]]
    return {
        "predict x1": json.dumps({"inputs": [{"x": x[0].tolist()}]}).encode(),
        "predict x64": json.dumps({"inputs": [{"x": row.tolist()} for row in x[:64]]}).encode(),
        "predict x64 b64": json.dumps({"inputs": b64}).encode(),
    }


def create_brain(api: Api, name: str, x: np.ndarray, y: np.ndarray, *, strategy: str | None = None,
                 batch: int = 500) -> int:
    """Create a 784-input, 10-label brain and teach it ``x, y`` (``wait=true``); its version.

    A ``replay`` brain rehearses its whole sleep budget (``sleep_share`` 1; the strategy's default
    is half), so that its sleeps are as long as the budget says."""
    spec: dict[str, Any] = {"name": name, "input": {"kind": "vector", "shape": [DIM]}, "max_labels": 10}
    if strategy:
        spec["strategy"] = strategy
    if strategy == "replay":
        spec["params"] = {"sleep_share": 1.0}
    api("POST", "/v1/brains", json=spec)
    answer: dict = {}
    for lo in range(0, len(y), batch):
        answer = api("POST", f"/v1/brains/{name}/samples", params={"wait": "true"},
                     content=samples_body(x[lo: lo + batch], y[lo: lo + batch]),
                     headers={"content-type": "application/json"})
        if answer["state"] != "succeeded":
            raise RuntimeError(f"teaching {name} failed: {answer}")
    return int(answer["version"])


def load(url: str, body: bytes, *, concurrency: int, args: argparse.Namespace, work: Path,
         expect: int = 200, duration: float | None = None) -> dict[str, Any]:
    """One cell of load from a separate ``bench.loadgen`` process."""
    body_file = work / f"body-{uuid.uuid4().hex}.json"
    body_file.write_bytes(body)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", "--url", url, "--body-file", str(body_file),
             "--concurrency", str(concurrency), "--duration", str(duration or args.duration),
             "--warmup", str(args.warmup), "--expect", str(expect)],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
        )
    finally:
        body_file.unlink(missing_ok=True)
    return json.loads(out.stdout)


def time_to_learn(api: Api, name: str, x: np.ndarray, y: np.ndarray, *, rounds: int, poll: float = 0.005,
                  timeout: float = 120) -> dict[str, Any]:
    """Seconds from the answer to a 16-sample POST (``wait=false``) to the first prediction answered
    by a version that holds them (the wake job's ``result.version`` or a later one)."""
    probe = json.dumps({"inputs": [{"x": x[0].tolist()}]}).encode()
    headers = {"content-type": "application/json"}
    seconds: list[float] = []
    versions: list[tuple[int, int]] = []  # (the wake job's version, the version that answered)
    for i in range(rounds):
        lo = (16 * i) % (len(y) - 16)
        before = api("POST", PREDICT.format(name=name), content=probe, headers=headers)["version"]
        posted = api("POST", f"/v1/brains/{name}/samples", content=samples_body(x[lo: lo + 16], y[lo: lo + 16]),
                     headers=headers)
        answered_at = time.perf_counter()
        newer: list[tuple[float, int]] = []  # (seconds, version) of answers newer than ``before``
        learned: int | None = None
        while True:
            version = api("POST", PREDICT.format(name=name), content=probe, headers=headers)["version"]
            now = time.perf_counter() - answered_at
            if version > before:
                newer.append((now, version))
                if learned is None:
                    job = api("GET", f"/v1/jobs/{posted['job']}")
                    if job["state"] == "failed":
                        raise RuntimeError(f"wake job failed: {job}")
                    if job["state"] == "succeeded":
                        learned = int(job["result"]["version"])
                if learned is not None:
                    hit = next(((t, v) for t, v in newer if v >= learned), None)
                    if hit is not None:
                        seconds.append(hit[0])
                        versions.append((learned, hit[1]))
                        break
            if now > timeout:
                raise RuntimeError(f"no new version answered within {timeout} s")
            time.sleep(poll)
    ordered = sorted(seconds)
    return {"rounds": rounds, "seconds": [round(s, 4) for s in seconds], "p50_s": percentile(ordered, 50),
            "p95_s": percentile(ordered, 95), "mean_s": statistics.fmean(seconds), "versions": versions}


def sleep_seconds(api: Api, name: str, budget: int) -> dict[str, Any]:
    """A sleep with a ``budget`` of ``budget`` samples: its job's seconds, the samples it actually
    replayed (the learner's ``Stats.samples`` in the job's result: a strategy may rehearse fewer
    than its budget, e.g. only what the replay buffer holds) and seconds per 10,000 of those."""
    api("PATCH", f"/v1/brains/{name}", json={"sleep_policy": {"budget": budget}})
    job = api("POST", f"/v1/brains/{name}/sleep", params={"wait": "true"})
    if job["state"] != "succeeded":
        raise RuntimeError(f"sleep of {name} failed: {job}")
    seconds, samples = float(job["result"]["seconds"]), int(job["result"]["samples"])
    return {"budget": budget, "samples": samples, "seconds": seconds,
            "seconds_per_10k": seconds * 10_000 / samples if samples else None,
            "version": job["result"]["version"]}


class Background:
    """Repeats a job (a blocking HTTP call) in a thread until stopped; counts the calls made."""

    def __init__(self, call) -> None:
        self.call = call
        self.stop = threading.Event()
        self.calls = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        try:
            while not self.stop.is_set():
                self.call()
                self.calls += 1
        except BaseException as exc:  # noqa: BLE001 - reported by ``join``
            self.error = exc

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()
        if self.error is not None:
            raise RuntimeError(f"the background job failed: {self.error}")


def latency_during_jobs(server: Server, api: Api, x: np.ndarray, y: np.ndarray, *, other: str,
                        args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """1-client predict on the benchmark brain: idle, while ``other`` sleeps, while it wakes."""
    body = predict_bodies(x)["predict x1"]
    url = server.url + PREDICT.format(name=BRAIN)
    out: dict[str, Any] = {"idle": load(url, body, concurrency=1, args=args, work=work, duration=args.job_duration)}
    api("PATCH", f"/v1/brains/{other}", json={"sleep_policy": {"budget": args.job_budget}})
    with Background(lambda: api("POST", f"/v1/brains/{other}/sleep", params={"wait": "true"})) as sleeping:
        time.sleep(0.2)  # the job has started
        out["during sleep"] = load(url, body, concurrency=1, args=args, work=work, duration=args.job_duration)
        out["during sleep"]["job_budget"] = args.job_budget
    big = samples_body(np.resize(x, (2048, DIM)), np.resize(y, 2048))
    post = {"content": big, "headers": {"content-type": "application/json"}}
    with Background(lambda: api("POST", f"/v1/brains/{other}/samples", params={"wait": "true"}, **post)) as waking:
        time.sleep(0.2)
        out["during ingest and wake"] = load(url, body, concurrency=1, args=args, work=work, duration=args.job_duration)
        out["during ingest and wake"]["job_samples"] = 2048
    out["during sleep"]["jobs"], out["during ingest and wake"]["jobs"] = sleeping.calls, waking.calls
    # The wake job alone: its backlog is posted (and parsed) first, then predictions are timed while
    # one job learns it, with no POST in flight; the cell counts only if the job outlived it.
    for _ in range(args.wake_backlog_posts):
        api("POST", f"/v1/brains/{other}/samples", params={"wait": "false"}, **post)
    time.sleep(0.2)
    out["during wake"] = load(url, body, concurrency=1, args=args, work=work, duration=args.job_duration)
    pending = api("GET", f"/v1/brains/{other}")["samples_pending"]
    out["during wake"].update(backlog=args.wake_backlog_posts * 2048, pending_after=pending,
                              job_outlived_cell=pending > 0)
    idle = out["idle"]["p99_ms"]
    for key in ("during sleep", "during ingest and wake", "during wake"):
        p99 = out[key]["p99_ms"]
        out[key]["p99_ratio_to_idle"] = p99 / idle if idle and p99 is not None else None
    return out


def memory_per_brain(server: Server, api: Api, x: np.ndarray, y: np.ndarray, *, brains: int, samples: int) -> dict:
    """Resident memory of the server before and after ``brains`` more brains taught and predicted on."""
    probe = {"inputs": [{"x": x[0].tolist()}]}
    before = server.rss_mib()
    for i in range(brains):
        create_brain(api, f"mem{i}", x[:samples], y[:samples])
        api("POST", PREDICT.format(name=f"mem{i}"), json=probe)
    after = server.rss_mib()
    return {"brains": brains, "samples_each": samples, "rss_before_mib": before, "rss_after_mib": after,
            "mib_per_brain": (after - before) / brains}


def predict_matrix(ours: Server, bare: Server, x: np.ndarray, args: argparse.Namespace, work: Path) -> list[dict]:
    """Every predict scenario at every concurrency, on the bare app and on ours, side by side."""
    rows = []
    for scenario, body in predict_bodies(x).items():
        for concurrency in args.concurrency:
            row: dict[str, Any] = {"scenario": scenario, "concurrency": concurrency, "inputs": 1 if scenario == "predict x1" else 64,
                                   "body_bytes": len(body)}
            for name, server in (("bare", bare), ("ours", ours)):
                row[name] = load(server.url + PREDICT.format(name=BRAIN), body, concurrency=concurrency, args=args, work=work)
            row["ratio"] = row["ours"]["rps"] / row["bare"]["rps"] if row["bare"]["rps"] else None
            for name in ("bare", "ours"):
                if row[name]["errors"]:
                    print(f"  WARNING: {name} answered {row[name]['errors']} errors: {row[name]['error_sample']}",
                          flush=True)
            rows.append(row)
            print(f"  {scenario:16s} c={concurrency:<3d} bare {row['bare']['rps']:9.1f} req/s   ours "
                  f"{row['ours']['rps']:9.1f} req/s (p99 {row['ours']['p99_ms']} ms, errors {row['ours']['errors']})",
                  flush=True)
    return rows


def ingest(server: Server, x: np.ndarray, y: np.ndarray, api: Api, args: argparse.Namespace, work: Path,
           name: str = "ingest") -> dict[str, Any]:
    """Samples/s accepted by ``POST /samples`` (64 per request, no ids, ``wait=false``) at 16
    clients, on a brain of its own; then waits for the wake jobs it queued to be done."""
    create_brain(api, name, x[:64], y[:64])
    body = samples_body(x[:64], y[:64])
    result = load(f"{server.url}/v1/brains/{name}/samples", body, concurrency=16, args=args, work=work, expect=202,
                  duration=args.ingest_duration)
    result["samples_per_s"] = result["rps"] * 64
    started = time.perf_counter()
    done = api("POST", f"/v1/brains/{name}/samples", params={"wait": "true"}, content=samples_body(x[:1], y[:1]),
               headers={"content-type": "application/json"})
    result["drain_s"] = time.perf_counter() - started
    result["drained"] = done["state"] == "succeeded"
    return result


# -- the stacks ----------------------------------------------------------------------------------------
def data(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` Fashion-MNIST training images (all 10 classes) as float32 rows in [0, 1]."""
    x, y = fashion_mnist("train")
    return np.ascontiguousarray(x[:n]), y[:n]


@contextlib.contextmanager
def phase(out: dict[str, Any], name: str) -> Iterator[None]:
    """Record the wall seconds of one part of a run in ``out["phase_seconds"]``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        out.setdefault("phase_seconds", {})[name] = round(time.perf_counter() - started, 2)


def run_embedded(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    x, y = data(args.teach)
    data_dir = work / "embedded"
    out: dict[str, Any] = {}
    with (phase(out, "total"),
          process("bare", bare_cmd(), service_env(data_dir), work, health="/healthz") as bare,
          process("ours", serve_cmd(), service_env(data_dir), work, health="/healthz") as ours):
        api = Api(ours.url)
        try:
            print(f"embedded: {ours.url} (bare app {bare.url}); teaching {len(y)} samples", flush=True)
            with phase(out, "teach"):
                started = time.perf_counter()
                out["taught"] = {"samples": len(y), "version": create_brain(api, BRAIN, x, y),
                                 "seconds": time.perf_counter() - started}
            with phase(out, "forward"):
                out["forward"] = forward_pass(data_dir, BRAIN, x, seconds=args.forward_seconds)
            print(f"  forward pass alone: {out['forward']['batch1']['predictions_per_s']:.0f} predictions/s "
                  f"(batch 1), {out['forward']['batch64']['predictions_per_s']:.0f} (batch 64)", flush=True)
            with phase(out, "predict"):
                out["predict"] = predict_matrix(ours, bare, x, args, work)
            with phase(out, "time_to_learn"):
                out["time_to_learn"] = time_to_learn(api, BRAIN, x, y, rounds=args.rounds)
            print(f"  time-to-learn p50 {out['time_to_learn']['p50_s']:.3f} s", flush=True)
            with phase(out, "ingest"):
                out["ingest"] = ingest(ours, x, y, api, args, work)
                out["ingest_bare"] = load(f"{bare.url}/v1/brains/ingest/samples", samples_body(x[:64], y[:64]),
                                              concurrency=16, args=args, work=work, expect=202,
                                              duration=args.ingest_duration)
                out["ingest_bare"]["samples_per_s"] = out["ingest_bare"]["rps"] * 64
            with phase(out, "sleep"):
                create_brain(api, "replay", x, y, strategy="replay")
                out["sleep"] = {"default": sleep_seconds(api, BRAIN, args.sleep_budget),
                                "replay": sleep_seconds(api, "replay", args.sleep_budget)}
            print("  sleep per 10k replayed: " + ", ".join(
                f"{strategy} {_f(s['seconds_per_10k'], 2)} s ({s['samples']:,} replayed)"
                for strategy, s in out["sleep"].items()), flush=True)
            with phase(out, "during_jobs"):
                out["during_jobs"] = latency_during_jobs(ours, api, x, y, other="replay", args=args, work=work)
            with phase(out, "memory"):
                out["memory"] = memory_per_brain(ours, api, x, y, brains=args.memory_brains,
                                                 samples=args.memory_samples)
        finally:
            api.close()
    return out


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database ``bench_serve_<random>`` on the server of ``admin_url``; dropped at the end."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"bench_serve_{uuid.uuid4().hex[:10]}"
    url = make_url(admin_url)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_bytes_per_sample(redis_url: str, database_url: str, name: str) -> dict[str, Any]:
    """``MEMORY USAGE`` of the brain's replay keys (``service.replay.RedisStore``) per stored sample."""
    import redis
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        brain_id = conn.execute(text("SELECT id FROM brains WHERE name = :n"), {"n": name}).scalar_one()
    engine.dispose()
    from service.replay import RedisStore

    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client, brain_id, DIM)
    stored = client.hlen(store.ky)
    used = sum(client.memory_usage(k, samples=0) or 0 for k in (store.kx, store.ky, store.kseen))
    client.close()
    return {"samples": stored, "bytes": used, "bytes_per_sample": used / stored if stored else None,
            "raw_bytes_per_sample": DIM * 4}


def run_full(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import redis
    from sqlalchemy.engine import make_url

    pg, rd = make_url(args.pg_url), make_url(args.redis_url)
    for what, host, port in (("Postgres", pg.host, pg.port or 5432), ("Redis", rd.host, rd.port or 6379)):
        if not reachable(host or "127.0.0.1", port):
            return {"skipped": f"{what} does not answer at {host}:{port}"}
    x, y = data(args.teach)
    data_dir = work / "full"
    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    out: dict[str, Any] = {}
    try:
        with postgres_database(args.pg_url) as database_url:
            env = service_env(data_dir, BRAIN_DATABASE_URL=database_url, BRAIN_REDIS_URL=args.redis_url, BRAIN_JOBS="celery")
            worker = [sys.executable, "-m", "brain_cli", "worker", "--concurrency", "1"]
            with (process("ours-full", serve_cmd(), env, work, health="/healthz") as ours,
                  process("worker", worker, env, work, health=None)):
                api = Api(ours.url)
                try:
                    print(f"full stack: {ours.url} (Postgres, Redis, a Celery worker); teaching {len(y)} samples", flush=True)
                    started = time.perf_counter()
                    out["taught"] = {"samples": len(y), "version": create_brain(api, BRAIN, x, y),
                                     "seconds": time.perf_counter() - started}
                    body = predict_bodies(x)["predict x1"]
                    out["predict x1 c16"] = load(ours.url + PREDICT.format(name=BRAIN), body, concurrency=16,
                                                 args=args, work=work)
                    out["time_to_learn"] = time_to_learn(api, BRAIN, x, y, rounds=args.rounds)
                    out["ingest"] = ingest(ours, x, y, api, args, work)
                    out["redis"] = redis_bytes_per_sample(args.redis_url, database_url, BRAIN)
                    create_brain(api, "replay", x, y, strategy="replay")
                    # the jobs run in the worker process here: the API's event loop only shares the CPUs
                    out["during_jobs"] = latency_during_jobs(ours, api, x, y, other="replay", args=args, work=work)
                finally:
                    api.close()
    finally:
        client.flushdb()
        client.close()
    return out


# -- reporting -----------------------------------------------------------------------------------------
def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _rate(cell: dict, key: str = "rps") -> str:
    if not cell["requests"]:
        return f"none completed in {cell['seconds']} s"
    return _f(cell[key])


def table_rows(report: dict) -> list[list[str]]:
    """``[figure, ours, ceiling, ours/ceiling]`` rows for the printed and the markdown table."""
    rows: list[list[str]] = []
    emb = report.get("embedded") or {}
    forward = emb.get("forward", {})
    for r in emb.get("predict", []):
        label = f"{r['scenario']}, {r['concurrency']} clients: req/s (p50/p99 ms)"
        ours, bare = r["ours"], r["bare"]
        rows.append([label, f"{_f(ours['rps'])} ({_f(ours['p50_ms'], 2)}/{_f(ours['p99_ms'], 2)}), {ours['errors']} errors",
                     f"bare {_f(bare['rps'])} ({_f(bare['p50_ms'], 2)}/{_f(bare['p99_ms'], 2)})"
                     + (f", {bare['errors']} errors" if bare["errors"] else ""), _f(r["ratio"], 3)])
        if r["inputs"] == 64 and forward:
            alone = forward["batch64"]["predictions_per_s"]
            rows.append([f"{r['scenario']}, {r['concurrency']} clients: predictions/s", _f(ours["rps"] * 64),
                         f"forward alone {_f(alone)} ({forward['batch64']['threads']} thr)",
                         _f(ours["rps"] * 64 / alone, 3)])
        elif r["inputs"] == 1 and forward:
            alone = forward["batch1"]["predictions_per_s"]
            rows.append([f"{r['scenario']}, {r['concurrency']} clients: predictions/s", _f(ours["rps"]),
                         f"forward alone {_f(alone)} ({forward['batch1']['threads']} thr)",
                         _f(ours["rps"] / alone, 3)])
    if "ingest" in emb:
        ours, bare = emb["ingest"], emb["ingest_bare"]
        rows.append(["ingest, 64/request, 16 clients: samples/s", _rate(ours, "samples_per_s"),
                     f"bare {_f(bare['samples_per_s'])}", _f(ours["samples_per_s"] / bare["samples_per_s"], 3)
                     if bare["samples_per_s"] else "-"])
    if "time_to_learn" in emb:
        t = emb["time_to_learn"]
        rows.append([f"time-to-learn, 16 samples: p50 / p95 s ({t['rounds']} rounds)", f"{t['p50_s']:.3f} / {t['p95_s']:.3f}",
                     "-", "-"])
    for strategy, s in emb.get("sleep", {}).items():
        rows.append([f"sleep, {strategy}: s per 10,000 replayed", _f(s["seconds_per_10k"], 2),
                     f"{_f(s['seconds'], 2)} s for {s['samples']:,} replayed (budget {s['budget']:,})", "-"])
    rows += during_job_rows(emb.get("during_jobs"))
    if "memory" in emb:
        m = emb["memory"]
        rows.append([f"resident memory per loaded brain ({m['brains']} brains): MiB", _f(m["mib_per_brain"], 1),
                     f"{_f(m['rss_before_mib'], 0)} -> {_f(m['rss_after_mib'], 0)} MiB", "-"])
    full = report.get("full") or {}
    if "skipped" in full:
        rows.append(["full stack", "skipped", full["skipped"], "-"])
    elif full:
        p = full["predict x1 c16"]
        bare = next((r["bare"] for r in emb.get("predict", []) if r["scenario"] == "predict x1" and r["concurrency"] == 16), None)
        rows.append(["full stack: predict x1, 16 clients: req/s (p50/p99 ms)",
                     f"{_f(p['rps'])} ({_f(p['p50_ms'], 2)}/{_f(p['p99_ms'], 2)}), {p['errors']} errors",
                     f"bare {_f(bare['rps'])}" if bare else "-", _f(p["rps"] / bare["rps"], 3) if bare else "-"])
        rows.append(["full stack: ingest, 64/request, 16 clients: samples/s", _rate(full["ingest"], "samples_per_s"),
                     "-", "-"])
        t = full["time_to_learn"]
        rows.append(["full stack: time-to-learn p50 / p95 s", f"{t['p50_s']:.3f} / {t['p95_s']:.3f}", "-", "-"])
        r = full["redis"]
        rows.append(["full stack: Redis bytes per replayed sample", _f(r["bytes_per_sample"], 0),
                     f"raw {r['raw_bytes_per_sample']} (784 float32)", _f(r["bytes_per_sample"] / r["raw_bytes_per_sample"], 2)
                     if r["bytes_per_sample"] else "-"])
        rows += during_job_rows(full.get("during_jobs"), prefix="full stack: ")
    return rows


def during_job_rows(during: dict | None, prefix: str = "") -> list[list[str]]:
    """p50/p99 of 1-client predict while a job runs, against idle (``latency_during_jobs``)."""
    if not during:
        return []
    idle, rows = during["idle"], []
    for key in ("during sleep", "during ingest and wake", "during wake"):
        d = during.get(key)
        if d is None:  # a report from before the cell existed
            continue
        if key == "during wake" and not d.get("job_outlived_cell", True):
            key += " (the job ended before the cell: raise --wake-backlog-posts)"
        rows.append([f"{prefix}predict x1, 1 client, {key}: p50/p99 ms", f"{_f(d['p50_ms'], 2)}/{_f(d['p99_ms'], 2)}",
                     f"idle {_f(idle['p50_ms'], 2)}/{_f(idle['p99_ms'], 2)}", _f(d["p99_ratio_to_idle"], 2)])
    return rows


HEADER = ["figure", "ours", "ceiling / reference", "ours / ceiling"]


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"Command: `python -m bench.serve {' '.join(report['args'])}`".rstrip(), "",
             (f"Machine: {env['cpus']} CPUs, Python {env['python']}, uvicorn http={env['http']} loop={env['loop']}, "
             f"{report['duration']} s per cell after {report['warmup']} s warm-up; the load generator shares the CPUs."),
             "", "| " + " | ".join(HEADER) + " |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(report)]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, report: dict) -> None:
    """The generated table, followed by the sections written by hand (from the first ``## ``
    heading on) that the file already held, so that a new run keeps them."""
    old = path.read_text() if path.exists() else ""
    start = old.find("\n## ")
    path.write_text(markdown(report) + (old[start:] if start >= 0 else ""))


def print_table(report: dict) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich ships with typer
        print(markdown(report))
        return
    table = Table(title="bench.serve")
    for name in HEADER:
        table.add_column(name, overflow="fold")
    for row in table_rows(report):
        table.add_row(*row)
    Console(width=160).print(table)


def environment() -> dict[str, Any]:
    def has(module: str) -> bool:
        try:
            __import__(module)
            return True
        except ImportError:
            return False

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "http": "httptools" if has("httptools") else "h11", "loop": "uvloop" if has("uvloop") else "asyncio"}


# -- command line --------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 s cells, clients 1 and 16, embedded only, smaller jobs")
    p.add_argument("--stack", choices=("embedded", "full", "both"), default=None,
                   help="default: both (the full stack skipped with a reason when Postgres or Redis does not answer)")
    p.add_argument("--duration", type=float, default=None, help="seconds per load cell (default 5; --quick 1)")
    p.add_argument("--warmup", type=float, default=None, help="seconds before each cell (default 0.5; --quick 0.3)")
    p.add_argument("--concurrency", default=None, help="clients per predict cell (default 1,16,64; --quick 1,16)")
    p.add_argument("--teach", type=int, default=None, help="samples taught first (default 2000; --quick 1000)")
    p.add_argument("--rounds", type=int, default=None, help="time-to-learn rounds (default 20; --quick 5)")
    p.add_argument("--sleep-budget", type=int, default=None, help="budget of each measured sleep, in samples (default 10000; --quick 2000)")
    p.add_argument("--wake-backlog-posts", type=int, default=12,
                   help="2,048-sample POSTs queued before the 'during wake' cell (default 12); enough that "
                        "one job outlives the cell")
    p.add_argument("--job-budget", type=int, default=None,
                   help="sleep budget while predict latency is measured (default 100000; --quick 5000)")
    p.add_argument("--ingest-duration", type=float, default=None,
                   help="seconds of the ingest cells (default 3: a POST of 64 can take most of a second; --quick 1)")
    p.add_argument("--job-duration", type=float, default=None,
                   help="seconds of the predict cells during a job (default max(duration, 2); --quick 1)")
    p.add_argument("--memory-brains", type=int, default=None, help="extra brains for memory (default 5; --quick 2)")
    p.add_argument("--forward-seconds", type=float, default=None, help="timing of the forward pass per batch size")
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                   help="full stack: a Postgres server (its database is only used to create ours)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="full stack: flushed before and after")
    p.add_argument("--service-env", action="append", default=[], metavar="BRAIN_NAME=VALUE",
                   help="a setting for the service and worker, e.g. BRAIN_TORCH_THREADS=1 (repeatable)")
    p.add_argument("--out", default="docs/bench", help="folder for serve.json and serve.md")
    args = p.parse_args(argv)
    for item in args.service_env:
        name, _, value = item.partition("=")
        if not name.startswith("BRAIN_") or not _:
            p.error(f"--service-env takes BRAIN_NAME=VALUE, got {item!r}")
        SERVICE_ENV[name] = value
    args.argv = list(argv if argv is not None else sys.argv[1:])
    quick = args.quick
    defaults = {"stack": "embedded" if quick else "both", "duration": 1.0 if quick else 5.0,
                "warmup": 0.3 if quick else 0.5, "concurrency": "1,16" if quick else "1,16,64",
                "teach": 1000 if quick else 2000, "rounds": 5 if quick else 20,
                "sleep_budget": 2000 if quick else 10_000, "job_budget": 5000 if quick else 100_000,
                "memory_brains": 2 if quick else 5, "ingest_duration": 1.0 if quick else 3.0, "forward_seconds": 0.5 if quick else 2.0}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.job_duration is None:
        args.job_duration = 1.0 if quick else max(args.duration, 2.0)
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c]
    args.memory_samples = 200 if quick else 500
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"args": args.argv, "duration": args.duration, "warmup": args.warmup,
                              "concurrency": args.concurrency, "environment": environment()}
    work = Path(tempfile.mkdtemp(prefix="pb-serve-"))
    try:
        if args.stack in ("embedded", "both"):
            report["embedded"] = run_embedded(args, work)
        if args.stack == "full":
            report["full"] = run_full(args, work)
        elif args.stack == "both":  # the full stack when it can run; the embedded figures are kept
            try:
                report["full"] = run_full(args, work)
            except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
                report["full"] = {"skipped": f"failed: {type(exc).__name__}: {str(exc)[:300]}"}
        if "skipped" in report.get("full", {}):
            print(f"full stack skipped: {report['full']['skipped']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out / "serve.json").write_text(json.dumps(report, indent=1))
    write_markdown(out / "serve.md", report)
    print_table(report)
    print(f"wrote {out / 'serve.json'} and {out / 'serve.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
