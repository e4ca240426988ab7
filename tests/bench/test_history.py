"""The history checker (``bench.history``): the checker on crafted histories (a clean one passes,
each kind of anomaly is found), and a short run against the embedded service with a kill -9 of
the API mid-run (the full stack: ``tests/integration/test_history.py``)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import pytest

from bench.history.checker import KINDS, check
from bench.history.config import Config
from bench.history.record import Op, Recorder, merge, read
from bench.history.reference import Reference, one_thread

PARAMS = {"layers": [{"hidden": 64, "k": 8, "frozen": True}], "ridge": 1.0}
DIM, CLASSES = 4, 10
LABELS = ["a", "b", 2]  # index -> label, as the brain lists them
CENTRES = {"a": [1.0, 0.0, 0.0, -1.0], "b": [0.0, 1.0, -1.0, 0.0], 2: [-1.0, 0.0, 1.0, 0.0]}
PROBE = [CENTRES["a"], CENTRES["b"], CENTRES[2], [0.3, 0.2, -0.4, 0.1]]


# -- a clean world: a history and the final state that matches it ---------------------------------------
def _x(label, i: int) -> list[float]:
    rng = np.random.default_rng(i)
    return [float(v) for v in np.asarray(CENTRES[label]) + rng.normal(0, 0.2, DIM).astype(np.float32)]


# (log id, sample id, label, task): two batches learned by wake versions 2 and 3
SAMPLES = [(1, "s1", "a", "t1"), (2, "s2", "b", "t1"), (3, "s3", "a", "t1"), (4, "s4", "b", "t1"),
           (5, "s5", 2, "t2"), (6, "s6", 2, "t2")]
TASK_ID = {"t1": 10, "t2": 11}


def _op(i: int, kind: str, outcome: str = "ok", *, status: int | None = 200, request=None, response=None,
        at: float | None = None, took: float = 0.1) -> Op:
    at = 100.0 + i if at is None else at
    return Op(id=f"c.{i}:{i}", client=f"p0.{i}", kind=kind, brain="b", invoke=at, complete=at + took,
              outcome=outcome, status=status, request=request or {}, response=response)


def _predictions(ids: list[int], samples=SAMPLES) -> list[dict]:
    """What a correct version that learned log ``ids`` answers on the probe."""
    return copy.deepcopy(_answers(tuple(ids), tuple(samples)))


@functools.cache
def _answers(ids: tuple[int, ...], samples: tuple) -> list[dict]:
    with one_thread():
        ref = Reference(strategy="plastic", params=PARAMS, seed=0, num_classes=CLASSES, input_dim=DIM, labels=LABELS)
        ref.learn([(i, _x(label, i), label, task) for i, _, label, task in samples if i in ids])
        probs = ref.probs(PROBE)
    return [{"label": LABELS[int(p.argmax())], "confidence": float(p.max())} for p in probs]


def _world(*, stated: bool = False) -> tuple[list[Op], dict]:
    """Two batches acknowledged (202) and learned by two wake versions, a read after each, a
    prediction; ``stated``: the versions carry ``base``, ``fence``, ``job`` and ``log_from``."""
    batches = [SAMPLES[:4], SAMPLES[4:]]
    history = []
    for n, batch in enumerate(batches):
        body = {"task": batch[0][3], "samples": [{"id": sid, "label": label, "x": _x(label, i)}
                                                 for i, sid, label, _ in batch]}
        history.append(_op(n, "add", status=202, request=body,
                           response={"accepted": len(batch), "duplicates": 0, "job": f"j{n}"}))
    history.append(_op(2, "read", response={"samples_learned": 4, "current_version": 2, "versions_max": 2,
                                            "log_position_max": 4, "current_log_position": 4}, at=103.0))
    history.append(_op(3, "read", response={"samples_learned": 6, "current_version": 3, "versions_max": 3,
                                            "log_position_max": 6, "current_log_position": 6}, at=106.0))
    history.append(_op(4, "predict", request={"probe": [0, 3]}, at=107.0,
                       response={"version": 3, "predictions": [_predictions([1, 2, 3, 4, 5, 6])[i] for i in (0, 3)]}))
    versions = [
        {"number": 1, "kind": "init", "log_position": 0, "samples_learned": 0, "created_at": 99.0, "stats": {}},
        {"number": 2, "kind": "wake", "log_position": 4, "samples_learned": 4, "created_at": 102.5,
         "stats": {"learned": 4}},
        {"number": 3, "kind": "wake", "log_position": 6, "samples_learned": 6, "created_at": 105.5,
         "stats": {"learned": 2}},
    ]
    if stated:
        versions[0]["stats"].update(base=None, fence=None, job=None)
        versions[1]["stats"].update(base=1, fence=1, job="j0", log_from=0)
        versions[2]["stats"].update(base=2, fence=2, job="j1", log_from=4)
    state = {
        "strategy": "plastic", "params": PARAMS, "seed": 0, "num_classes": CLASSES, "input_dim": DIM,
        "labels": list(LABELS), "learned_position": 6, "samples_learned": 6, "current_version": 3,
        "samples_pending": 0,
        "tasks": [{"id": 10, "name": "t1", "labels": [0, 1]}, {"id": 11, "name": "t2", "labels": [2]}],
        "samples": [{"id": i, "task_id": TASK_ID[task], "key": sid, "label": LABELS.index(label), "x": _x(label, i)}
                    for i, sid, label, task in SAMPLES],
        "versions": versions,
        "jobs": [],
        "probe": PROBE,
        "predictions": {"version": 3, "items": _predictions([1, 2, 3, 4, 5, 6])},
        "version_predictions": {"1": _predictions([]), "2": _predictions([1, 2, 3, 4]),
                                "3": _predictions([1, 2, 3, 4, 5, 6])},
    }
    return history, {"brains": {"b": state}}


def _kinds(history, final) -> dict[str, int]:
    return check(history, final).by_kind()


@pytest.mark.parametrize("stated", [False, True], ids=["inferred", "stated"])
def test_a_clean_history_passes(stated: bool) -> None:
    history, final = _world(stated=stated)
    report = check(history, final)
    assert report.ok, [a.as_dict() for a in report.anomalies]
    assert report.stats["weights_checked"]["b"] == 3
    notes = " ".join(report.notes)
    assert ("fencing: not checkable (no fence/base in stats)" in notes) is not stated
    assert ("wake ranges inferred" in notes) is not stated


# -- each kind of anomaly ------------------------------------------------------------------------------------
def _state(final: dict) -> dict:
    return final["brains"]["b"]


def _row(final: dict, log_id: int) -> dict:
    return next(r for r in _state(final)["samples"] if r["id"] == log_id)


def _version(final: dict, number: int) -> dict:
    return next(v for v in _state(final)["versions"] if v["number"] == number)


def lost_sample(h, f):
    _state(f)["samples"].remove(_row(f, 6))


def duplicate_sample(h, f):
    _state(f)["samples"].append({**_row(f, 6), "id": 7})


def phantom_sample(h, f):
    _state(f)["samples"].append({**_row(f, 6), "id": 7, "key": "nobody-sent-it"})


def failed_write_applied(h, f):
    h[1].outcome, h[1].status = "fail", 422


def wrong_label(h, f):
    _row(f, 1)["label"] = 1


def corrupt_sample(h, f):
    _row(f, 1)["x"][0] += 0.5


def wrong_task(h, f):
    _row(f, 5)["task_id"] = 10


def bad_answer(h, f):
    h[0].response["duplicates"] = 1


def lost_label(h, f):
    _state(f)["labels"] = ["a", "b"]


def duplicate_label(h, f):
    _state(f)["labels"] = ["a", "b", 2, "a"]


def shared_index(h, f):  # the label race: "b" logged under "a"'s index, its own label lost
    _row(f, 2)["label"] = 0


def task_missing_label(h, f):
    _state(f)["tasks"][1]["labels"] = []


def not_learned(h, f):
    _state(f).update(learned_position=4, samples_learned=4, current_version=2)
    _state(f)["versions"].pop()


def learned_count(h, f):
    _state(f)["samples_learned"] = 10


def learned_twice(h, f):  # two concurrent wakes from the same cursor: both learned rows 1-4
    v = _version(f, 3)
    v["stats"]["learned"] = 6


def range_gap(h, f):
    v = _version(f, 3)
    v["stats"]["learned"] = 1


def learned_position_regress(h, f):
    _version(f, 3)["log_position"] = 4


def non_monotonic(h, f):
    h.append(_op(9, "read", at=108.0, response={"samples_learned": 4, "current_version": 2, "versions_max": 3,
                                                "log_position_max": 6, "current_log_position": 4}))


def version_order(h, f):
    _version(f, 3)["created_at"] = 101.0


def overlapping_writers(h, f):  # a sleep consolidated from 103 to 106.5; version 3 published at 105.5
    _state(f)["versions"].append({"number": 4, "kind": "sleep", "log_position": 6, "samples_learned": 6,
                                  "created_at": 106.5, "stats": {"seconds": 3.5}})
    _state(f)["version_predictions"]["4"] = _predictions([1, 2, 3, 4, 5, 6])


def fence_regress(h, f):
    _version(f, 3)["stats"]["fence"] = 0


def shared_fence(h, f):
    _version(f, 3)["stats"]["fence"] = 1


def lost_update(h, f):  # version 3 built on version 1, as version 2 was
    _version(f, 3)["stats"]["base"] = 1


def version_misses_samples(h, f):  # a sleep on top of version 2 claims version 3's log position
    _state(f)["versions"].append({"number": 4, "kind": "sleep", "log_position": 6, "samples_learned": 6,
                                  "created_at": 107.5, "stats": {"base": 2, "fence": 3, "job": "j3", "seconds": 0.1}})
    _state(f)["version_predictions"]["4"] = _predictions([1, 2, 3, 4])


def weights_mismatch(h, f):  # version 3 claims rows 5 and 6 but holds only 1-4
    _state(f)["version_predictions"]["3"] = _predictions([1, 2, 3, 4])


def served_mismatch(h, f):
    h[4].response["predictions"][0] = {"label": "b", "confidence": 0.9}


def server_error(h, f):
    h.append(_op(9, "add", "info", status=500, request={"task": "t3", "samples": []}))


FAULTS = {f.__name__.replace("_", "-"): f for f in (
    lost_sample, duplicate_sample, phantom_sample, failed_write_applied, wrong_label, corrupt_sample, wrong_task,
    bad_answer, lost_label, duplicate_label, shared_index, task_missing_label, not_learned, learned_count,
    learned_twice, range_gap, learned_position_regress, non_monotonic, version_order, overlapping_writers,
    fence_regress, shared_fence, lost_update, version_misses_samples, weights_mismatch, served_mismatch,
    server_error,
)}
STATED_ONLY = {"fence-regress", "shared-fence", "lost-update", "version-misses-samples"}


def test_every_kind_of_anomaly_has_a_crafted_history() -> None:
    assert set(FAULTS) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_each_anomaly_is_found(kind: str) -> None:
    history, final = _world(stated=kind in STATED_ONLY)
    FAULTS[kind](history, final)
    report = check(history, final)
    found = [a for a in report.anomalies if a.kind == kind]
    assert found, (kind, report.by_kind())
    assert all(a.ids for a in found)  # every anomaly names what shows it


def test_the_label_race_is_reported_as_lost_labels_and_shared_indices() -> None:
    """Two labels computed from the same stale list: "b" got "a"'s index, "b" is not listed."""
    history, final = _world()
    _state(final)["labels"] = ["a", 2]
    for row in _state(final)["samples"]:
        row["label"] = {"a": 0, "b": 0, 2: 1}[next(label for i, _, label, _ in SAMPLES if i == row["id"])]
    kinds = _kinds(history, final)
    assert {"lost-label", "shared-index", "wrong-label"} <= set(kinds)


