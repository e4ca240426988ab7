"""bench.serve and bench.loadgen: the load generator counts what it claims against a tiny server,
and a short run of the benchmark reports sane figures for every part, its servers stopped after."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import loadgen, serve
from bench.data import FASHION_DIR


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert loadgen.percentile(values, 50) == 50 and loadgen.percentile(values, 99) == 99
    assert loadgen.percentile(values, 100) == 100 and loadgen.percentile([], 50) is None


def test_loadgen_against_the_bare_app(tmp_path: Path) -> None:
    body = json.dumps({"inputs": [{"x": [0.5] * 784}]}).encode()
    with serve.process("bare", serve.bare_cmd(), dict(os.environ), tmp_path, health="/healthz") as bare:
        ok = loadgen.run_load(bare.url + serve.PREDICT.format(name="b"), body, concurrency=4, duration=0.5, warmup=0.1)
        wrong = loadgen.run_load(bare.url + "/nowhere", body, concurrency=2, duration=0.3, warmup=0.1)
        proc = bare.proc
    assert proc.poll() is not None  # stopped on the way out
    assert ok.requests > 10 and ok.rps > 0 and ok.errors == 0 and ok.statuses == {"200": ok.requests}
    assert 0 < ok.p50_ms <= ok.p90_ms <= ok.p99_ms <= ok.max_ms
    assert wrong.requests > 0 and wrong.errors == wrong.requests and wrong.statuses == {"404": wrong.requests}
    assert wrong.error_sample.startswith("404")


@pytest.mark.skipif(not FASHION_DIR.exists(), reason="needs the Debian package dataset-fashion-mnist")
def test_a_quick_run_reports_every_figure(tmp_path: Path) -> None:
    argv = ["--quick", "--stack", "embedded", "--out", str(tmp_path), "--concurrency", "1", "--duration", "0.5",
            "--warmup", "0.2", "--teach", "500", "--rounds", "3", "--memory-brains", "1", "--forward-seconds", "0.2",
            "--sleep-budget", "1000", "--job-budget", "2000", "--ingest-duration", "1.5", "--wake-backlog-posts", "2"]
    assert serve.main(argv) == 0
    report = json.loads((tmp_path / "serve.json").read_text())
    assert "full" not in report and (tmp_path / "serve.md").read_text().startswith("Command: `python -m bench.serve")
    emb = report["embedded"]

    forward = emb["forward"]
    assert forward["batch1"]["predictions_per_s"] > 0 and forward["batch64"]["predictions_per_s"] > 0
    assert {r["scenario"] for r in emb["predict"]} == {"predict x1", "predict x64", "predict x64 b64"}
    for row in emb["predict"]:
        for side in ("bare", "ours"):
            cell = row[side]
            assert cell["requests"] > 0 and cell["rps"] > 0 and cell["errors"] == 0, (row["scenario"], side, cell)
            assert cell["p99_ms"] >= cell["p50_ms"] > 0
        assert row["ratio"] == pytest.approx(row["ours"]["rps"] / row["bare"]["rps"])
    bodies = serve.predict_bodies(serve.data(64)[0])
    assert len(bodies["predict x64 b64"]) < len(bodies["predict x64"])  # the compact form is compact

    ttl = emb["time_to_learn"]
    assert len(ttl["seconds"]) == 3 and all(s > 0 for s in ttl["seconds"]) and ttl["p95_s"] >= ttl["p50_s"]
    assert all(answered >= learned > emb["taught"]["version"] for learned, answered in ttl["versions"])

    assert emb["ingest"]["samples_per_s"] > 0 and emb["ingest"]["errors"] == 0 and emb["ingest"]["drained"]
    assert emb["ingest_bare"]["samples_per_s"] > 0
    sleep = emb["sleep"]
    # Per sample the sleep actually replayed, not per sample of the budget: the default rehearses at
    # most the service's replay buffer (500 samples after teaching 500), a replay brain its budget.
    assert 0 < sleep["default"]["samples"] <= 500 and sleep["replay"]["samples"] == 1000
    for s in sleep.values():
        assert s["budget"] == 1000 and s["seconds"] > 0
        assert s["seconds_per_10k"] == pytest.approx(s["seconds"] * 10_000 / s["samples"])
    during = emb["during_jobs"]
    for key in ("idle", "during sleep", "during ingest and wake", "during wake"):
        assert during[key]["errors"] == 0 and during[key]["requests"] > 0
    assert during["during sleep"]["jobs"] >= 1 and during["during ingest and wake"]["jobs"] >= 1
    wake = during["during wake"]  # a backlog posted before the cell, learned during it
    assert wake["backlog"] == 2 * 2048 and wake["job_outlived_cell"] == (wake["pending_after"] > 0)
    assert during["during sleep"]["p99_ratio_to_idle"] > 0
    assert emb["memory"]["brains"] == 1 and emb["memory"]["rss_after_mib"] > 0

    table = serve.markdown(report)
    assert "| predict x64, 1 clients: predictions/s |" in table and "forward alone" in table


def test_a_new_run_keeps_the_sections_written_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "serve.md"
    monkeypatch.setattr(serve, "markdown", lambda report: f"Command: {report['n']}\n\n| table |\n")
    serve.write_markdown(path, {"n": 1})
    path.write_text(path.read_text() + "\n## By hand\n\nfigures\n")
    serve.write_markdown(path, {"n": 2})
    assert path.read_text() == "Command: 2\n\n| table |\n\n## By hand\n\nfigures\n"
