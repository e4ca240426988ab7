"""A sharded wake (issue 17): how fast one brain learns a backlog with 1 and 2 Celery worker
processes on the full stack, and what each part of a sharded wake costs, for a scale model.

``python -m bench.shards`` (Postgres and Redis running locally; ``--redis-url`` names a database
number that is flushed before and after):

1. *Full stack.* For each configuration (1 worker without shards; 2 workers with
   ``BRAIN_WAKE_SHARDS=2``; 1 worker whose torch may use every core, for reference) a fresh
   Postgres database, a flushed Redis db and ``brain worker --concurrency 1`` processes; a brain of
   Fashion-MNIST images (the image default: the conv eyes, 2,304 features, which merge) gets a
   backlog of ``--samples`` samples written straight into its log (``service.brains.ingest``, not
   timed; Postgres vacuums, analyses and checkpoints it then), then one wake job is submitted and
   timed until the end its worker recorded (the wake's plan, shards, merge and publish, or one
   worker's wake). ``--rounds`` backlogs a configuration, each on a fresh
   brain; the first round also warms the workers up. Worker processes get one torch thread
   (``OMP_NUM_THREADS=1``) unless told otherwise: a worker stands for a machine's core.
2. *Parts, in this process* (one torch thread): the shards' statistics rate (samples/s, the part
   that divides by the workers), and for a sharded wake's serial part: offering the rows the shards
   read to a Redis replay buffer in log order, and per hidden size ``--hidden``:
   a shard's statistics in bytes, their safetensors round trip through Redis, adding them, the
   closed-form solve and the checkpoint that the publish writes.

Every figure comes with the load average (``os.getloadavg``) before and after it: the machine is
shared. Writes ``docs/bench/shards.md`` and ``.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.serve import postgres_database, reachable

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 2048  # samples per ingest call (the API's BRAIN_MAX_BATCH)
# How often the job's record is read while it runs: the wake's time is taken from the end its
# worker recorded, so a slow poll costs no accuracy, and a fast one (it was 20 ms) takes CPU
# (this process's and Postgres's) from the workers it measures, two of them on a 2-core machine.
POLL = 0.5
ANALYSIS = "## What it shows"  # a rerun rewrites the figures above this heading and keeps the rest


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# -- the full stack ------------------------------------------------------------------------------
def backlog(n: int, seed: int) -> list[dict]:
    """``n`` Fashion-MNIST training images (flat 784 values) with their labels, as ingest bodies."""
    from bench.data import fashion_mnist
    from service.schemas import SamplesIn

    x, y = fashion_mnist("train")
    idx = np.random.default_rng(seed).permutation(len(y))[:n]
    return [SamplesIn.model_validate({"task": "t1", "samples": [
        {"x": x[i].tolist(), "label": int(y[i])} for i in idx[start:start + CHUNK]]})
        for start in range(0, n, CHUNK)]


@contextlib.contextmanager
def workers(env: dict[str, str], count: int, work: Path) -> Iterator[list[subprocess.Popen]]:
    """``count`` ``brain worker --concurrency 1`` processes, once each has logged that it is ready."""
    procs, logs = [], []
    try:
        for i in range(count):
            log = work / f"worker-{i}.log"
            logs.append(log)
            with log.open("wb") as sink:
                procs.append(subprocess.Popen([sys.executable, "-m", "brain_cli", "worker", "--concurrency", "1"],
                                              env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT,
                                              start_new_session=True))
        deadline = time.monotonic() + 120
        while not all("ready." in log.read_text(errors="replace") for log in logs):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError("a worker did not start: " + logs[0].read_text(errors="replace")[-2000:])
            time.sleep(0.2)
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 15)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait(timeout=10)


def run_config(args: argparse.Namespace, bodies: list, *, count: int, shards: int, threads: int | None,
               work: Path) -> dict[str, Any]:
    import redis

    from service.brains import create_brain, ingest
    from service.db import upgrade
    from service.runtime import build_runtime
    from service.schemas import BrainCreate
    from service.settings import Settings
    from service.tables import Brain, Job, Version

    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    rounds = []
    try:
        with postgres_database(args.pg_url) as database_url:
            upgrade(database_url)
            brain_vars = {"BRAIN_DATABASE_URL": database_url, "BRAIN_REDIS_URL": args.redis_url, "BRAIN_JOBS": "celery",
                          "BRAIN_DEVICE": "cpu", "BRAIN_DATA_DIR": str(work / "data"), "BRAIN_LOG_LEVEL": "INFO",
                          "BRAIN_WAKE_SHARDS": str(shards), "BRAIN_WAKE_SHARD_MIN_SAMPLES": str(args.min_shard),
                          "BRAIN_WAKE_MAX_SAMPLES": str(args.samples)}
            env = {k: v for k, v in os.environ.items() if not k.startswith("BRAIN_")}
            env.update(brain_vars, PYTHONPATH=str(ROOT))
            if threads is not None:
                env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            settings = Settings(**{k.removeprefix("BRAIN_").lower(): v for k, v in brain_vars.items()})
            rt = build_runtime(settings, role="api")
            try:
                with workers(env, count, work):
                    for r in range(args.rounds):
                        name = f"b{r}"
                        body = BrainCreate.model_validate({"name": name, "input": {"kind": "vector", "shape": [784]}})
                        brain_id = create_brain(rt, body=body).id
                        for b in bodies:
                            ingest(rt, name=name, body=b)
                        settle(rt)
                        before = load()
                        started, started_at = time.perf_counter(), time.time()
                        job_id = rt.jobs.submit("wake", brain_id, {"samples": args.samples})
                        while True:
                            with rt.db.session(read_only=True) as s:
                                job = s.get(Job, job_id)
                                state, result = job.state, job.result
                            if state in ("succeeded", "failed"):
                                events = list(job.events)
                                break
                            time.sleep(POLL)
                        # to the end its worker recorded: the poll's own lateness is not timed
                        ended = event_at(events, state)
                        seconds = ended - started_at if ended is not None else time.perf_counter() - started
                        with rt.db.session(read_only=True) as s:
                            brain = s.get(Brain, brain_id)
                            version = s.scalar(select_version(Version, brain_id, brain.current_version))
                            stats = dict(version.stats)
                            published = version.created_at.timestamp()
                        rounds.append({"round": r, "state": state, "result": result, "seconds": round(seconds, 3),
                                       "samples_per_second": round(args.samples / seconds, 1),
                                       "load_before": before, "load_after": load(),
                                       "stats": {k: stats.get(k) for k in (
                                           "learned", "shards", "shard_seconds", "shard_pieces", "shard_bytes", "merge_seconds",
                                           "statistics_load_seconds", "shard_workers")},
                                       "timeline": timeline(events, stats, published, submitted=started_at)})
                        print(f"  {count} worker(s), shards {shards}, round {r}: {seconds:.2f} s "
                              f"({args.samples / seconds:.0f} samples/s), load {before} -> {load()}", flush=True)
            finally:
                rt.close()
    finally:
        client.flushdb()
        client.close()
    return {"workers": count, "wake_shards": shards, "torch_threads": threads or "default", "rounds": rounds}


def settle(rt) -> None:
    """After the backlog's bulk insert, before the timed wake: what Postgres would otherwise do in
    the middle of it (vacuum and analyse the log, write the dirty pages out) done now."""
    from sqlalchemy import text

    with rt.db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("VACUUM ANALYZE samples"))
        conn.execute(text("CHECKPOINT"))


def event_at(events: list[dict], name: str) -> float | None:
    """When the job's last event ``name`` was recorded (epoch seconds)."""
    from datetime import datetime

    times = [datetime.fromisoformat(e["at"]).timestamp() for e in events if e["event"] == name]
    return times[-1] if times else None


