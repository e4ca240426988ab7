"""bench.api_processes: a cell shares its clients among the load generators and adds up what they
measured; the table shows every cell with the load average."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import api_processes


def test_a_cell_shares_its_clients_among_the_load_generators(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked: list[int] = []

    def load(url, body, *, concurrency, args, work):
        asked.append(concurrency)
        return {"rps": 100.0 * concurrency, "requests": 10 * concurrency, "errors": 0,
                "p50_ms": float(concurrency), "p99_ms": 2.0 * concurrency}

    monkeypatch.setattr(api_processes, "load", load)
    args = api_processes.parse(["--processes", "1,2", "--concurrency", "5"])
    assert (args.processes, args.concurrency) == ([1, 2], [5])
    row = api_processes.cell("http://x/p", b"{}", concurrency=5, loadgens=2, args=args, work=tmp_path)
    assert sorted(asked) == [2, 3]
    assert (row["rps"], row["requests"], row["loadgens"]) == (500.0, 50, 2)
    assert (row["p50_ms"], row["p99_ms"]) == (3.0, 6.0)  # the worse load generator's
    asked.clear()
    assert api_processes.cell("http://x/p", b"{}", concurrency=1, loadgens=2, args=args, work=tmp_path)["loadgens"] == 1
    table = api_processes.markdown({"rows": [{"processes": 2, **row}]})
    assert "| 2 | 5 | 500.0 | 3.00 | 6.00 | 0 |" in table
