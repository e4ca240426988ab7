"""The clients: threads of this process and of client processes, each running a sequence of random
operations against the brains and recording every one (``bench.history.record``).

Operations (``Op.kind``):

- ``add``: a batch of 1-6 new samples (fresh ids) of the client's labels and a few shared ones;
  every client's first operation brings a label of its own to the main brain at the same moment
  (the start is a barrier), and later ones bring its further labels. The task is ``t<k>``, ``k``
  growing with the client's operation count, so the clients reach each new task together;
- ``resend``: an earlier batch again, same ids and content (first those whose answer was lost);
- ``predict``: four inputs of the probe set (:meth:`Data.probe`);
- ``read``: ``GET`` the brain and its versions (samples learned, current version, log positions);
- ``sleep``: ``POST .../sleep`` without waiting;
- ``promote``: read the current version and promote it (a rollback only if a version was
  published in between).

A client counts an operation against its budget once it reached the service (a refused connection
is recorded, backed off from and retried), and goes on past its budget (up to :data:`OVERRUN` times
it) until the nemesis has injected every fault, so that the faults strike mid-load. At the end it
resends the batches whose outcome it does not know, as a client would.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.history.record import Op, Recorder

MAIN, SLOW = "main", "slow"
SHARED_LABELS = ("shared-a", "shared-b", 0, 1)  # integer labels too: 1 and "1" are different labels
NOISE = 0.3
PROBE_RANDOM = 16  # random probe points besides every label's centre
PROBE_BASE = len(SHARED_LABELS) + PROBE_RANDOM
OVERRUN = 4


@dataclass(frozen=True)
class Plan:
    """What every client needs to know (picklable: client processes get it)."""

    urls: tuple[str, ...]
    dim: int
    seed: int
    ops_per_client: int
    labels_per_client: int
    slow_share: float  # share of operations on the slow brain
    sleep_slow: bool = True  # clients' sleeps go to the slow brain too (not when its sleeps are long)
    task_every: int = 8  # operations of a client per task
    think: float = 0.01  # longest pause between two operations, seconds
    timeout: float = 30.0
    settle: float = 20.0  # longest time spent resending unsure batches at the end
    out: str = "."

    def client_names(self, process: str, threads: int) -> list[str]:
        return [f"{process}.{t}" for t in range(threads)]


class Data:
    """Labelled points: a Gaussian cluster per label (its centre drawn from the label's name)."""

    def __init__(self, dim: int, seed: int) -> None:
        self.dim, self.seed = dim, seed

    def centre(self, label: str | int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(label_key(label).encode())])
        return rng.normal(0.0, 1.0, self.dim)

    def point(self, label: str | int, rng: np.random.Generator) -> list[float]:
        x = (self.centre(label) + rng.normal(0.0, NOISE, self.dim)).astype(np.float32)
        return [float(v) for v in x]  # float32 values: the log stores exactly what was sent

    def probe(self, more_labels: list[str | int] = ()) -> list[list[float]]:
        """The centres of the shared labels, :data:`PROBE_RANDOM` points between the clusters, then
        the centres of ``more_labels``. Clients predict on the first two parts (:data:`PROBE_BASE`
        rows); the final state's predictions cover it all."""
        rng = np.random.default_rng([self.seed, 7])
        rows = [self.centre(label) for label in SHARED_LABELS] + list(rng.normal(0.0, 1.0, (PROBE_RANDOM, self.dim)))
        rows += [self.centre(label) for label in more_labels]
        return [[float(v) for v in np.asarray(row, dtype=np.float32)] for row in rows]


def label_key(label: str | int) -> str:
    return f"{type(label).__name__}:{label}"


def own_labels(client: str, n: int) -> list[str]:
    return [f"{client}-L{k}" for k in range(n)]


def client_labels(plan: Plan, clients: list[str]) -> list[str]:
    return [label for c in clients for label in own_labels(c, plan.labels_per_client)]


# -- one client ------------------------------------------------------------------------------------
def call(http: httpx.Client, method: str, path: str, **kw: Any) -> tuple[str, int | None, Any, str | None]:
    """One request: (outcome, status, JSON body, error)."""
    try:
        r = http.request(method, path, **kw)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
        return "fail", None, None, f"{type(exc).__name__}: {exc}"
    except httpx.HTTPError as exc:  # sent, no answer: it may have taken effect
        return "info", None, None, f"{type(exc).__name__}: {exc}"
    try:
        body = r.json()
    except ValueError:
        body = r.text[:500]
    outcome = "ok" if r.status_code < 300 else "fail" if r.status_code < 500 else "info"
    return outcome, r.status_code, body, None


@dataclass
class Batch:
    brain: str
    body: dict[str, Any]
    settled: bool = False  # answered 2xx or 4xx at least once


