"""The checker: a pure function of a history (``bench.history.record``) and the final state
(``bench.history.final``) that lists the anomalies, each with the ids that show it.

The final state is plain data, one entry per brain under ``final["brains"]``:
``strategy``, ``params``, ``seed``, ``num_classes``, ``input_dim``, ``labels``, ``learned_position``,
``samples_learned``, ``current_version``, ``samples_pending``; ``tasks`` (``id``, ``name``, ``labels``:
indices); ``samples``, the log in order (``id``, ``task_id``, ``key``, ``label``: an index, ``x``);
``versions`` (``number``, ``kind``, ``log_position``, ``samples_learned``, ``stats``, ``created_at``
in epoch seconds); ``jobs`` (``id``, ``kind``, ``state``, ``attempts``, ``result``, ``events``);
``probe`` (inputs), ``predictions`` (the API's final answer on them: ``version``, ``items``) and
``version_predictions`` (``{number: items}``: each stored version's answer on them).

Anomalies by kind (:data:`KINDS`). Where the state does not carry what a check needs (no fencing
tokens or bases in the versions' stats yet, versions pruned, a strategy whose weights depend on the
order of samples, a promote that rolled back), the check is restricted and says so in ``notes``.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.history.record import Op
from bench.history.reference import Reference, agrees, key, one_thread, order_free

KINDS = {
    # the sample log
    "lost-sample": "an acknowledged sample is not in the log",
    "duplicate-sample": "a sample id is in the log more than once",
    "phantom-sample": "a log row no client sent",
    "failed-write-applied": "a log row whose every request was refused (4xx)",
    "wrong-label": "a log row's label index does not map back to the label its client gave",
    "corrupt-sample": "a log row's input differs from what its client sent",
    "wrong-task": "a log row is under another task than its client gave",
    "bad-answer": "a 202 whose accepted + duplicates is not the batch size, or more accepted than logged",
    # labels and tasks
    "lost-label": "a label of an acknowledged sample is missing from the brain's labels",
    "duplicate-label": "a label has more than one index",
    "shared-index": "one index holds samples of two labels",
    "task-missing-label": "a task does not hold the label of one of its samples",
    # learning
    "not-learned": "an acknowledged sample was still unlearned at the end",
    "learned-count": "samples_learned differs from the log rows up to learned_position",
    "learned-twice": "a log row is in two wake versions' ranges",
    "range-gap": "a log row up to learned_position is in no wake version's range",
    "learned-position-regress": "a wake version's log position is not above the previous one's",
    "non-monotonic": "a value read later (in real time) is below one read earlier",
    "version-order": "a later-created version has a smaller number",
    # writers
    "overlapping-writers": "a version was published while another job held the brain's writer lock",
    "fence-regress": "a fencing token decreases with the version number",
    "shared-fence": "two jobs published under the same fencing token",
    "lost-update": "two versions were built on the same base without a promote of it",
    # weights
    "version-misses-samples": "a version's chain of bases misses log rows its log position claims",
    "weights-mismatch": "a version predicts differently from a fresh brain that learned its samples",
    "served-mismatch": "a prediction served as version v differs from version v's stored weights",
    "server-error": "an answer 500",
}
DEFAULT_TOLERANCE = 5e-4  # on a confidence (see bench.history.run.MAIN_PARAMS for the margins)
MAX_IDS = 20  # ids listed per anomaly


@dataclass
class Anomaly:
    kind: str
    brain: str | None
    detail: str
    ids: list[Any] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "brain": self.brain, "detail": self.detail, "ids": self.ids[:MAX_IDS],
                "count": len(self.ids)}


@dataclass
class Report:
    anomalies: list[Anomaly] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, brain: str | None, detail: str, ids: Iterable[Any] = ()) -> None:
        assert kind in KINDS, kind
        self.anomalies.append(Anomaly(kind, brain, detail, list(ids)))

    def note(self, brain: str | None, text: str) -> None:
        self.notes.append(f"{brain}: {text}" if brain else text)

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(a.kind for a in self.anomalies))

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def as_dict(self) -> dict[str, Any]:
        return {"anomalies": [a.as_dict() for a in self.anomalies], "by_kind": self.by_kind(),
                "notes": self.notes, "stats": self.stats}


def check(history: Sequence[Op], final: dict[str, Any], *, tolerance: float = DEFAULT_TOLERANCE) -> Report:
    """Every anomaly of ``history`` against ``final``; see the module docstring. ``tolerance``: on
    a confidence, between a version's answer and a fresh brain's."""
    with one_thread():
        return _check(history, final, tolerance)


def _check(history: Sequence[Op], final: dict[str, Any], tolerance: float) -> Report:
    report = Report()
    errors = [op.id for op in history if op.status == 500]
    if errors:
        report.add("server-error", None, f"{len(errors)} answers 500", errors)
    for name, state in sorted(final.get("brains", {}).items()):
        brain = _Brain(name, [op for op in history if op.brain == name], state, tolerance)
        for step in (_log, _labels, _learned, _monotonic, _versions, _writers, _weights, _jobs):
            step(brain, report)
        report.stats[name] = brain.stats()
    return report


# -- a brain's history and state, indexed ----------------------------------------------------------------
@dataclass
class _Sent:
    label: Any
    x: list[float]
    task: str
    outcomes: set[str] = field(default_factory=set)
    ops: list[str] = field(default_factory=list)

    @property
    def acked(self) -> bool:
        return "ok" in self.outcomes


class _Brain:
    def __init__(self, name: str, ops: list[Op], state: dict[str, Any], tolerance: float) -> None:
        self.name, self.ops, self.state, self.tolerance = name, ops, state, tolerance
        self.labels: list[Any] = list(state.get("labels") or [])
        self.rows: list[dict] = sorted(state.get("samples") or [], key=lambda r: r["id"])
        self.rows_by_key: dict[str, list[dict]] = defaultdict(list)
        for row in self.rows:
            self.rows_by_key[row.get("key")].append(row)
        self.tasks = {t["id"]: t for t in state.get("tasks") or []}
        self.versions = sorted(state.get("versions") or [], key=lambda v: v["number"])
        self.version = {v["number"]: v for v in self.versions}
        self.sent: dict[str, _Sent] = {}
        for op in ops:
            if op.kind in ("add", "resend"):
                for smp in op.request.get("samples", []):
                    s = self.sent.setdefault(smp["id"], _Sent(smp["label"], smp["x"], op.request.get("task")))
                    s.outcomes.add(op.outcome)
                    s.ops.append(op.id)
        self.rollbacks = self._rollbacks()

    def label_of(self, row: dict) -> Any:
        i = row["label"]
        return self.labels[i] if 0 <= i < len(self.labels) else None

    def learned_rows(self) -> list[dict]:
        return [r for r in self.rows if r["id"] <= self.state["learned_position"]]

    def _rollbacks(self) -> list[Op]:
        """Promotes (answered or not) that may have made an older version current: a version
        numbered above their target existed before they completed."""
        out = []
        for op in self.ops:
            target = op.request.get("version") if op.kind == "promote" else None
            if target is None or op.outcome == "fail":
                continue
            if any(v["number"] > target and v["created_at"] < op.complete for v in self.versions):
                out.append(op)
        return out

    def sample(self, row: dict) -> tuple[int, list[float], Any, str]:
        """``(log id, x, label, task)`` of a log row as its client sent it (the row's own when no
        client sent it: a phantom)."""
        sent = self.sent.get(row.get("key"))
        if sent is not None:
            return row["id"], sent.x, sent.label, sent.task
        task = self.tasks.get(row["task_id"], {}).get("name", "?")
        return row["id"], row["x"], self.label_of(row), task

    def stats(self) -> dict[str, Any]:
        jobs = self.state.get("jobs") or []
        return {
            "log_rows": len(self.rows),
            "acknowledged": sum(1 for s in self.sent.values() if s.acked),
            "labels": len(self.labels),
            "tasks": len(self.tasks),
            "versions": len(self.versions),
            "current_version": self.state.get("current_version"),
            "learned_position": self.state.get("learned_position"),
            "samples_learned": self.state.get("samples_learned"),
            "jobs": dict(Counter(j["state"] for j in jobs)),
            "jobs_run_more_than_once": sum(1 for j in jobs if (j.get("attempts") or 0) > 1),
            "rollbacks": [op.id for op in self.rollbacks],
        }


# -- the sample log -------------------------------------------------------------------------------------------
def _log(b: _Brain, report: Report) -> None:
    lost = [i for i, s in b.sent.items() if s.acked and not b.rows_by_key.get(i)]
    if lost:
        report.add("lost-sample", b.name, f"{len(lost)} acknowledged samples are not in the log", lost)
    dup = [k for k, rows in b.rows_by_key.items() if k is not None and len(rows) > 1]
    if dup:
        report.add("duplicate-sample", b.name, f"{len(dup)} sample ids are in the log more than once", dup)
    phantom = [r["id"] for r in b.rows if r.get("key") not in b.sent]
    if phantom:
        report.add("phantom-sample", b.name, f"{len(phantom)} log rows no client sent (log ids)", phantom)
    refused = [r.get("key") for r in b.rows if r.get("key") in b.sent and b.sent[r["key"]].outcomes == {"fail"}]
    if refused:
        report.add("failed-write-applied", b.name, f"{len(refused)} logged samples whose every request failed", refused)
    wrong_label, corrupt, wrong_task = [], [], []
    for row in b.rows:
        sent = b.sent.get(row.get("key"))
        if sent is None:
            continue
        logged = b.label_of(row)
        if logged is None or key(logged) != key(sent.label):
            wrong_label.append(f"{row['key']}: {sent.label!r} logged as {logged!r} (index {row['label']})")
        if not np.array_equal(np.asarray(row["x"], dtype=np.float32), np.asarray(sent.x, dtype=np.float32)):
            corrupt.append(row["key"])
        task = b.tasks.get(row["task_id"], {}).get("name")
        if task != sent.task:
            wrong_task.append(f"{row['key']}: {sent.task!r} logged under {task!r}")
    if wrong_label:
        report.add("wrong-label", b.name, f"{len(wrong_label)} log rows under another label", wrong_label)
    if corrupt:
        report.add("corrupt-sample", b.name, f"{len(corrupt)} log rows with another input", corrupt)
    if wrong_task:
        report.add("wrong-task", b.name, f"{len(wrong_task)} log rows under another task", wrong_task)
    bad = [op.id for op in b.ops if op.kind in ("add", "resend") and op.outcome == "ok"
           and isinstance(op.response, dict)
           and op.response.get("accepted", 0) + op.response.get("duplicates", 0) != len(op.request["samples"])]
    accepted = sum(op.response.get("accepted", 0) for op in b.ops
                   if op.kind in ("add", "resend") and op.outcome == "ok" and isinstance(op.response, dict))
    if accepted > len(b.rows):
        bad.append(f"{accepted} samples answered accepted, {len(b.rows)} in the log")
    if bad:
        report.add("bad-answer", b.name, "answers that do not add up", bad)


# -- labels and tasks ----------------------------------------------------------------------------------------------
def _labels(b: _Brain, report: Report) -> None:
    counts = Counter(key(label) for label in b.labels)
    dup = [k for k, n in counts.items() if n > 1]
    if dup:
        report.add("duplicate-label", b.name, f"{len(dup)} labels listed more than once", dup)
    acked_labels = {key(s.label) for s in b.sent.values() if s.acked}
    lost = sorted(acked_labels - set(counts))
    if lost:
        report.add("lost-label", b.name, f"{len(lost)} of {len(acked_labels)} acknowledged labels are not "
                   f"in the brain's {len(b.labels)} labels", lost)
    holders: dict[int, set[str]] = defaultdict(set)
    for row in b.rows:
        sent = b.sent.get(row.get("key"))
        if sent is not None:
            holders[row["label"]].add(key(sent.label))
    shared = [f"index {i}: {sorted(keys)}" for i, keys in sorted(holders.items()) if len(keys) > 1]
    if shared:
        report.add("shared-index", b.name, f"{len(shared)} label indices hold samples of several labels", shared)
    missing = []
    for row in b.rows:
        task = b.tasks.get(row["task_id"])
        if task is not None and row["label"] not in task["labels"]:
            missing.append(f"{task['name']}: index {row['label']} (log id {row['id']})")
    if missing:
        report.add("task-missing-label", b.name, f"{len(missing)} log rows whose task lacks their label",
                   sorted(set(missing)))


# -- learning -------------------------------------------------------------------------------------------------------
def _learned(b: _Brain, report: Report) -> None:
    position = b.state["learned_position"]
    unlearned = [r["key"] for r in b.rows if r["id"] > position and b.sent.get(r.get("key")) and b.sent[r["key"]].acked]
    if unlearned:
        report.add("not-learned", b.name, f"{len(unlearned)} acknowledged samples unlearned at the end "
                   f"(learned_position {position})", unlearned)
    learned = len(b.learned_rows())
    if b.state["samples_learned"] != learned:
        report.add("learned-count", b.name, f"samples_learned is {b.state['samples_learned']}, the log holds "
                   f"{learned} rows up to learned_position {position}", [b.state["samples_learned"], learned])
    wakes = [v for v in b.versions if v["kind"] == "wake"]
    if any(v["log_position"] > position for v in wakes):
        report.add("learned-position-regress", b.name, f"learned_position {position} is below a wake version's",
                   [v["number"] for v in wakes if v["log_position"] > position])
    previous = None
    for v in wakes:
        if previous is not None and v["log_position"] <= previous["log_position"]:
            report.add("learned-position-regress", b.name,
                       f"wake version {v['number']} at log position {v['log_position']} after version "
                       f"{previous['number']} at {previous['log_position']}", [previous["number"], v["number"]])
        previous = v
    ranges = _wake_ranges(b, report)
    if ranges is None:
        return
    cover: Counter[int] = Counter()
    ids = [r["id"] for r in b.rows]
    for number, (low, high) in ranges.items():
        inside = [i for i in ids if low < i <= high]
        cover.update(inside)
        stated = b.version[number]["stats"].get("learned")
        if stated is not None and stated != len(inside):
            kind = "learned-twice" if stated > len(inside) else "range-gap"
            report.add(kind, b.name, f"wake version {number} says it learned {stated} samples; its range "
                       f"({low}, {high}] holds {len(inside)} log rows", [number])
    twice = [i for i, n in cover.items() if n > 1]
    if twice:
        report.add("learned-twice", b.name, f"{len(twice)} log rows in several wake versions' ranges (log ids)", twice)
    never = [i for i in ids if i <= position and cover[i] == 0]
    if never:
        report.add("range-gap", b.name, f"{len(never)} log rows up to learned_position in no wake range (log ids)",
                   never)


def _wake_ranges(b: _Brain, report: Report) -> dict[int, tuple[int, int]] | None:
    """Each wake version's ``(from, to]`` range of log ids: ``stats["log_from"]`` where the versions
    carry it, else from the previous wake version (which needs every version kept)."""
    wakes = [v for v in b.versions if v["kind"] == "wake"]
    if wakes and all("log_from" in v["stats"] for v in wakes):
        return {v["number"]: (v["stats"]["log_from"], v["log_position"]) for v in wakes}
    numbers = [v["number"] for v in b.versions]
    if numbers != list(range(1, len(numbers) + 1)):
        report.note(b.name, "wake ranges not checkable (versions pruned, no log_from in stats)")
        return None
    report.note(b.name, "wake ranges inferred from consecutive wake versions (no log_from in stats)")
    out, low = {}, 0
    for v in wakes:
        out[v["number"]] = (low, v["log_position"])
        low = max(low, v["log_position"])
    return out


def _monotonic(b: _Brain, report: Report) -> None:
    """Values read by ``read`` operations only grow: a read that began after another ended never
    sees less. The current version (and its log position) only while no promote rolled back."""
    reads = [op for op in b.ops if op.kind == "read" and op.outcome == "ok" and isinstance(op.response, dict)]
    fields = ["samples_learned", "versions_max", "log_position_max"]
    if b.rollbacks:
        report.note(b.name, "rollback: the current version's monotonicity not checked")
    else:
        fields += ["current_version", "current_log_position"]
    for name in fields:
        values = [(op.invoke, op.complete, op.response.get(name), op.id) for op in reads
                  if op.response.get(name) is not None]
        bad = _regressions(values)
        if bad:
            report.add("non-monotonic", b.name, f"{name} read lower after a higher value had been read "
                       f"({len(bad)} reads)", bad)


def _regressions(values: list[tuple[float, float, Any, str]]) -> list[str]:
    """``"<later op> saw v < <earlier op>'s w"`` for every read below one that completed before it began."""
    done = sorted(values, key=lambda v: v[1])
    best: tuple[Any, str] | None = None
    j, out = 0, []
    for invoke, _, value, op in sorted(values, key=lambda v: v[0]):
        while j < len(done) and done[j][1] < invoke:
            if best is None or done[j][2] > best[0]:
                best = (done[j][2], done[j][3])
            j += 1
        if best is not None and value < best[0]:
            out.append(f"{op} saw {value} after {best[1]} saw {best[0]}")
    return out


def _versions(b: _Brain, report: Report) -> None:
    by_time = sorted(b.versions, key=lambda v: (v["created_at"], v["number"]))
    for earlier, later in zip(by_time, by_time[1:]):
        if later["number"] < earlier["number"]:
            report.add("version-order", b.name, f"version {later['number']} created after version "
                       f"{earlier['number']}", [earlier["number"], later["number"]])


# -- writers --------------------------------------------------------------------------------------------------------
def _writers(b: _Brain, report: Report) -> None:
    """No two jobs wrote at once. A sleep (or meta-train) held the writer lock at least from the
    start of its consolidation (``created_at - stats["seconds"]``) to its publish: no other
    version may be published in between. Fencing tokens, where the versions carry them, never
    decrease with the version number, and one token is one job; two versions built on the same
    base (without a promote of that base) are a lost update."""
    for v in b.versions:
        seconds = v["stats"].get("seconds") if v["kind"] in ("sleep", "meta") else None
        if not seconds:
            continue
        low, high = v["created_at"] - float(seconds), v["created_at"]
        inside = [w["number"] for w in b.versions if w is not v and low + 1e-3 < w["created_at"] < high - 1e-3]
        if inside:
            report.add("overlapping-writers", b.name, f"versions {inside} were published while {v['kind']} version "
                       f"{v['number']} consolidated ({float(seconds):.2f} s before its publish)",
                       [v["number"], *inside])
    fenced = [v for v in b.versions if v["stats"].get("fence") is not None]
    if not fenced:
        report.note(b.name, "fencing: not checkable (no fence/base in stats)")
    else:
        top = None
        for v in fenced:
            if top is not None and v["stats"]["fence"] < top["stats"]["fence"]:
                report.add("fence-regress", b.name, f"version {v['number']} has fence {v['stats']['fence']} after "
                           f"version {top['number']}'s {top['stats']['fence']}", [top["number"], v["number"]])
            if top is None or v["stats"]["fence"] >= top["stats"]["fence"]:
                top = v
        jobs: dict[Any, set] = defaultdict(set)
        for v in fenced:
            if v["stats"].get("job") is not None:
                jobs[v["stats"]["fence"]].add(v["stats"]["job"])
        shared = [f"fence {f}: jobs {sorted(j)}" for f, j in sorted(jobs.items()) if len(j) > 1]
        if shared:
            report.add("shared-fence", b.name, "jobs that published under one fencing token", shared)
    based = [v for v in b.versions if v["stats"].get("base") is not None]
    promoted = {op.request.get("version") for op in b.ops if op.kind == "promote" and op.outcome != "fail"}
    children: dict[int, list[int]] = defaultdict(list)
    for v in based:
        children[v["stats"]["base"]].append(v["number"])
    lost = [f"base {base}: versions {kids}" for base, kids in sorted(children.items())
            if len(kids) > 1 and base not in promoted]
    if lost:
        report.add("lost-update", b.name, "versions built on the same base", lost)


# -- weights -------------------------------------------------------------------------------------------------------
@dataclass
class _Chains:
    """What each version was built on (candidate bases) and where each wake version's range of
    the log starts."""

    bases: dict[int, list[int]]
    lows: dict[int, int | None]
    stated: bool  # from the versions' stats, not inferred


def _chains(b: _Brain, report: Report) -> _Chains:
    """Bases and ranges from the versions' stats (``base``, ``log_from``) when they carry them.
    Else a version's base is the version current just before it was published: the previous one,
    or the target of a promote in between (several candidates where promotes may fall on either
    side of a publish); a wake's range starts after the highest wake log position before it."""
    rest = [v for v in b.versions if v["kind"] != "init"]
    if bool(rest) and all("base" in v["stats"] for v in rest) and all(
            "log_from" in v["stats"] for v in rest if v["kind"] == "wake"):
        return _Chains({v["number"]: [v["stats"]["base"]] for v in rest},
                       {v["number"]: v["stats"]["log_from"] for v in rest if v["kind"] == "wake"}, True)
    bases = _inferred_bases(b)
    ambiguous = sorted(n for n, c in bases.items() if len(c) > 1)
    if ambiguous:
        report.note(b.name, f"rollback: prediction check restricted: versions {ambiguous} may have been built on "
                    "more than one version (promotes overlapped their publishes; no base in stats), each is "
                    "checked against the one its weights match")
    elif b.rollbacks:
        report.note(b.name, "rollbacks: bases inferred from the order of publishes and promotes (no base in stats)")
    return _Chains(bases, _inferred_lows(b), False)