def timeline(events: list[dict], stats: dict, published: float, *, submitted: float) -> dict[str, float]:
    """Seconds from the submit to each step of the wake: the job started (a worker took it), handed
    (planned and its chord sent), each shard started and ended, the merge started, the version
    was committed (publish) and the job's end recorded."""
    def at(name: str) -> float | None:
        when = event_at(events, name)
        return round(when - submitted, 3) if when is not None else None

    out = {"started": at("started"), "handed": at("handed")}
    if stats.get("shard_at"):
        out["shards_started"] = [round(t - submitted, 3) for t in stats["shard_at"]]
        out["shards_ended"] = [round(t + d - submitted, 3) for t, d in zip(stats["shard_at"], stats["shard_seconds"])]
        out["merge_started"] = round(stats["merge_at"] - submitted, 3)
    out["published"] = round(published - submitted, 3)
    out["succeeded"] = at("succeeded")
    return out


def select_version(version_table, brain_id: int, number: int):
    from sqlalchemy import select

    return select(version_table).where(version_table.brain_id == brain_id, version_table.number == number)


# -- the parts, measured in this process ----------------------------------------------------------
def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def statistics_rate(samples: int) -> dict[str, Any]:
    """The shards' part: image-default wake statistics per second, one torch thread."""
    from bench.data import fashion_mnist
    from models.learner import add_statistics
    from models.plastic import Plastic

    x, y = fashion_mnist("train")
    xt, yt = torch.from_numpy(x[:samples].copy()), torch.from_numpy(y[:samples].copy())
    learner = Plastic(input_dim=784, num_classes=10, seed=0, input_shape=(784,))
    before = load()

    def run() -> None:
        total: dict = {}
        for i in range(0, samples, 128):
            add_statistics(total, learner.wake_statistics(xt[i:i + 128], yt[i:i + 128]))

    seconds = timed(run, repeat=2)
    return {"samples": samples, "hidden": learner.hidden, "seconds": round(seconds, 3),
            "samples_per_second": round(samples / seconds, 1), "load_before": before, "load_after": load()}