@dataclass
class Signals:
    """Shared by the clients of every process (multiprocessing objects)."""

    progress: Any  # Value: operations done by every client
    ready: Any  # Value: client groups ready to start
    go: Any  # Event: start
    calm: Any  # Event: the nemesis is done; clients may stop once their budget is spent


@dataclass
class Client:
    name: str
    plan: Plan
    recorder: Recorder
    signals: Signals
    data: Data = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng([self.plan.seed, zlib.crc32(self.name.encode())])
        self.data = Data(self.plan.dim, self.plan.seed)
        index = int(self.name.rsplit(".", 1)[1]) + zlib.crc32(self.name.split(".")[0].encode())
        self.http = httpx.Client(base_url=self.plan.urls[index % len(self.plan.urls)], timeout=self.plan.timeout)
        self.labels = own_labels(self.name, self.plan.labels_per_client)
        self.introduced = 0
        self.batches: list[Batch] = []
        self.seq = 0
        self.probe = self.data.probe()

    # the loop
    def run(self) -> None:
        done, refused, budget = 0, 0, self.plan.ops_per_client
        while done < budget or (not self.signals.calm.is_set() and done < OVERRUN * budget):
            op = self.step(done)
            if op.status is None and op.outcome == "fail":  # refused: the API is down
                refused += 1
                time.sleep(min(1.0, 0.05 * 2**refused))
                continue
            done, refused = done + 1, 0
            with self.signals.progress.get_lock():
                self.signals.progress.value += 1
            time.sleep(self.rng.uniform(0.0, self.plan.think))
        self.settle()
        self.http.close()

    def step(self, done: int) -> Op:
        if done == 0:
            return self.add(MAIN, done, new_label=True)
        unsure = [b for b in self.batches if not b.settled]
        if unsure and self.rng.random() < 0.5:
            return self.resend(unsure[0])
        brain = SLOW if self.rng.random() < self.plan.slow_share else MAIN
        r = self.rng.random()
        if r < 0.45:
            return self.add(brain, done, new_label=self.introduced < len(self.labels) and self.rng.random() < 0.3)
        if r < 0.53 and self.batches:
            return self.resend(self.batches[int(self.rng.integers(len(self.batches)))])
        if r < 0.70:
            return self.predict(MAIN)
        if r < 0.88:
            return self.read(brain)
        if r < 0.96:
            return self.sleep(brain if self.plan.sleep_slow else MAIN)
        return self.promote(brain)

    def settle(self) -> None:
        """Resend the batches whose outcome is unknown until each is answered (or time is up)."""
        deadline = time.monotonic() + self.plan.settle
        while time.monotonic() < deadline:
            unsure = [b for b in self.batches if not b.settled]
            if not unsure:
                return
            op = self.resend(unsure[0])
            if op.outcome != "ok":
                time.sleep(0.5)

    # operations
    def _op(self, kind: str, brain: str | None, request: dict, method: str, path: str, **kw: Any) -> Op:
        self.seq += 1
        invoke = time.time()
        outcome, status, body, error = call(self.http, method, path, **kw)
        op = Op(id=f"{self.name}:{self.seq}", client=self.name, kind=kind, brain=brain, invoke=invoke,
                complete=time.time(), outcome=outcome, status=status, request=request, response=body, error=error)
        self.recorder.record(op)
        return op

    def add(self, brain: str, done: int, *, new_label: bool) -> Op:
        labels: list[str | int] = list(SHARED_LABELS) + self.labels[: self.introduced]
        first = None
        if new_label and self.introduced < len(self.labels):
            first = self.labels[self.introduced]
            self.introduced += 1
        n = 1 if done == 0 else int(self.rng.integers(1, 7))
        samples = []
        for i in range(n):
            label = first if (i == 0 and first is not None) else labels[int(self.rng.integers(len(labels)))]
            samples.append({"id": f"{self.name}-{self.seq + 1}-{i}", "label": label,
                            "x": self.data.point(label, self.rng)})
        body = {"task": f"t{done // self.plan.task_every}", "samples": samples}
        batch = Batch(brain, body)
        self.batches.append(batch)
        return self._send(batch, "add")

    def resend(self, batch: Batch) -> Op:
        return self._send(batch, "resend")

    def _send(self, batch: Batch, kind: str) -> Op:
        op = self._op(kind, batch.brain, batch.body, "POST", f"/v1/brains/{batch.brain}/samples", json=batch.body)
        if op.status is not None and op.status < 500:
            batch.settled = True
        return op

    def predict(self, brain: str) -> Op:
        picks = sorted(int(i) for i in self.rng.choice(PROBE_BASE, 4, replace=False))
        return self._op("predict", brain, {"probe": picks}, "POST", f"/v1/brains/{brain}/predict",
                        json={"inputs": [{"x": self.probe[i]} for i in picks]})

    def read(self, brain: str) -> Op:
        self.seq += 1
        invoke = time.time()
        outcome, status, body, error = call(self.http, "GET", f"/v1/brains/{brain}")
        response = None
        if outcome == "ok":
            response = {"samples_learned": body["samples_learned"], "samples_pending": body["samples_pending"],
                        "current_version": body["current_version"], "labels": body["labels"]}
            outcome, status, versions, error = call(self.http, "GET", f"/v1/brains/{brain}/versions")
            if outcome == "ok":
                response.update(version_summary(versions))
        op = Op(id=f"{self.name}:{self.seq}", client=self.name, kind="read", brain=brain, invoke=invoke,
                complete=time.time(), outcome=outcome, status=status, response=response, error=error)
        self.recorder.record(op)
        return op

    def sleep(self, brain: str) -> Op:
        return self._op("sleep", brain, {}, "POST", f"/v1/brains/{brain}/sleep")

    def promote(self, brain: str) -> Op:
        """Promote the version just read as current (a no-op unless one was published meanwhile)."""
        self.seq += 1
        invoke = time.time()
        outcome, status, versions, error = call(self.http, "GET", f"/v1/brains/{brain}/versions")
        target = versions.get("current") if outcome == "ok" else None
        if target is None:  # nothing was promoted
            op = Op(id=f"{self.name}:{self.seq}", client=self.name, kind="promote", brain=brain, invoke=invoke,
                    complete=time.time(), outcome="fail", status=status, request={"version": None},
                    error=error or "no current version read")
        else:
            outcome, status, body, error = call(self.http, "POST", f"/v1/brains/{brain}/versions/{target}/promote")
            op = Op(id=f"{self.name}:{self.seq}", client=self.name, kind="promote", brain=brain, invoke=invoke,
                    complete=time.time(), outcome=outcome, status=status, request={"version": target},
                    response=body, error=error)
        self.recorder.record(op)
        return op