def _inferred_bases(b: _Brain) -> dict[int, list[int]]:
    """Each version's possible bases as the history shows them (none after a pruned version)."""
    promotes = [op for op in b.ops if op.kind == "promote" and op.outcome != "fail" and op.request.get("version")]
    out: dict[int, list[int]] = {}
    for prev, v in zip(b.versions, b.versions[1:]):
        if v["number"] != prev["number"] + 1:
            out[v["number"]] = []  # pruned: what was current in between is unknown
            continue
        lo, hi = prev["created_at"], v["created_at"]
        maybe = [p for p in promotes if p.invoke < hi and p.complete > lo]
        surely = [p for p in maybe if p.outcome == "ok" and p.invoke > lo and p.complete < hi]
        candidates = set() if surely else {prev["number"]}
        for p in maybe:  # p may be the last change before v, unless a promote surely came after it
            if not any(q.invoke > p.complete for q in surely if q is not p):
                candidates.add(p.request["version"])
        out[v["number"]] = sorted(candidates)
    return out


def _inferred_lows(b: _Brain) -> dict[int, int | None]:
    """Where each wake version's range starts: after the highest log position of the wake versions
    before it (the brain's learned position then); None after a pruned version."""
    out: dict[int, int | None] = {}
    top, contiguous = 0, True
    for prev, v in zip([None, *b.versions], b.versions):
        contiguous = contiguous and (prev is None or v["number"] == prev["number"] + 1)
        if v["kind"] == "wake":
            out[v["number"]] = top if contiguous else None
            top = max(top, v["log_position"])
    return out


