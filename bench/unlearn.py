"""Exact unlearning: the time of a forget job against the number of samples forgotten, and the
retrain alternative's (``python -m bench.unlearn``; docs/bench/unlearn.md).

An embedded brain (SQLite, file blobs, in-process replay: the service's own code, no HTTP) of
Fashion-MNIST images (``[1, 28, 28]``, the image default: conv eyes and the closed-form readout, so
mergeable) learns ``--samples`` training images, each with its own id, in wake jobs. Then forget
jobs (``DELETE .../samples {"ids": [..]}``'s job, run in this process) forget disjoint sets of
``--forget`` sizes, one after the other, on the same brain (each set is taken from what is left).
Each job's wall time is split as its result reports: downdating (reading the rows, the learner's
``unlearn``, the replay purge) and the rest (deleting the rows, publishing the "forget" version and
deleting the versions that held the samples). An ordinary sleep is timed after the wake (the
retrain alternative is a sleep too: its consolidation costs as much). The retrain alternative: the sleep of a brain marked
for retraining (what a learner that cannot downdate gets: a fresh learner learns the remaining log
and consolidates), timed on the same brain after the first and after the last forget job.
The machine is shared: the load average is reported before and after each measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHUNK = 2048  # samples per ingest call (the API's BRAIN_MAX_BATCH)


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


class Recorder:
    """An executor that records what it is handed and runs nothing: this process runs the jobs."""

    fans_out = False

    def dispatch(self, job_id: str, kind: str) -> None:
        pass

    def shutdown(self) -> None:
        pass


def run(rt, kind: str, brain_id: int, payload: dict) -> tuple[dict, float]:
    from service.orchestration import run_job

    job_id = rt.jobs.submit(kind, brain_id, payload)
    started = time.perf_counter()
    result = run_job(rt, job_id)
    return result, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--forget", default="10,100,1000,10000", help="sizes, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.forget.split(",")]
    assert sum(sizes) < args.samples, "the sets to forget are disjoint: their sum must be below --samples"
    torch.set_num_threads(args.threads)

    from bench.data import fashion_mnist
    from service import brains
    from service.db import upgrade
    from service.runtime import build_runtime
    from service.schemas import BrainCreate, SamplesIn
    from service.settings import Settings
    from service.tables import Brain

    x, y = fashion_mnist("train")
    idx = np.random.default_rng(0).permutation(len(y))[: args.samples]
    report: dict[str, Any] = {
        "command": "python -m bench.unlearn " + " ".join(sys.argv[1:] if argv is None else argv),
        "samples": args.samples, "cpus": os.cpu_count(), "threads": args.threads,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "forget": [], "retrain": []}
    with tempfile.TemporaryDirectory(prefix="bench-unlearn-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "var", redis_url=None, database_url=None, broker_url=None,
                            device="cpu", wake_max_samples=args.samples)
        upgrade(settings.database_url)
        rt = build_runtime(settings, executor=False)
        rt.jobs.executor = Recorder()
        try:
            brain = brains.create_brain(rt, body=BrainCreate.model_validate(
                {"name": "fmnist", "input": {"kind": "image", "shape": [1, 28, 28]}}))
            for start in range(0, len(idx), CHUNK):
                part = idx[start:start + CHUNK]
                brains.ingest(rt, name="fmnist", body=SamplesIn.model_validate({"task": "t1", "samples": [
                    {"x": x[i].tolist(), "label": int(y[i]), "id": f"s{i}"} for i in part]}))
            before = load()
            woke, seconds = run(rt, "wake", brain.id, {})
            report["wake"] = {"learned": woke["learned"], "seconds": round(seconds, 2), "load_before": before,
                              "load_after": load()}
            print("wake:", report["wake"], flush=True)
            before = load()
            slept, seconds = run(rt, "sleep", brain.id, {"reason": "bench"})
            report["sleep"] = {"replayed": slept["replayed"], "seconds": round(seconds, 2), "load_before": before,
                               "load_after": load()}
            print("sleep:", report["sleep"], flush=True)
            order = np.random.default_rng(1).permutation(idx)
            taken = 0
            for i, n in enumerate(sizes):
                ids = [f"s{j}" for j in order[taken:taken + n]]
                taken += n
                before = load()
                result, seconds = run(rt, "forget", brain.id, {"selector": {"ids": ids}})
                row = {"forgotten": result["forgotten"], "how": result["how"], "seconds": round(seconds, 3),
                       "downdate_seconds": result["seconds"], "replay_removed": result["replay_removed"],
                       "versions_deleted": len(result["versions_deleted"]), "load_before": before,
                       "load_after": load()}
                report["forget"].append(row)
                print("forget:", row, flush=True)
                if i in (0, len(sizes) - 1):  # the alternative: retrain from the remaining log
                    with rt.db.session() as s:
                        s.get(Brain, brain.id).retrain_from = 1
                    before = load()
                    slept, seconds = run(rt, "sleep", brain.id, {"reason": "bench"})
                    row = {"after_forgetting": taken, "retrained": slept["retrained"], "seconds": round(seconds, 2),
                           "load_before": before, "load_after": load()}
                    report["retrain"].append(row)
                    print("retrain:", row, flush=True)
        finally:
            rt.close()
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [f"`{report['command']}` ({report['when']}, {report['cpus']} CPUs, {report['threads']} torch threads)", "",
             f"Wake of {report['wake']['learned']} samples: {report['wake']['seconds']} s; an ordinary sleep "
             f"(replaying {report['sleep']['replayed']}) then: {report['sleep']['seconds']} s.", "",
             "| forgotten | how | forget job (s) | of which reading + downdate (s) | replay slots removed | "
             "versions deleted | load avg before / after |",
             "|---:|---|---:|---:|---:|---:|---|"]
    for r in report["forget"]:
        lines.append(f"| {r['forgotten']:,} | {r['how']} | {r['seconds']} | {r['downdate_seconds']} | "
                     f"{r['replay_removed']} | {r['versions_deleted']} | {r['load_before']} / {r['load_after']} |")
    lines += ["", "| retrain (sleep) after forgetting | samples retrained | seconds | load avg before / after |",
              "|---:|---:|---:|---|"]
    for r in report["retrain"]:
        lines.append(f"| {r['after_forgetting']:,} | {r['retrained']:,} | {r['seconds']} | "
                     f"{r['load_before']} / {r['load_after']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
