"""The end of a run: let the service learn what it acknowledged, then read the final state.

:func:`drain` waits until no brain has unlearned samples and no job is queued or running (a job
whose process is dead does not count: a killed worker's job stays "running" until its message is
redelivered); a brain with unlearned samples and no job gets a batch it acknowledged resent every
few seconds (a client's nudge; recorded as a ``resend`` by client ``drain``).

:func:`read_state` reads what the checker (``bench.history.checker``) takes: through the API, the
final predictions on the probe set and the pending count; from the database (SQLAlchemy over
``service.tables``, in one snapshot), the brain's row, tasks, sample log, versions and jobs; and
from the version store, each version's predictions on the probe set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.history.record import Op, Recorder
from bench.history.reference import one_thread, order_free
from bench.history.stacks import job_pid
from bench.history.workload import call
from service.runtime import Runtime, build_runtime
from service.settings import Settings
from service.tables import Brain, Job, Sample, Task, Version
from service.versions import input_dim


class State:
    """Read access to a stack's database and version store (a runtime without a job executor)."""

    def __init__(self, settings: Settings) -> None:
        self.rt: Runtime = build_runtime(settings, executor=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.rt.db.session() as s:
            yield s

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """One consistent read of everything (REPEATABLE READ on Postgres; a SQLite read
        transaction is a snapshot already)."""
        with self.rt.db.sessions() as s, s.begin():
            if s.get_bind().dialect.name == "postgresql":
                s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield s

    def close(self) -> None:
        self.rt.close()


def _alive(by: str | None) -> bool:
    pid = job_pid(by)
    if pid is None:
        return True  # another machine's: assume it lives
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def busy_jobs(state: State, brain_id: int) -> list[str]:
    """Jobs of the brain that will still run: running in a live process, or queued by a live one
    or since taken by a worker (a job queued by a process that died before a worker took it may
    never have been sent)."""
    with state.session() as s:
        jobs = s.scalars(select(Job).where(Job.brain_id == brain_id, Job.state.in_(("queued", "running")))).all()
        out = []
        for job in jobs:
            events = job.events or []
            last = {e.get("event"): e for e in events}
            if job.state == "running":
                alive = "started" in last and _alive(last["started"].get("by"))
            else:
                taken = "received" in last or "retrying" in last or "queued" not in last
                alive = taken or _alive(last["queued"].get("by"))
            if alive:
                out.append(job.id)
        return out


def drain(state: State, urls: Sequence[str], brains: Sequence[str], history: Sequence[Op], out: Path, *,
          timeout: float = 90.0, nudge_every: float = 3.0) -> list[str]:
    """Wait until the brains are quiet (see the module docstring); what did not settle."""
    recorder = Recorder(out / "history-drain.jsonl")
    unsettled = []
    try:
        with httpx.Client(base_url=urls[0], timeout=30) as http:
            for name in brains:
                with state.session() as s:
                    brain_id = s.scalar(select(Brain.id).where(Brain.name == name))
                acked = [op for op in history
                         if op.brain == name and op.kind in ("add", "resend") and op.outcome == "ok"]
                deadline, nudged, seq = time.monotonic() + timeout, time.monotonic(), 0
                while True:
                    outcome, _, body, _ = call(http, "GET", f"/v1/brains/{name}")
                    pending = body["samples_pending"] if outcome == "ok" else None
                    busy = busy_jobs(state, brain_id)
                    if pending == 0 and not busy:
                        break
                    if time.monotonic() > deadline:
                        unsettled.append(f"{name}: {pending} samples pending, jobs {busy}")
                        break
                    if pending and not busy and acked and time.monotonic() - nudged > nudge_every:
                        seq += 1
                        nudged = time.monotonic()
                        batch = acked[0]
                        invoke = time.time()
                        o, status, answer, error = call(http, "POST", f"/v1/brains/{name}/samples", json=batch.request)
                        recorder.record(Op(id=f"drain:{name}:{seq}", client="drain", kind="resend", brain=name,
                                           invoke=invoke, complete=time.time(), outcome=o, status=status,
                                           request=batch.request, response=answer, error=error))
                    time.sleep(0.1)
    finally:
        recorder.close()
    return unsettled


# -- the final state -----------------------------------------------------------------------------------
def _epoch(value: datetime | str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


def _predictions(learner, probe: np.ndarray, labels: list) -> list[dict]:
    if not labels:
        return []
    mask = torch.zeros(learner.num_classes, dtype=torch.bool)
    mask[: len(labels)] = True
    with torch.inference_mode():
        conf, idx = learner.predict(torch.from_numpy(probe), mask).max(dim=1)
    return [{"label": labels[i], "confidence": float(c)} for i, c in zip(idx.tolist(), conf.tolist())]


def read_state(state: State, url: str, brains: Sequence[str], probe: list[list[float]]) -> dict[str, Any]:
    """The final state of ``brains`` (the checker's input; see ``bench.history.checker``)."""
    out: dict[str, Any] = {"brains": {}}
    with httpx.Client(base_url=url, timeout=60) as http:
        for name in brains:
            served = http.post(f"/v1/brains/{name}/predict", json={"inputs": [{"x": x} for x in probe]})
            if served.status_code == 200:
                predictions = {"version": served.json()["version"], "items": served.json()["predictions"]}
            else:  # nothing learned yet (409)
                predictions = {"version": None, "items": [], "status": served.status_code}
            pending = http.get(f"/v1/brains/{name}").json()["samples_pending"]
            out["brains"][name] = {**_rows(state, name), "probe": probe, "predictions": predictions,
                                   "samples_pending": pending}
    with one_thread():
        for name, brain in out["brains"].items():
            brain["version_predictions"] = _version_predictions(state, name, brain, probe)
    return out


def _rows(state: State, name: str) -> dict[str, Any]:
    with state.snapshot() as s:
        brain = s.scalar(select(Brain).where(Brain.name == name))
        tasks = s.scalars(select(Task).where(Task.brain_id == brain.id).order_by(Task.id)).all()
        samples = s.execute(select(Sample.id, Sample.task_id, Sample.sample_key, Sample.label, Sample.x)
                            .where(Sample.brain_id == brain.id).order_by(Sample.id)).all()
        versions = s.scalars(select(Version).where(Version.brain_id == brain.id).order_by(Version.number)).all()
        jobs = s.scalars(select(Job).where(Job.brain_id == brain.id).order_by(Job.created_at)).all()
        dim = input_dim(brain.input_shape, brain.encoder)
        return {
            "id": brain.id, "strategy": brain.strategy, "params": brain.params, "seed": brain.seed,
            "num_classes": brain.max_labels, "input_dim": dim, "labels": list(brain.labels),
            "learned_position": brain.learned_position, "samples_learned": brain.samples_learned,
            "current_version": brain.current_version,
            "tasks": [{"id": t.id, "name": t.name, "labels": list(t.labels)} for t in tasks],
            "samples": [{"id": r.id, "task_id": r.task_id, "key": r.sample_key, "label": r.label,
                         "x": np.frombuffer(r.x, dtype="<f4", count=dim).tolist()} for r in samples],
            "versions": [{"number": v.number, "kind": v.kind, "log_position": v.log_position,
                          "samples_learned": v.samples_learned, "stats": dict(v.stats or {}),
                          "created_at": _epoch(v.created_at), "promoted": v.promoted} for v in versions],
            "jobs": [{"id": j.id, "kind": j.kind, "state": j.state, "attempts": j.attempts, "result": j.result,
                      "error": j.error, "started_at": _epoch(j.started_at), "finished_at": _epoch(j.finished_at),
                      "events": [{**e, "at": _epoch(e.get("at"))} for e in (j.events or [])]} for j in jobs],
        }


def _version_predictions(state: State, name: str, brain: dict[str, Any], probe: list[list[float]]) -> dict[str, list]:
    """Each stored version's predictions on the probe set (brains whose weights the checker can
    compare with a fresh brain's only)."""
    if not order_free(brain["strategy"], brain["params"]):
        return {}
    with state.session() as s:
        row = s.scalar(select(Brain).where(Brain.name == name))
        s.expunge(row)
    x = np.asarray(probe, dtype=np.float32)
    out = {}
    for v in brain["versions"]:
        try:
            learner = state.rt.versions.load(row, v["number"])
        except FileNotFoundError:
            continue
        out[str(v["number"])] = _predictions(learner, x, brain["labels"])
    return out