def serial_offer(args: argparse.Namespace, bodies: list, work: Path) -> dict[str, Any]:
    """The merge's serial pass over the backlog: the rows the shards hand over (ids, labels and
    tasks) offered to the Redis replay buffer in log order and batches (``service.sharding.offer``,
    which reads only the inputs that end up stored); and, beside it, the backlog's rows read with
    their inputs as one worker's wake reads them (``service.samplelog.chunks``)."""
    import redis

    from service import samplelog, sharding
    from service.brains import create_brain, ingest
    from service.db import upgrade
    from service.runtime import build_runtime
    from service.schemas import BrainCreate
    from service.settings import Settings

    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    try:
        with postgres_database(args.pg_url) as database_url:
            upgrade(database_url)
            settings = Settings(data_dir=work / "offer", database_url=database_url, redis_url=args.redis_url, device="cpu")
            rt = build_runtime(settings, executor=False)
            try:
                brain = create_brain(rt, body=BrainCreate.model_validate(
                    {"name": "offer", "input": {"kind": "vector", "shape": [784]}}))
                for b in bodies:
                    ingest(rt, name="offer", body=b)
                before = load()
                started = time.perf_counter()
                chunks = list(samplelog.chunks(rt.db, brain.id, 0, args.samples))
                read = time.perf_counter() - started
                rows = {name: [getattr(r, column) for chunk in chunks for r in chunk]
                        for name, column in sharding.ROWS.items()}
                ids = rows[sharding.ROW_IDS]
                plan = {"samples": len(ids), "start": 0, "end": ids[-1]}
                started = time.perf_counter()
                sharding.offer(rt, brain, plan, rt.replay(brain), rows)
                offer = time.perf_counter() - started
            finally:
                rt.close()
    finally:
        client.flushdb()
        client.close()
    return {"samples": len(ids), "read_seconds": round(read, 3), "offer_seconds": round(offer, 3),
            "load_before": before, "load_after": load()}