def _added(b: _Brain, chains: _Chains, v: dict) -> set[int] | None:
    """The log ids version ``v`` learned itself (its wake range; none for other kinds), None if unknown."""
    if v["kind"] != "wake":
        return set()
    low = chains.lows.get(v["number"])
    if low is None:
        return None
    return {r["id"] for r in b.rows if low < r["id"] <= v["log_position"]}


def _misses(b: _Brain, chains: _Chains, report: Report) -> None:
    """With stated bases: each version's chain holds every log row up to its log position (fewer
    only after a rollback: samples learned by later versions are not learned again), none beyond."""
    memo: dict[int, set[int] | None] = {}

    def held(number: int) -> set[int] | None:
        if number not in memo:
            v = b.version.get(number)
            memo[number] = None  # a missing version, or a cycle, stays unknown
            if v is not None and v["kind"] == "init":
                memo[number] = set()
            elif v is not None and chains.bases.get(number) and chains.bases[number][0] < number:
                base, added = held(chains.bases[number][0]), _added(b, chains, v)
                memo[number] = None if base is None or added is None else base | added
        return memo[number]

    for v in b.versions:
        chain = held(v["number"])
        if chain is None:
            continue
        upto = {r["id"] for r in b.rows if r["id"] <= v["log_position"]}
        beyond, missing = sorted(chain - upto), sorted(upto - chain)
        if beyond or (missing and not b.rollbacks):
            report.add("version-misses-samples", b.name, f"version {v['number']} (log position {v['log_position']}): "
                       f"its chain of bases misses {len(missing)} log rows and holds {len(beyond)} beyond it",
                       missing or beyond)


