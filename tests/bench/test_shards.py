"""bench.shards' report: warm rounds only, medians and speedups over the first configuration, and
a markdown that keeps the written analysis below it (the stack itself runs in the benchmark)."""

from __future__ import annotations

from pathlib import Path

from bench.shards import markdown, summary


def _round(i: int, seconds: float, state: str = "succeeded") -> dict:
    return {"round": i, "seconds": seconds, "state": state, "samples_per_second": round(100 / seconds, 1),
            "stats": {}, "load_before": [0.1], "load_after": [0.2], "timeline": {"published": seconds}}


def test_summary_takes_the_median_of_warm_rounds_and_the_speedup_over_the_first_configuration() -> None:
    configs = [
        {"workers": 1, "wake_shards": 1, "torch_threads": 1, "cycle": 0,
         "rounds": [_round(0, 50.0), _round(1, 10.0), _round(2, 12.0)]},
        {"workers": 2, "wake_shards": 2, "torch_threads": 1, "cycle": 0,
         "rounds": [_round(0, 40.0), _round(1, 6.0), _round(2, 99.0, "failed")]},
        {"workers": 1, "wake_shards": 1, "torch_threads": 1, "cycle": 1,
         "rounds": [_round(0, 50.0), _round(1, 14.0)]},
        {"workers": 2, "wake_shards": 2, "torch_threads": 1, "cycle": 1,
         "rounds": [_round(0, 40.0), _round(1, 8.0)]},
    ]
    rows = summary(configs)
    assert [(r["workers"], r["warm_rounds"], r["median_seconds"]) for r in rows] == [
        (1, [10.0, 12.0, 14.0], 12.0), (2, [6.0, 8.0], 7.0)]  # first rounds and failed ones left out
    assert [r["speedup"] for r in rows] == [1.0, 1.71]

    report = {"command": "python -m bench.shards", "cpus": 2, "when": "now", "samples": 100, "summary": rows,
              "full_stack": configs,
              "statistics_rate": {"hidden": 8, "samples_per_second": 1.0, "samples": 1, "seconds": 1.0,
                                  "load_before": [], "load_after": []},
              "serial_offer": {"samples": 100, "offer_seconds": 0.1, "read_seconds": 0.2, "load_before": [],
                               "load_after": []},
              "merge_costs": []}
    text = markdown(report)
    assert "| 2 | 2 | 1 | [6.0, 8.0] | 7.0 | 14.3 | 1.71 |" in text


def test_a_rerun_keeps_the_written_analysis(tmp_path: Path, monkeypatch) -> None:
    import bench.shards as shards

    out = tmp_path / "shards.md"
    out.write_text("# old figures\n\n## What it shows\n\nwritten by hand\n")
    monkeypatch.setattr(shards, "reachable", lambda host, port: True)
    monkeypatch.setattr(shards, "backlog", lambda n, seed: [])
    monkeypatch.setattr(shards, "statistics_rate", lambda n: {"hidden": 8, "samples_per_second": 1.0, "samples": 1,
                                                               "seconds": 1.0, "load_before": [], "load_after": []})
    monkeypatch.setattr(shards, "serial_offer", lambda *a: {"samples": 1, "offer_seconds": 0.1, "read_seconds": 0.2,
                                                             "load_before": [], "load_after": []})
    assert shards.main(["--skip-stack", "--hidden", "", "--out", str(out)]) == 0
    text = out.read_text()
    assert "# old figures" not in text and text.count("## What it shows") == 1 and text.endswith("written by hand\n")
