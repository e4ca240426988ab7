"""What a run of the history checker is asked to do (light: the command parses it before the
heavy modules load, and client processes never load them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FAULTS = ("kill-api", "kill-worker", "short-lock")  # see bench.history.faults


@dataclass
class Config:
    stack: str = "embedded"  # embedded | full
    clients: int = 16  # client threads in this process
    processes: int = 2  # client processes
    process_clients: int = 4  # client threads in each client process
    ops: int = 400  # operations in all, spread over the clients
    faults: list[str] = field(default_factory=lambda: ["kill-api"])
    out: Path = Path("history-out")
    seed: int = 0
    slow_share: float = 0.15
    think: float = 0.01
    apis: int = 2  # full stack
    workers: int = 2  # full stack
    pg_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    redis_url: str | None = None  # full stack: None starts a private redis-server
    drain_timeout: float = 90.0

    @property
    def total_clients(self) -> int:
        return self.clients + self.processes * self.process_clients