def version_summary(versions: dict) -> dict[str, Any]:
    """What a read records of ``GET .../versions``: the newest number, the highest log position and
    the current version's log position."""
    rows = versions.get("versions") or []
    current = next((v for v in rows if v.get("current")), None)
    return {"versions_max": max((v["number"] for v in rows), default=None),
            "log_position_max": max((v["log_position"] for v in rows), default=None),
            "current_log_position": current["log_position"] if current else None}


# -- threads and processes ---------------------------------------------------------------------------
def run_threads(plan: Plan, process: str, threads: int, signals: Signals) -> None:
    """``threads`` clients of ``process``, started together once ``signals.go`` is set."""
    recorder = Recorder(Path(plan.out) / f"history-{process}.jsonl")
    clients = [Client(name, plan, recorder, signals) for name in plan.client_names(process, threads)]
    workers = [threading.Thread(target=_client_main, args=(c, signals.go), daemon=True) for c in clients]
    for w in workers:
        w.start()
    with signals.ready.get_lock():
        signals.ready.value += 1
    for w in workers:
        w.join()
    recorder.close()


def _client_main(client: Client, go: Any) -> None:
    go.wait()
    client.run()


class Clients:
    """``threads`` clients in this process and ``processes`` client processes of ``per_process``
    clients each. ``start`` returns once every process is ready and all have been let go at once."""

    def __init__(self, plan: Plan, *, threads: int, processes: int, per_process: int) -> None:
        ctx = mp.get_context("spawn")  # no fork of a process with threads
        self.plan = plan
        self.signals = Signals(ctx.Value("l", 0), ctx.Value("l", 0), ctx.Event(), ctx.Event())
        self.names = [*plan.client_names("p0", threads),
                      *(name for p in range(processes) for name in plan.client_names(f"p{p + 1}", per_process))]
        self.procs = [ctx.Process(target=run_threads, args=(plan, f"p{p + 1}", per_process, self.signals), daemon=True)
                      for p in range(processes)]
        self.local = threading.Thread(target=run_threads, args=(plan, "p0", threads, self.signals), daemon=True)
        self.total_ops = plan.ops_per_client * len(self.names)

    def start(self, timeout: float = 120.0) -> None:
        for p in self.procs:
            p.start()
        self.local.start()
        deadline = time.monotonic() + timeout
        while self.signals.ready.value < len(self.procs) + 1:
            if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in self.procs):
                raise RuntimeError("the client processes did not get ready")
            time.sleep(0.02)
        self.signals.go.set()

    def done_fraction(self) -> float:
        return self.signals.progress.value / max(1, self.total_ops)

    def calm(self) -> None:
        """The faults are over: clients stop once their budget is spent."""
        self.signals.calm.set()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.local.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        stuck = [p.pid for p in self.procs if p.is_alive()] + (["p0"] if self.local.is_alive() else [])
        if stuck:
            for p in self.procs:
                if p.is_alive():
                    p.kill()
            raise RuntimeError(f"clients still running after {timeout:.0f} s: {stuck}")

    def parts(self) -> list[Path]:
        return sorted(Path(self.plan.out).glob("history-p*.jsonl"))
