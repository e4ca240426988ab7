"""One run: start the stack, create the brains, let the clients and the nemesis loose, drain, read
the final state, check it, and write everything to the output folder:
``history.jsonl`` (every operation), ``final.json`` (the state read at the end), ``report.json``
(the checker's report and the run's figures) and ``summary.txt`` (what ``__main__`` prints)."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.history import faults as nemesis
from bench.history.checker import Report, check
from bench.history.config import FAULTS, Config
from bench.history.final import State, drain, read_state
from bench.history.record import merge
from bench.history.stacks import Embedded, Full
from bench.history.workload import MAIN, SLOW, Clients, Data, Plan, client_labels

DIM = 16
MAX_LABELS = 100
# the main brain: the default strategy with a code that does not change (frozen), so that its
# predictions depend only on the samples it learned (the checker compares them with a fresh brain's);
# a ridge of 1 keeps the readout's solve well conditioned on a few samples: float rounding then moves
# a confidence by under 1e-6 where one sample more or less moves it by about 1e-2
MAIN_PARAMS = {"layers": [{"hidden": 256, "k": 16, "frozen": True}], "ridge": 1.0}


@dataclass
class Outcome:
    report: Report
    figures: dict[str, Any]
    summary: str


def service_env(config: Config) -> dict[str, str]:
    env = {"BRAIN_KEEP_VERSIONS": "1000",  # every version stays: the checker reads them all
           "BRAIN_SLEEP_CHECK_SECONDS": "1", "BRAIN_DEVICE": "cpu", "BRAIN_LOG_LEVEL": "WARNING",
           # torch on one thread in every process: on a small, busy machine more threads wait for each
           # other (a wake step took 60 times longer); the checks are about outcomes, not speed
           "OMP_NUM_THREADS": "1"}
    if "short-lock" in config.faults:
        env["BRAIN_LOCK_TIMEOUT_SECONDS"] = str(nemesis.SHORT_LOCK_SECONDS)
    return env


def make_stack(config: Config, work: Path) -> Embedded | Full:
    env = service_env(config)
    if config.stack == "embedded":
        return Embedded(work, env)
    return Full(work, env, pg_url=config.pg_url, redis_url=config.redis_url, apis=config.apis, workers=config.workers)


def _create_brains(url: str, config: Config) -> None:
    shape = {"kind": "vector", "shape": [DIM]}
    with httpx.Client(base_url=url, timeout=60) as http:
        common = {"input": shape, "max_labels": MAX_LABELS, "seed": config.seed}
        for body in ({"name": MAIN, "params": MAIN_PARAMS, **common}, {"name": SLOW, "strategy": "replay", **common}):
            http.post("/v1/brains", json=body).raise_for_status()
        if "short-lock" in config.faults:  # the slow brain's sleeps outlast the lock
            budget = nemesis.slow_sleep_budget(DIM, MAX_LABELS)
            http.patch(f"/v1/brains/{SLOW}", json={"sleep_policy": {"budget": budget}}).raise_for_status()


def run(config: Config) -> Outcome:
    unknown = sorted(set(config.faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("history-*.jsonl"):
        old.unlink()
    clock = _Clock()
    stack = make_stack(config, out)
    state = None
    try:
        stack.start()
        state = State(stack.settings())
        _create_brains(stack.urls[0], config)
        labels_per_client = max(1, min(3, (MAX_LABELS - 8) // max(1, config.total_clients)))
        plan = Plan(urls=tuple(stack.urls), dim=DIM, seed=config.seed,
                    ops_per_client=max(1, math.ceil(config.ops / config.total_clients)),
                    labels_per_client=labels_per_client, slow_share=config.slow_share, think=config.think,
                    sleep_slow="short-lock" not in config.faults, out=str(out))
        clients = Clients(plan, threads=config.clients, processes=config.processes, per_process=config.process_clients)
        chaos = nemesis.Nemesis(stack, config.faults, clients.done_fraction, out, state.session, Data(DIM, config.seed))
        clients.start()
        clock.lap("start")
        chaos.start()
        chaos.join(timeout=600)
        chaos.stop.set()
        clients.calm()
        clients.join(timeout=600)
        clock.lap("load")
        so_far = merge(_parts(out), out / "history.jsonl")
        unsettled = drain(state, stack.urls, [MAIN, SLOW], so_far, out, timeout=config.drain_timeout)
        clock.lap("drain")
        probe = Data(DIM, config.seed).probe(client_labels(plan, clients.names))
        final = read_state(state, stack.urls[0], [MAIN, SLOW], probe)
        clock.lap("read")
    finally:
        if state is not None:
            state.close()
        stack.close()
    history = merge(_parts(out), out / "history.jsonl")
    (out / "final.json").write_text(json.dumps(final))
    report = check(history, final)
    clock.lap("check")
    figures = {
        "stack": config.stack,
        "clients": {"threads": config.clients, "processes": config.processes,
                    "threads_per_process": config.process_clients, "total": config.total_clients},
        "operations": len(history),
        "by_kind_and_outcome": {k: dict(v) for k, v in _by_kind(history).items()},
        "faults_requested": config.faults,
        "faults_injected": [op.request["fault"] for op in history if op.kind == "fault"],
        "nemesis_errors": chaos.errors,
        "unsettled": unsettled,
        "seconds": clock.laps,
    }
    (out / "report.json").write_text(json.dumps({"figures": figures, **report.as_dict()}, indent=2, default=str))
    text = summary(figures, report)
    (out / "summary.txt").write_text(text)
    return Outcome(report, figures, text)


class _Clock:
    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self.last, 1)
        self.laps["total"] = round(now - self.started, 1)
        self.last = now


def _parts(out: Path) -> list[Path]:
    return sorted(out.glob("history-*.jsonl"))


def _by_kind(history) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for op in history:
        out.setdefault(op.kind, Counter())[op.outcome] += 1
    return out


def summary(figures: dict[str, Any], report: Report) -> str:
    c = figures["clients"]
    lines = [
        f"stack: {figures['stack']}; clients: {c['total']} ({c['threads']} threads here, {c['processes']} processes "
        f"of {c['threads_per_process']}); {figures['operations']} operations",
        "seconds: " + ", ".join(f"{k} {v}" for k, v in figures["seconds"].items()),
        "operations by kind (ok / fail / info):",
    ]
    for kind, counts in sorted(figures["by_kind_and_outcome"].items()):
        lines.append(f"  {kind:8} {counts.get('ok', 0):6} {counts.get('fail', 0):6} {counts.get('info', 0):6}")
    lines.append(f"faults injected: {', '.join(figures['faults_injected']) or 'none'}"
                 + (f" (nemesis errors: {figures['nemesis_errors']})" if figures["nemesis_errors"] else ""))
    if figures["unsettled"]:
        lines.append(f"not settled at the end: {figures['unsettled']}")
    for name, stats in sorted((k, v) for k, v in report.stats.items() if k in (MAIN, SLOW)):
        lines.append(f"brain {name}: {stats['acknowledged']} samples acknowledged, {stats['log_rows']} in the log, "
                     f"{stats['labels']} labels, {stats['tasks']} tasks, {stats['versions']} versions, jobs "
                     f"{stats['jobs']}")
    by_kind = report.by_kind()
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(by_kind.items()))
    lines.append(f"anomalies: {sum(by_kind.values())}" + (f" ({kinds})" if kinds else ""))
    for a in report.anomalies:
        ids = ", ".join(str(i) for i in a.ids[:8]) + (f", ... ({len(a.ids)} in all)" if len(a.ids) > 8 else "")
        lines.append(f"  [{a.kind}] {a.brain or '-'}: {a.detail}" + (f": {ids}" if ids else ""))
    for note in report.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines) + "\n"
