"""bench.trace: the files a sample and a prediction pass through, and a ratchet on their number
(issue 16: one home per concept; a change that adds a file to either path must say why here)."""

from pathlib import Path

from bench.trace import PLUMBING, trace

# Measured when the ratchet was set (README, "How it works"); lower them as the paths shrink.
SAMPLE_FILES, PREDICT_FILES = 30, 9


def test_the_paths_pass_through_the_expected_homes_and_no_more_files_than_before(tmp_path: Path) -> None:
    traced = trace(tmp_path)
    sample = [f for f in traced["sample"] if f not in PLUMBING]
    predict = [f for f in traced["predict"] if f not in PLUMBING]
    assert {"service/api/learning.py", "service/brains.py", "service/samplelog.py", "service/orchestration.py",
            "service/versions.py", "models/plastic.py"} <= set(sample)
    assert {"service/api/learning.py", "service/serving.py", "models/plastic.py"} <= set(predict)
    # the warm predict path reads no database and runs no job machinery
    assert not {"service/db.py", "service/tables.py", "service/jobs.py", "service/versions.py"} & set(predict)
    assert not any(f.startswith("bench/") for f in traced["sample"] + traced["predict"])
    assert len(sample) <= SAMPLE_FILES and len(predict) <= PREDICT_FILES, (sample, predict)
