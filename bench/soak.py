"""Soak: the embedded service under a bounded mixed load for a while; errors and memory growth.

    python -m bench.soak --seconds 600                  # writes docs/bench/soak.json and soak.md
    python -m bench.soak --seconds 45 --warmup 20 --out /tmp/soak

``brain serve`` runs as a subprocess on a temporary data dir (``bench.serve.process``: SQLite,
in-process jobs), with one brain of ``--dim`` inputs and ``--labels`` labels. From this process,
for ``--seconds``:

- ingest: ``--ingest-clients`` threads each POST a batch of ``--batch`` labelled samples, every
  sample with a fresh id, at most ``--ingest-rate`` batches per second per thread (``wait=false``);
- predict: ``--predict-clients`` threads each POST a 1-input and, every tenth, an 8-input predict,
  at most ``--predict-rate`` requests per second per thread;
- sleep: every ``--sleep-every`` seconds a ``POST .../sleep`` (``wait=false``);
- the service's resident memory (``VmRSS`` of its process, ``/proc``) every ``--rss-every`` seconds.

An error is any answer other than 200 (predict) or 202 (samples, sleep), or an exception (a timeout,
a refused connection). At the end the load stops and the run waits for every acknowledged sample to
be learned: ``lost`` counts acknowledged samples not learned (or learned twice) by then.

RSS growth is measured after ``--warmup`` seconds (model loading, allocator arenas and the first
versions come first): the median of the samples in the first ``--window`` seconds after the
warm-up against the median of the last ``--window`` seconds. Targets: 0 errors, 0 lost, growth
under ``--max-growth`` percent (10). The exit status is 0 when they are met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.serve import environment, process, serve_cmd, service_env

BRAIN = "soak"


class Tally:
    """Requests and errors by kind, shared by the load threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []
        self.acked_samples = 0
        self.accepted = 0
        self.duplicates = 0

    def record(self, kind: str, error: str | None) -> None:
        with self.lock:
            self.requests[kind] += 1
            if error is not None:
                self.errors[kind] += 1
                if len(self.error_samples) < 20:
                    self.error_samples.append(f"{kind}: {error}"[:300])