def test_an_indeterminate_write_may_or_may_not_be_in_the_log() -> None:
    history, final = _world()
    history[1].outcome, history[1].status, history[1].response = "info", None, None
    assert check(history, final).ok  # logged though unanswered
    lost = copy.deepcopy(final)
    _state(lost)["samples"] = [r for r in _state(lost)["samples"] if r["id"] <= 4]
    _state(lost).update(learned_position=4, samples_learned=4, current_version=2,
                        predictions={"version": 2, "items": _predictions([1, 2, 3, 4])})
    _state(lost)["versions"].pop()
    kinds = _kinds(history[:2], lost)  # nor logged: no lost sample (its reads and predictions left out)
    assert kinds == {}, kinds


def test_a_promote_that_rolled_back_restricts_nothing_when_the_order_is_known() -> None:
    """Version 2 promoted after version 3: the next wake (rows 7, 8) is built on version 2, so it
    holds rows 1-4 and 7-8, not 5-6 (samples learned by later versions are not learned again)."""
    history, final = _world()
    more = [(7, "s7", "a", "t1"), (8, "s8", "b", "t1")]
    samples = SAMPLES + more
    body = {"task": "t1", "samples": [{"id": sid, "label": label, "x": _x(label, i)} for i, sid, label, _ in more]}
    history.append(_op(10, "promote", request={"version": 2}, at=108.0, took=0.2,
                       response={"number": 2, "current": True}))
    history.append(_op(11, "add", status=202, request=body, at=109.0,
                       response={"accepted": 2, "duplicates": 0, "job": "j2"}))
    state = _state(final)
    state["samples"] += [{"id": i, "task_id": 10, "key": sid, "label": LABELS.index(label), "x": _x(label, i)}
                         for i, sid, label, _ in more]
    state["tasks"][0]["labels"] = [0, 1]
    state["versions"].append({"number": 4, "kind": "wake", "log_position": 8, "samples_learned": 8,
                              "created_at": 110.0, "stats": {"learned": 2}})
    state.update(learned_position=8, samples_learned=8, current_version=4)
    rolled = _predictions([1, 2, 3, 4, 7, 8], samples)
    state["version_predictions"]["4"] = rolled
    state["predictions"] = {"version": 4, "items": rolled}
    report = check(history, final)
    assert report.ok, [a.as_dict() for a in report.anomalies]
    assert report.stats["weights_checked"]["b"] == 4
    assert any(n.startswith("b: rollbacks: bases inferred") for n in report.notes), report.notes
    # had the wake been built on version 3 (no rollback), its weights would hold rows 5 and 6 too
    state["version_predictions"]["4"] = _predictions([1, 2, 3, 4, 5, 6, 7, 8], samples)
    assert "weights-mismatch" in _kinds(history, final)


