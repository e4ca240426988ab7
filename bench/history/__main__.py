"""``python -m bench.history``: one run of the history checker; prints its summary. The exit
status is 0 when the checker found no anomaly, 1 otherwise (see ``bench.history``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.history.config import FAULTS, Config


def parse(argv: list[str] | None) -> Config:
    d = Config()
    p = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__)
    p.add_argument("--stack", choices=("embedded", "full"), default=d.stack)
    p.add_argument("--clients", type=int, default=d.clients, help="client threads in this process")
    p.add_argument("--processes", type=int, default=d.processes, help="client processes")
    p.add_argument("--process-clients", type=int, default=d.process_clients, help="client threads per process")
    p.add_argument("--ops", type=int, default=d.ops, help="operations in all, spread over the clients")
    p.add_argument("--faults", default=",".join(d.faults),
                   help=f"comma-separated, from: {', '.join(FAULTS)} ('' for none)")
    p.add_argument("--out", type=Path, default=d.out, help="folder for the history, state and report")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--apis", type=int, default=d.apis, help="API processes (full stack)")
    p.add_argument("--workers", type=int, default=d.workers, help="worker processes (full stack)")
    p.add_argument("--pg-url", default=d.pg_url, help="Postgres server (full stack): a fresh database is made on it")
    p.add_argument("--redis-url", default=None, help="Redis (full stack); default: a private redis-server")
    a = p.parse_args(argv)
    faults = [f for f in a.faults.split(",") if f]
    bad = sorted(set(faults) - set(FAULTS))
    if bad:
        p.error(f"unknown faults {bad}; choose from {', '.join(FAULTS)}")
    return Config(stack=a.stack, clients=a.clients, processes=a.processes, process_clients=a.process_clients,
                  ops=a.ops, faults=faults, out=a.out, seed=a.seed, apis=a.apis, workers=a.workers,
                  pg_url=a.pg_url, redis_url=a.redis_url)


def main(argv: list[str] | None = None) -> int:
    from bench.history.run import run  # torch and the service: not in the client processes' imports

    outcome = run(parse(argv))
    print(outcome.summary, end="", flush=True)
    return 0 if outcome.report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