class Data:
    """Well separated Gaussian clusters, one per label; rows drawn from a seeded generator."""

    def __init__(self, dim: int, labels: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.normal(0.0, 1.0, (labels, dim))
        self.lock = threading.Lock()

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            y = self.rng.integers(0, len(self.centres), n)
            x = self.centres[y] + self.rng.normal(0.0, 0.3, (n, self.centres.shape[1]))
        return x.astype(np.float32), y


def _paced(stop: threading.Event, rate: float, call) -> None:
    """Call ``call()`` at most ``rate`` times per second until ``stop`` is set."""
    period = 1.0 / rate if rate > 0 else 0.0
    while not stop.is_set():
        started = time.monotonic()
        call()
        stop.wait(max(0.0, period - (time.monotonic() - started)))


def _request(http, tally: Tally, kind: str, expect: int, method: str, path: str, **kw: Any) -> dict | None:
    import httpx

    try:
        r = http.request(method, path, **kw)
    except httpx.HTTPError as exc:
        tally.record(kind, f"{type(exc).__name__}: {exc}")
        return None
    if r.status_code != expect:
        tally.record(kind, f"{r.status_code} {r.text[:200]}")
        return None
    tally.record(kind, None)
    return r.json()


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import httpx

    data = Data(args.dim, args.labels, seed=args.seed)
    tally = Tally()
    rss: list[tuple[float, float]] = []  # (seconds since the load started, MiB)
    env = service_env(work / "data", BRAIN_JOBS="inprocess", BRAIN_SLEEP_CHECK_SECONDS="1")
    with process("soak", serve_cmd(), env, work, health="/readyz") as server:
        http = httpx.Client(base_url=server.url, timeout=args.timeout)
        try:
            spec = {"name": BRAIN, "input": {"kind": "vector", "shape": [args.dim]}, "max_labels": args.labels,
                    "params": {"layers": [{"hidden": args.hidden, "k": 16}]}}
            r = http.post("/v1/brains", json=spec)
            r.raise_for_status()
            x, y = data.draw(64)
            first = {"task": "t", "samples": [{"x": row.tolist(), "label": int(label), "id": f"seed-{i}"}
                                              for i, (row, label) in enumerate(zip(x, y))]}
            r = http.post(f"/v1/brains/{BRAIN}/samples", params={"wait": "true"}, json=first)
            r.raise_for_status()
            tally.acked_samples = tally.accepted = 64

            stop = threading.Event()
            counter = iter(range(10**12))
            counter_lock = threading.Lock()

            def ingest_loop(client) -> None:
                def once() -> None:
                    with counter_lock:
                        n = next(counter)
                    xb, yb = data.draw(args.batch)
                    body = {"task": "t", "samples": [{"x": row.tolist(), "label": int(label), "id": f"b{n}-{i}"}
                                                     for i, (row, label) in enumerate(zip(xb, yb))]}
                    answer = _request(client, tally, "ingest", 202, "POST", f"/v1/brains/{BRAIN}/samples", json=body)
                    if answer is not None:
                        with tally.lock:
                            tally.acked_samples += len(body["samples"])
                            tally.accepted += answer["accepted"]
                            tally.duplicates += answer["duplicates"]
                _paced(stop, args.ingest_rate, once)

            def predict_loop(client) -> None:
                calls = iter(range(10**12))

                def once() -> None:
                    rows = 8 if next(calls) % 10 == 9 else 1
                    xb, _ = data.draw(rows)
                    _request(client, tally, "predict", 200, "POST", f"/v1/brains/{BRAIN}/predict",
                             json={"inputs": [{"x": row.tolist()} for row in xb]})
                _paced(stop, args.predict_rate, once)

            def sleep_loop(client) -> None:
                while not stop.wait(args.sleep_every):
                    _request(client, tally, "sleep", 202, "POST", f"/v1/brains/{BRAIN}/sleep")

            clients = [httpx.Client(base_url=server.url, timeout=args.timeout)
                       for _ in range(args.ingest_clients + args.predict_clients + 1)]
            threads = [threading.Thread(target=ingest_loop, args=(c,), daemon=True) for c in clients[:args.ingest_clients]]
            threads += [threading.Thread(target=predict_loop, args=(c,), daemon=True)
                        for c in clients[args.ingest_clients:-1]]
            threads.append(threading.Thread(target=sleep_loop, args=(clients[-1],), daemon=True))
            started = time.monotonic()
            for t in threads:
                t.start()
            next_report = started + 30
            try:
                while (now := time.monotonic()) - started < args.seconds:
                    rss.append((round(now - started, 2), round(server.rss_mib(), 2)))
                    if now >= next_report:
                        next_report += 30
                        print(f"  {now - started:5.0f} s: rss {rss[-1][1]:.1f} MiB, requests {dict(tally.requests)}, "
                              f"errors {sum(tally.errors.values())}", flush=True)
                    time.sleep(min(args.rss_every, max(0.0, args.seconds - (now - started))))
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=args.timeout + 5)
                for c in clients:
                    c.close()
            elapsed = time.monotonic() - started
            rss.append((round(time.monotonic() - started, 2), round(server.rss_mib(), 2)))

            # every acknowledged sample learned, once
            deadline = time.monotonic() + args.drain_timeout
            while True:
                brain = http.get(f"/v1/brains/{BRAIN}").json()
                if brain["samples_pending"] == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            ready = http.get("/readyz").status_code
        finally:
            http.close()
    return {"elapsed_s": round(elapsed, 2), "tally": tally, "rss": rss, "brain": brain, "ready": ready}