MAX_OPTIONS = 4  # sample sets tried per version


def _weights(b: _Brain, report: Report) -> None:
    """Each stored version (and the final served answer) predicts as a fresh brain that learned
    the log rows its chain of bases claims; where the chain is ambiguous, as one of its options."""
    chains = _chains(b, report)
    if chains.stated:
        _misses(b, chains, report)
    _served(b, report)
    state = b.state
    if not order_free(state["strategy"], state["params"]):
        report.note(b.name, f"weights: not checkable against a fresh brain (strategy {state['strategy']!r} "
                    "with these params depends on the order of samples)")
        return
    probe = state.get("probe") or []
    stored = {int(k): v for k, v in (state.get("version_predictions") or {}).items()}
    final = state.get("predictions") or {}
    rows = {r["id"]: r for r in b.rows}
    resolved: dict[int, list[tuple[frozenset[int], Reference]]] = {}
    wrong, checked = [], 0

    def grown(ref: Reference | None, ids: frozenset[int]) -> Reference:
        new = copy.deepcopy(ref) if ref is not None else Reference(
            strategy=state["strategy"], params=state["params"], seed=state["seed"],
            num_classes=state["num_classes"], input_dim=state["input_dim"], labels=b.labels)
        new.learn([b.sample(rows[i]) for i in sorted(ids - new.learned)])
        return new

    for v in b.versions:
        n = v["number"]
        if v["kind"] == "init":
            options = [(frozenset(), grown(None, frozenset()))]
        else:
            added, options = _added(b, chains, v), []
            for base in chains.bases.get(n, []) if added is not None else []:
                for ids, ref in resolved.get(base, []):
                    if all(ids | added != o[0] for o in options):
                        options.append((ids | added, ref))
            options = [(ids, grown(ref, ids)) for ids, ref in options[:MAX_OPTIONS]]
        answers = [("stored", stored[n])] if n in stored else []
        if final.get("version") == n:
            answers.append(("served", final.get("items") or []))
        if not options or not answers:
            resolved[n] = options
            continue
        checked += 1
        verdicts = []
        for ids, ref in options:
            probs = ref.probs(probe)
            verdicts.append((ids, ref, {what: [i for i, p in enumerate(items)
                                               if not agrees(p, probs[i], b.labels, b.tolerance)]
                                        for what, items in answers}))
        matched = [(ids, ref) for ids, ref, bad in verdicts if not any(bad.values())]
        resolved[n] = matched or options
        if not matched:
            bad = min((v for _, _, v in verdicts), key=lambda bad: sum(map(len, bad.values())))
            wrong.append(f"version {n}: " + "; ".join(f"{what} answer differs on probes {rows_[:10]} ({len(rows_)} of "
                                                       f"{len(probe)})" for what, rows_ in bad.items() if rows_))
    if final.get("version") is not None and not resolved.get(final["version"]):
        report.note(b.name, f"the final predictions (version {final['version']}) not checked: its samples are unknown")
    unknown = sorted(n for n, options in resolved.items() if not options)
    if unknown:
        report.note(b.name, f"weights of versions {unknown} not checked: their samples are unknown")
    report.stats.setdefault("weights_checked", {})[b.name] = checked
    if wrong:
        report.add("weights-mismatch", b.name, "versions that predict differently from a fresh brain that learned "
                   "the samples they claim", wrong)