def merge_costs(hidden: int, redis_url: str, work: Path) -> dict[str, Any]:
    """For a readout over ``hidden`` features: one shard's statistics (bytes), their trip through
    Redis (save, set, get, load), adding them, the closed-form solve, and the checkpoint a publish
    writes (``state_dict`` as safetensors)."""
    import redis
    from safetensors.torch import load as load_tensors
    from safetensors.torch import save as save_tensors
    from safetensors.torch import save_file

    from models.plastic import Plastic

    learner = Plastic(input_dim=hidden, num_classes=10, seed=0, layers=[])
    x = torch.randn(256, hidden)
    y = torch.arange(256) % 10
    stats = learner.wake_statistics(x, y)
    client = redis.Redis.from_url(redis_url)
    before = load()
    data = save_tensors(stats)

    def trip() -> None:
        client.set("bench:shard", save_tensors(stats), ex=60)
        load_tensors(client.get("bench:shard"))

    trip_seconds = timed(trip)
    client.delete("bench:shard")
    client.close()
    add_seconds = timed(lambda: learner.merge(stats))
    learner.observe(x, y)

    def solve() -> None:
        learner._stale = True
        learner._core()

    solve_seconds = timed(solve)
    path = work / f"ckpt-{hidden}.safetensors"
    checkpoint = timed(lambda: save_file({k: v.contiguous() for k, v in learner.state_dict().items()}, path), repeat=1)
    size = path.stat().st_size
    path.unlink()
    return {"hidden": hidden, "statistics_bytes": len(data), "redis_round_trip_seconds": round(trip_seconds, 4),
            "add_seconds": round(add_seconds, 4), "solve_seconds": round(solve_seconds, 4),
            "checkpoint_bytes": size, "checkpoint_seconds": round(checkpoint, 4),
            "load_before": before, "load_after": load()}


# -- report ----------------------------------------------------------------------------------------
def summary(configs: list[dict]) -> list[dict]:
    """Per configuration: the median of its warm rounds (each stack's first round, which also
    starts the workers' runtimes, left out), and its speedup over the first configuration's."""
    by: dict[tuple, list[float]] = {}
    for cfg in configs:
        key = (cfg["workers"], cfg["wake_shards"], cfg["torch_threads"])
        by.setdefault(key, []).extend(r["seconds"] for r in cfg["rounds"] if r["round"] > 0 and r["state"] == "succeeded")
    rows = []
    for (count, shards, threads), seconds in by.items():
        median = float(np.median(seconds)) if seconds else None
        rows.append({"workers": count, "wake_shards": shards, "torch_threads": threads, "warm_rounds": seconds,
                     "median_seconds": median})
    base = rows[0]["median_seconds"] if rows else None
    for row in rows:
        row["speedup"] = round(base / row["median_seconds"], 2) if base and row["median_seconds"] else None
    return rows