def summarize(args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    tally: Tally = raw["tally"]
    rss = raw["rss"]
    after = [(t, m) for t, m in rss if t >= args.warmup]
    first = [m for t, m in after if t < args.warmup + args.window] or [m for _, m in after[:1]]
    last = [m for t, m in after if t > raw["elapsed_s"] - args.window] or [m for _, m in after[-1:]]
    baseline = statistics.median(first) if first else None
    end = statistics.median(last) if last else None
    growth = 100.0 * (end - baseline) / baseline if baseline else None
    brain = raw["brain"]
    lost = (tally.accepted - brain["samples_learned"]) if brain["samples_pending"] == 0 else tally.accepted
    errors = sum(tally.errors.values())
    passed = errors == 0 and lost == 0 and growth is not None and growth < args.max_growth and raw["ready"] == 200
    return {
        "seconds": args.seconds, "elapsed_s": raw["elapsed_s"], "warmup_s": args.warmup, "window_s": args.window,
        "requests": dict(tally.requests), "errors": errors, "errors_by_kind": dict(tally.errors),
        "error_samples": tally.error_samples,
        "requests_per_s": {k: round(v / raw["elapsed_s"], 2) for k, v in tally.requests.items()},
        "samples": {"acknowledged": tally.acked_samples, "accepted": tally.accepted, "duplicates": tally.duplicates,
                    "learned": brain["samples_learned"], "pending_at_end": brain["samples_pending"], "lost": lost},
        "versions_at_end": brain["current_version"],
        "rss_mib": {"start": rss[0][1] if rss else None, "after_warmup": baseline, "end": end,
                    "max": max((m for _, m in rss), default=None), "growth_percent": growth,
                    "samples": rss},
        "ready_at_end": raw["ready"] == 200,
        "targets": {"errors": 0, "lost": 0, "max_growth_percent": args.max_growth},
        "passed": passed,
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["soak"]
    rss = s["rss_mib"]

    def f(v: float | None, d: int = 1) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    lines = [
        f"Command: `python -m bench.soak {' '.join(report['args'])}`", "",
        (f"Embedded `brain serve` under a mixed load for {s['elapsed_s']:.0f} s "
         f"({report['environment']['cpus']} CPUs, Python {report['environment']['python']}); "
         f"memory growth measured after a {s['warmup_s']:.0f} s warm-up, medians over {s['window_s']:.0f} s windows."), "",
        "| figure | value | target |", "|---|---|---|",
        f"| errors (non-2xx/202, exceptions) | {s['errors']} | 0 |",
        f"| acknowledged samples lost or learned twice | {s['samples']['lost']} | 0 |",
        (f"| RSS growth after warm-up | {f(rss['growth_percent'])} % "
         f"({f(rss['after_warmup'])} -> {f(rss['end'])} MiB) | < {s['targets']['max_growth_percent']:.0f} % |"),
        f"| RSS at start / max | {f(rss['start'])} / {f(rss['max'])} MiB | |",
        f"| requests | {', '.join(f'{k} {v}' for k, v in sorted(s['requests'].items()))} | |",
        f"| requests/s | {', '.join(f'{k} {v}' for k, v in sorted(s['requests_per_s'].items()))} | |",
        f"| samples acknowledged / learned | {s['samples']['acknowledged']} / {s['samples']['learned']} | |",
        f"| versions published | {s['versions_at_end']} | |",
        f"| /readyz at the end | {'200' if s['ready_at_end'] else 'not 200'} | 200 |",
        "", f"**{'PASSED' if s['passed'] else 'FAILED'}**",
    ]
    if s["error_samples"]:
        lines += ["", "First errors:", "", *[f"- `{e}`" for e in s["error_samples"]]]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0, help="seconds of load")
    p.add_argument("--warmup", type=float, default=None, help="seconds before RSS growth counts (default: a fifth, 10..120)")
    p.add_argument("--window", type=float, default=None, help="seconds of each RSS median (default: a tenth, 5..60)")
    p.add_argument("--rss-every", type=float, default=2.0, help="seconds between RSS samples")
    p.add_argument("--max-growth", type=float, default=10.0, help="RSS growth target, percent")
    p.add_argument("--ingest-clients", type=int, default=2)
    p.add_argument("--ingest-rate", type=float, default=4.0, help="batches per second per ingest client")
    p.add_argument("--batch", type=int, default=16, help="samples per ingest batch")
    p.add_argument("--predict-clients", type=int, default=2)
    p.add_argument("--predict-rate", type=float, default=40.0, help="requests per second per predict client")
    p.add_argument("--sleep-every", type=float, default=15.0, help="seconds between sleep requests")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--labels", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as an error")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="seconds to wait for the last samples to be learned")
    p.add_argument("--out", default="docs/bench", help="folder for soak.json and soak.md")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(120.0, max(10.0, args.seconds / 5))
    if args.window is None:
        args.window = min(60.0, max(5.0, args.seconds / 10))
    if args.warmup + 2 * args.window > args.seconds:
        p.error(f"--seconds {args.seconds} leaves no room for a {args.warmup} s warm-up and two {args.window} s windows")
    args.argv = list(argv if argv is not None else sys.argv[1:])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pb-soak-"))
    try:
        print(f"soak: {args.seconds:.0f} s of mixed load on the embedded service", flush=True)
        raw = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"args": args.argv, "environment": environment(), "soak": summarize(args, raw)}
    (out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "soak.md").write_text(markdown(report))
    print(markdown(report), flush=True)
    return 0 if report["soak"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