def _served(b: _Brain, report: Report) -> None:
    """Predictions served during the run as version v equal version v's stored weights' (on the
    probe rows they asked about)."""
    if not order_free(b.state["strategy"], b.state["params"]):
        return  # labels unseen by a version still compete in other strategies: the mask matters
    stored = {int(k): v for k, v in (b.state.get("version_predictions") or {}).items()}
    learned = {v["number"]: v["samples_learned"] for v in b.versions}
    bad = []
    for op in b.ops:
        if op.kind != "predict" or op.outcome != "ok" or not isinstance(op.response, dict):
            continue
        items = stored.get(op.response.get("version"))
        if items is None or not learned.get(op.response.get("version")):
            continue  # with nothing learned every label ties: the answer depends on how many there were
        for i, got in zip(op.request["probe"], op.response["predictions"]):
            want = items[i]
            if key(got["label"]) != key(want["label"]) or abs(got["confidence"] - want["confidence"]) > b.tolerance:
                bad.append(f"{op.id}: probe {i} served {got['label']!r} {got['confidence']:.4f}, version "
                           f"{op.response['version']} gives {want['label']!r} {want['confidence']:.4f}")
                break
    if bad:
        report.add("served-mismatch", b.name, f"{len(bad)} predictions differ from their version's stored weights", bad)


def _jobs(b: _Brain, report: Report) -> None:
    """Jobs left queued at the end: not an anomaly of the state, but work that never ran (e.g. a
    sleep whose message was lost with the API that queued it: it also keeps scheduled sleeps away)."""
    stuck = [j["id"] for j in b.state.get("jobs") or [] if j["state"] == "queued"]
    if stuck:
        report.note(b.name, f"jobs still queued at the end: {stuck}")