def test_a_promote_overlapping_a_publish_takes_the_base_the_weights_match() -> None:
    """Promote of version 2 answered while version 3 was published: version 3 may be built on 1 or
    2; its weights decide, and a version matching neither is an anomaly."""
    history, final = _world()
    history.append(_op(10, "promote", request={"version": 1}, at=105.0, took=1.0))
    report = check(history, final)
    assert report.ok, [a.as_dict() for a in report.anomalies]
    assert any(n.startswith("b: rollback: prediction check restricted") for n in report.notes), report.notes
    _state(final)["version_predictions"]["3"] = _predictions([1, 2, 3])
    assert "weights-mismatch" in _kinds(history, final)


def test_the_history_round_trips_through_json_lines(tmp_path: Path) -> None:
    history, _ = _world()
    recorder = Recorder(tmp_path / "history-p0.jsonl")
    for op in reversed(history):
        recorder.record(op)
    recorder.close()
    merged = merge([tmp_path / "history-p0.jsonl"], tmp_path / "history.jsonl")
    assert merged == sorted(history, key=lambda op: (op.invoke, op.id))
    assert list(read(tmp_path / "history.jsonl")) == merged


# -- a short run against the embedded service ---------------------------------------------------------------
def assert_no_anomalies(report) -> None:
    assert report.ok, [f"{a.kind}: {a.detail}" for a in report.anomalies][:20]


# Before issue 14's fixes this run found the SQLite label race every time: lost labels, samples
# under another label's index, tasks without their labels, the predictions that follow, and 500s
# from two first POSTs of one new task (docs/reliability.md, "The history checker").
def test_a_short_embedded_run_with_an_api_kill_has_no_anomalies(tmp_path: Path) -> None:
    from bench.history.run import run

    config = Config(stack="embedded", clients=16, processes=2, process_clients=2, ops=300, faults=["kill-api"],
                    out=tmp_path)
    outcome = run(config)
    figures = outcome.figures
    assert figures["faults_injected"] == ["kill-api"] and not figures["nemesis_errors"]
    assert figures["by_kind_and_outcome"]["add"]["ok"] > 50
    assert not figures["unsettled"], figures["unsettled"]
    assert (tmp_path / "history.jsonl").exists() and (tmp_path / "summary.txt").read_text() == outcome.summary
    assert_no_anomalies(outcome.report)
