"""Time to publish and to load a version of the default image brain, with file blobs and with
database (Postgres) blobs (``service.blobs``).

The brain is the default one created with the image shape ``[28, 28]`` (strategy ``plastic``,
encoder ``pixels``: a 2,304-unit code whose statistics are 2,304 x 2,304), so its checkpoint is
about 25 MB. "publish" is what a job's publish costs from the learner in memory to the commit
(``VersionStore.publish`` in its transaction under the writer's lease: serialising, the blobs, the
row, retention); "load" is what a serving or training process pays for a version it does not hold
(``VersionStore.load``: the blobs read, deserialised, the learner built). Stores:

- ``files+sqlite``: the embedded default (file blobs, SQLite rows);
- ``files+postgres``: the full stack before database blobs (file blobs on a disk all processes share);
- ``database+postgres``: the full stack now (chunked rows of the ``blobs`` table).

Usage::

    python -m bench.blobs [--repeat 10] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

It creates (and drops) a database of its own on the server of ``--pg-url``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.serve import postgres_database


def measure(data_dir: Path, database_url: str | None, blobs: str, repeat: int) -> dict:
    from service import brains, schemas
    from service.db import upgrade
    from service.runtime import build_runtime
    from service.settings import Settings
    from service.writer import locked_brain, writer

    settings = Settings(data_dir=data_dir, database_url=database_url, redis_url=None, broker_url=None,
                        jobs="inprocess", blobs=blobs, device="cpu")
    upgrade(settings.database_url)
    rt = build_runtime(settings, executor=False)
    try:
        body = schemas.BrainCreate(name="image", input=schemas.InputSpec(kind="image", shape=[28, 28]))
        brain_id = brains.create_brain(rt, body=body).id
        with rt.db.session() as s:
            from service.tables import Brain

            brain = s.get(Brain, brain_id)
            s.expunge(brain)
        learner = rt.versions.load(brain, 1)
        size = sum(len(rt.blobs.get(k)) for k in rt.blobs.keys(rt.versions.folder(brain_id, 1)))
        publish, load = [], []
        for _ in range(repeat):
            with writer(rt, brain_id) as lease:
                started = time.perf_counter()
                with rt.db.session() as s:
                    row = locked_brain(s, lease)
                    number = rt.versions.publish_over_current(s, row, learner, kind="reconfigure", lease=lease,
                                                              base=row.current_version, stats={}).number
                publish.append(time.perf_counter() - started)
            started = time.perf_counter()
            rt.versions.load(brain, number)
            load.append(time.perf_counter() - started)
        return {"bytes": size, "publish": publish, "load": load}
    finally:
        rt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("files+sqlite", measure(Path(tmp) / "a", None, "files", args.repeat)))
        with postgres_database(args.pg_url) as url:
            rows.append(("files+postgres", measure(Path(tmp) / "b", url, "files", args.repeat)))
        with postgres_database(args.pg_url) as url:
            rows.append(("database+postgres", measure(Path(tmp) / "c", url, "database", args.repeat)))
    print(f"{args.repeat} publishes and loads each; seconds, median (min-max)\n")
    print("| store | checkpoint MB | publish | load |")
    print("|---|---|---|---|")
    for name, r in rows:
        cells = [f"{statistics.median(r[k]):.3f} ({min(r[k]):.3f}-{max(r[k]):.3f})" for k in ("publish", "load")]
        print(f"| {name} | {r['bytes'] / 1e6:.1f} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
