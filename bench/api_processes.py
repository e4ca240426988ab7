"""Predict requests/s with 1 and with N API processes on the full stack (issue 17).

    python -m bench.api_processes --processes 1,2 --concurrency 16,64 --duration 10 \\
        --redis-url redis://127.0.0.1:6379/10

Everything runs on this machine, against services this command starts and stops itself (the
helpers of ``bench.serve``): a Postgres database of its own (dropped at the end), Redis
(``--redis-url``, its database flushed before and after), one ``brain worker`` that teaches the
benchmark brain (2,000 Fashion-MNIST images, the default strategy), then, for each ``--processes``
N, ``brain serve --workers N`` (uvicorn worker processes sharing one port) under 1-input predict
load from ``--loadgens`` ``bench.loadgen`` processes (the clients shared out among them; their
requests/s added up, the worst of their p50/p99 kept). The load average (1 minute) is read before
and after every cell: the machine's other tenants show there. The load generators share the CPUs
with the servers: on a machine with few cores, N processes can gain little.

Results: ``--out``/api-processes.json, and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.serve import (
    BRAIN,
    PREDICT,
    Api,
    create_brain,
    data,
    environment,
    load,
    postgres_database,
    predict_bodies,
    process,
    serve_cmd,
    service_env,
)


def cell(url: str, body: bytes, *, concurrency: int, loadgens: int, args: argparse.Namespace, work: Path) -> dict:
    """One load cell from ``loadgens`` processes at once, ``concurrency`` clients in all."""
    shares = [concurrency // loadgens + (i < concurrency % loadgens) for i in range(loadgens)]
    shares = [s for s in shares if s]
    before = os.getloadavg()[0]
    with concurrent.futures.ThreadPoolExecutor(len(shares)) as pool:
        parts = list(pool.map(lambda n: load(url, body, concurrency=n, args=args, work=work), shares))
    return {"concurrency": concurrency, "loadgens": len(shares), "rps": sum(p["rps"] for p in parts),
            "requests": sum(p["requests"] for p in parts), "errors": sum(p["errors"] for p in parts),
            "p50_ms": max(p["p50_ms"] or 0 for p in parts), "p99_ms": max(p["p99_ms"] or 0 for p in parts),
            "load_before": round(before, 2), "load_after": round(os.getloadavg()[0], 2)}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import redis

    x, y = data(args.teach)
    body = predict_bodies(x)["predict x1"]
    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    rows: list[dict] = []
    try:
        with postgres_database(args.pg_url) as database_url:
            env = service_env(work / "data", BRAIN_DATABASE_URL=database_url, BRAIN_REDIS_URL=args.redis_url,
                              BRAIN_JOBS="celery")
            worker = [sys.executable, "-m", "brain_cli", "worker", "--concurrency", "1"]
            with process("worker", worker, env, work, health=None):
                taught = None
                for n in args.processes:
                    with process(f"api-{n}", [*serve_cmd(), "--workers", str(n)], env, work, health="/healthz") as api:
                        if taught is None:  # the first server teaches the brain; the later ones serve it
                            http = Api(api.url)
                            try:
                                taught = create_brain(http, BRAIN, x, y)
                            finally:
                                http.close()
                        for concurrency in args.concurrency:
                            row = {"processes": n, **cell(api.url + PREDICT.format(name=BRAIN), body,
                                                          concurrency=concurrency, loadgens=args.loadgens,
                                                          args=args, work=work)}
                            rows.append(row)
                            print(f"  {n} API process(es), {concurrency} clients: {row['rps']:8.1f} req/s "
                                  f"(p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, {row['errors']} errors; "
                                  f"load {row['load_before']} -> {row['load_after']})", flush=True)
    finally:
        client.flushdb()
        client.close()
    return {"rows": rows, "version": taught}


def markdown(report: dict) -> str:
    lines = ["| API processes | clients | req/s | p50 ms | p99 ms | errors | load avg before -> after |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['processes']} | {r['concurrency']} | {r['rps']:,.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                     f"| {r['errors']} | {r['load_before']} -> {r['load_after']} |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.api_processes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", default="1,2", help="API processes (brain serve --workers) per run")
    p.add_argument("--concurrency", default="16,64", help="clients per cell")
    p.add_argument("--loadgens", type=int, default=2, help="load generator processes sharing the clients")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before each cell")
    p.add_argument("--teach", type=int, default=2000, help="samples taught first")
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                   help="a Postgres server (its database is only used to create ours)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="flushed before and after")
    p.add_argument("--out", default="docs/bench", help="folder for api-processes.json")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.processes = [int(n) for n in str(args.processes).split(",") if n]
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="pb-api-processes-"))
    try:
        report = {"args": args.argv, "environment": environment(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "duration": args.duration, "warmup": args.warmup, **run(args, work)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "api-processes.json").write_text(json.dumps(report, indent=1))
    print(markdown(report))
    print(f"wrote {out / 'api-processes.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