def markdown(report: dict) -> str:
    lines = ["# A sharded wake: benchmark", "",
             f"Command: `{report['command']}`  ", f"Machine: {report['cpus']} CPUs (shared), {report['when']}", "",
             "## Full stack: one brain's backlog, 1 and 2 Celery worker processes", "",
             "| workers | wake_shards | torch threads | warm rounds (s) | median s | samples/s | speedup |",
             "|---|---|---|---|---|---|---|",
             *(f"| {r['workers']} | {r['wake_shards']} | {r['torch_threads']} | {r['warm_rounds']} | "
               f"{r['median_seconds']} | {round(report['samples'] / r['median_seconds'], 1) if r['median_seconds'] else '-'} | "
               f"{r['speedup']} |" for r in report.get("summary", [])),
             "", "Every round:", "",
             "| cycle | workers | wake_shards | torch threads | round | seconds | samples/s | shards' seconds | merge seconds "
             "| statistics bytes | load before -> after |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cfg in report["full_stack"]:
        for r in cfg["rounds"]:
            st = r["stats"]
            lines.append(f"| {cfg['cycle']} | {cfg['workers']} | {cfg['wake_shards']} | {cfg['torch_threads']} | {r['round']} | "
                         f"{r['seconds']} | {r['samples_per_second']} | {st.get('shard_seconds') or '-'} | "
                         f"{st.get('merge_seconds') or '-'} | {st.get('shard_bytes') or '-'} | "
                         f"{r['load_before']} -> {r['load_after']} |")
    lines += ["", "Timelines (seconds after the submit):", ""]
    for cfg in report["full_stack"]:
        for r in cfg["rounds"]:
            lines.append(f"- cycle {cfg['cycle']}, {cfg['workers']} worker(s), wake_shards {cfg['wake_shards']}, "
                         f"torch threads {cfg['torch_threads']}, round {r['round']}: "
                         + ", ".join(f"{k} {v}" for k, v in r["timeline"].items()))
    lines += ["", "## Parts (this process, one torch thread)", ""]
    rate = report["statistics_rate"]
    lines.append(f"- shards' statistics, image default ({rate['hidden']} features): {rate['samples_per_second']} "
                 f"samples/s ({rate['samples']} in {rate['seconds']} s), load {rate['load_before']} -> {rate['load_after']}")
    offer = report["serial_offer"]
    lines.append(f"- the merge's offer of {offer['samples']} rows to the Redis replay buffer: {offer['offer_seconds']} s "
                 f"(one worker's read of them with their inputs: {offer['read_seconds']} s), load {offer['load_before']} "
                 f"-> {offer['load_after']}")
    lines += ["", "| hidden | statistics bytes | Redis round trip s | add s | solve s | checkpoint bytes | checkpoint s | load |",
              "|---|---|---|---|---|---|---|---|"]
    for m in report["merge_costs"]:
        lines.append(f"| {m['hidden']} | {m['statistics_bytes']} | {m['redis_round_trip_seconds']} | {m['add_seconds']} | "
                     f"{m['solve_seconds']} | {m['checkpoint_bytes']} | {m['checkpoint_seconds']} | "
                     f"{m['load_before']} -> {m['load_after']} |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.shards", description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=20_000, help="the backlog (one wake job: also BRAIN_WAKE_MAX_SAMPLES)")
    p.add_argument("--rounds", type=int, default=3, help="backlogs per stack (the first warms it up)")
    p.add_argument("--min-shard", type=int, default=2_000, help="BRAIN_WAKE_SHARD_MIN_SAMPLES")
    p.add_argument("--hidden", default="256,1024,2304,4096,8192", help="readout sizes of the merge's costs")
    p.add_argument("--cycles", type=int, default=3, help="times the configurations run, interleaved")
    p.add_argument("--configs", default="1:1:1,2:2:1",
                   help="workers:wake_shards:torch threads (0: torch's default), comma-separated")
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "shards.md")
    p.add_argument("--skip-stack", action="store_true", help="the parts only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(1)
    from sqlalchemy.engine import make_url

    pg, rd = make_url(args.pg_url), make_url(args.redis_url)
    for what, host, port in (("Postgres", pg.host, pg.port or 5432), ("Redis", rd.host, rd.port or 6379)):
        if not reachable(host or "127.0.0.1", port):
            print(f"{what} does not answer at {host}:{port}")
            return 1
    report: dict[str, Any] = {"command": "python -m bench.shards " + " ".join(sys.argv[1:] if argv is None else argv),
                              "samples": args.samples, "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    bodies = backlog(args.samples, seed=0)
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        work = Path(tmp)
        report["full_stack"] = []
        if not args.skip_stack:
            for cycle in range(args.cycles):  # interleaved: the machine's load changes over minutes
                for i, cfg in enumerate(args.configs.split(",")):
                    count, shards, threads = (int(v) for v in cfg.split(":"))
                    folder = work / f"stack-{cycle}-{i}"
                    folder.mkdir()
                    result = run_config(args, bodies, count=count, shards=shards, threads=threads or None, work=folder)
                    report["full_stack"].append({**result, "cycle": cycle})
            report["summary"] = summary(report["full_stack"])
        report["statistics_rate"] = statistics_rate(4096)
        print("statistics:", report["statistics_rate"], flush=True)
        report["serial_offer"] = serial_offer(args, bodies, work)
        print("offer:", report["serial_offer"], flush=True)
        report["merge_costs"] = []
        for hidden in (int(h) for h in args.hidden.split(",") if h):  # "" for none
            report["merge_costs"].append(merge_costs(hidden, args.redis_url, work))
            print("merge:", report["merge_costs"][-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    if args.out.exists() and ANALYSIS in args.out.read_text():  # keep the written analysis
        text = args.out.read_text()
        args.out.write_text(markdown(report) + "\n" + text[text.index(ANALYSIS):])
    else:
        args.out.write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
