"""bench.trace: the files a sample and a prediction pass through, and a ratchet on their number
(issue 16: one home per concept; a change that adds a file to either path must say why here)."""

from pathlib import Path

from bench.trace import PLUMBING, trace

# Measured when the ratchet was set (README, "How it works"); lower them as the paths shrink.
SAMPLE_FILES, NEW_TASK_FILES, PREDICT_FILES = 27, 31, 10


def test_the_paths_pass_through_the_expected_homes_and_no_more_files_than_before(tmp_path: Path) -> None:
    traced = trace(tmp_path)["files"]
    sample = [f for f in traced["sample"] if f not in PLUMBING]
    new_task = [f for f in traced["sample, new task"] if f not in PLUMBING]
    predict = [f for f in traced["predict"] if f not in PLUMBING]
    assert {"service/api/learning.py", "service/brains.py", "service/samplelog.py", "service/orchestration.py",
            "service/versions.py", "models/plastic.py"} <= set(sample)
    assert {"service/api/learning.py", "service/serving.py", "models/plastic.py"} <= set(predict)
    # the warm predict path reads no database and runs no job machinery
    assert not {"service/db.py", "service/tables.py", "service/jobs.py", "service/versions.py"} & set(predict)
    assert "service/budgets.py" in new_task and "service/budgets.py" not in sample  # a new task's size check
    assert not any(f.startswith("bench/") for path in traced.values() for f in path)
    assert len(sample) <= SAMPLE_FILES and len(new_task) <= NEW_TASK_FILES and len(predict) <= PREDICT_FILES, (
        sample, new_task, predict)


# Calls back into a caller's file, all callbacks: ASGI middleware and its ``send``, a handler run by
# the off-loop parser, a generator the sample log iterates, the learner base class's template methods.
CALLBACKS = {frozenset(p) for p in [("service/api/authgate.py", "service/app.py"),
                                     ("service/api/fastjson.py", "service/api/learning.py"),
                                     ("service/brains.py", "service/samplelog.py"),
                                     ("models/learner.py", "models/plastic.py")]}


def test_no_path_bounces_between_files_but_through_callbacks(tmp_path: Path) -> None:
    returns = trace(tmp_path)["returns"]
    pairs = {frozenset((call.split(" -> ")[0].split(":")[0], call.split(" -> ")[1].split(":")[0]))
             for path in returns.values() for call in path}
    assert pairs <= CALLBACKS, pairs - CALLBACKS
