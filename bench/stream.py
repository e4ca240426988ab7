"""Stream Split Fashion-MNIST into a running plastic-brain service over HTTP, as a client would.

    python -m bench.stream --url http://127.0.0.1:8000 --brain fashion --tasks 2

Creates the brain (unless it exists), posts each task's training images in batches (labels are the
class names), evaluates every task seen so far on held-out test images after each task, sleeps,
and prints the accuracy matrix and the service's metrics. Saves the predictions on a fixed probe
set to a JSON file so that a later run with ``--check FILE`` can assert that a restarted service
answers exactly the same.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import httpx
import numpy as np

from bench.data import FASHION_CLASSES, split_tasks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--brain", default="fashion")
    p.add_argument("--strategy", default=None, help="default: the service's default strategy")
    p.add_argument("--tasks", type=int, default=2, help="tasks of two classes each (at most 5)")
    p.add_argument("--train-per-task", type=int, default=3000)
    p.add_argument("--test-per-task", type=int, default=500)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--no-sleep", action="store_true", help="do not sleep after each task")
    p.add_argument("--probe-out", default=None, help="write the probe predictions to this JSON file")
    p.add_argument("--check", default=None, help="only predict the probe set and compare with this file")
    args = p.parse_args(argv)

    tasks = split_tasks(n_tasks=args.tasks, train_per_task=args.train_per_task, test_per_task=args.test_per_task)
    probe = np.concatenate([t.x_test[:20] for t in tasks])
    with httpx.Client(base_url=args.url, timeout=300) as http:
        if args.check:
            return _check(http, args.brain, probe, args.check)
        _create(http, args)
        for i, task in enumerate(tasks):
            started = time.perf_counter()
            for lo in range(0, len(task.y_train), args.batch):
                samples = [
                    {"x": x.tolist(), "label": FASHION_CLASSES[y], "id": f"{task.name}-{lo + j}"}
                    for j, (x, y) in enumerate(zip(task.x_train[lo: lo + args.batch], task.y_train[lo: lo + args.batch]))
                ]
                _ok(http.post(f"/v1/brains/{args.brain}/samples", params={"wait": True},
                              json={"task": task.name, "samples": samples}))
            learned = time.perf_counter() - started
            if not args.no_sleep:
                job = _ok(http.post(f"/v1/brains/{args.brain}/sleep", params={"wait": True}))
                print(f"{task.name}: learned {len(task.y_train)} samples in {learned:.1f}s, slept: {job['result']}")
            for seen in tasks[: i + 1]:
                r = _ok(http.post(f"/v1/brains/{args.brain}/evaluate", json={
                    "task": seen.name,
                    "samples": [{"x": x.tolist(), "label": FASHION_CLASSES[y]} for x, y in zip(seen.x_test, seen.y_test)],
                }))
                print(f"  after {task.name}: accuracy on {seen.name} = {r['accuracy']:.3f} (version {r['version']})")
        metrics = _ok(http.get(f"/v1/brains/{args.brain}/metrics"))
        print(json.dumps({k: metrics[k] for k in ("tasks", "accuracy_matrix", "average_accuracy",
                                                    "backward_transfer", "forgetting")}, indent=1))
        answer = _predict(http, args.brain, probe)
        if args.probe_out:
            with open(args.probe_out, "w") as f:
                json.dump(answer, f)
            print(f"probe predictions of version {answer['version']} written to {args.probe_out}")
    return 0


def _create(http: httpx.Client, args: argparse.Namespace) -> None:
    if http.get(f"/v1/brains/{args.brain}").status_code == 200:
        return
    body = {"name": args.brain, "input": {"kind": "vector", "shape": [28, 28]}}
    if args.strategy:
        body["strategy"] = args.strategy
    _ok(http.post("/v1/brains", json=body))


def _predict(http: httpx.Client, brain: str, x: np.ndarray) -> dict:
    return _ok(http.post(f"/v1/brains/{brain}/predict", json={"inputs": [{"x": v.tolist()} for v in x]}))


def _check(http: httpx.Client, brain: str, probe: np.ndarray, path: str) -> int:
    with open(path) as f:
        before = json.load(f)
    now = _predict(http, brain, probe)
    same = now == before
    print(f"version {now['version']} (before: {before['version']}); predictions identical: {same}")
    return 0 if same else 1


def _ok(r: httpx.Response) -> dict:
    if r.status_code >= 400:
        sys.exit(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text}")
    return r.json()


if __name__ == "__main__":
    raise SystemExit(main())
