"""bench.soak, short: 45 s of mixed load on the embedded service (ingest, predict, sleep) answers
every request, learns every acknowledged sample once and does not grow its memory by 10 % after a
generous warm-up (the long run: ``python -m bench.soak --seconds 600``)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import soak


def test_a_short_soak_has_no_errors_and_flat_memory(tmp_path: Path) -> None:
    argv = ["--seconds", "45", "--warmup", "20", "--window", "8", "--sleep-every", "10", "--out", str(tmp_path)]
    status = soak.main(argv)
    report = json.loads((tmp_path / "soak.json").read_text())["soak"]
    assert (tmp_path / "soak.md").read_text().startswith("Command: `python -m bench.soak")
    assert report["errors"] == 0, report["error_samples"]
    assert report["requests"]["ingest"] > 50 and report["requests"]["predict"] > 500 and report["requests"]["sleep"] >= 3
    samples = report["samples"]
    assert samples["lost"] == 0 and samples["pending_at_end"] == 0
    assert samples["learned"] == samples["accepted"] == samples["acknowledged"]  # fresh ids: no duplicates
    assert report["rss_mib"]["growth_percent"] < 10, report["rss_mib"]
    assert report["ready_at_end"] and report["passed"] and status == 0
