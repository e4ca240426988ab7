"""``brain bench WHICH [options]``: runs one benchmark's own ``main`` with the remaining
arguments, so each benchmark keeps its options and its ``--help``."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

BENCHMARKS = {
    "quality": "bench.quality", "serve": "bench.serve", "soak": "bench.soak", "stream": "bench.stream",
    "panic": "bench.panic", "history": "bench.history.__main__", "ridge": "bench.ridge", "eyes": "bench.eyes",
    "text": "bench.text",
}


def bench(
    ctx: typer.Context,
    which: Annotated[str, typer.Argument(help=f"One of: {', '.join(BENCHMARKS)}.")],
) -> None:
    """Run a benchmark with its own options, e.g. `brain bench serve --quick` or `brain bench
    quality --avalanche` (`brain bench serve --help` lists them; docs/benchmarks.md explains them)."""
    if which not in BENCHMARKS:
        raise typer.BadParameter(f"no benchmark {which!r}; choose one of {', '.join(BENCHMARKS)}", param_hint="WHICH")
    raise typer.Exit(importlib.import_module(BENCHMARKS[which]).main(list(ctx.args)) or 0)


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the ``brain`` command; its options pass through to the benchmark."""
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                  "help_option_names": []})(bench)
