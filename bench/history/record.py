"""The history: one JSON object a line per operation, Jepsen style.

Each operation is recorded once it has completed, with the wall-clock time (``time.time()``, the
same clock in every process of the machine, and the one the service stamps its rows with) at which
it was invoked and at which its answer came back, and its outcome:

- ``ok``: the service answered 2xx; the operation took effect;
- ``fail``: it certainly did not take effect (a 4xx answer, or the connection was refused before
  anything was sent);
- ``info``: indeterminate (no answer: the connection broke or timed out, or a 5xx answer): it may
  or may not have taken effect, and the checker allows both.

``kind`` is one of :data:`KINDS`; ``request`` and ``response`` hold what was sent and what came
back (for a batch of samples: its task and every sample with its id, label and ``x``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

KINDS = ("add", "resend", "predict", "read", "sleep", "promote", "fault")
OUTCOMES = ("ok", "fail", "info")


@dataclass
class Op:
    id: str  # "<client>:<n>", unique in a run
    client: str  # "<process>.<thread>", or "nemesis" / "drain"
    kind: str
    brain: str | None
    invoke: float
    complete: float
    outcome: str
    status: int | None = None  # the HTTP status, when an answer came
    request: dict[str, Any] = field(default_factory=dict)
    response: Any = None
    error: str | None = None

    @property
    def process(self) -> str:
        return self.client.split(".", 1)[0]


class Recorder:
    """Appends operations to a JSON-lines file, one line each, from any thread of the process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("ab")
        self._lock = threading.Lock()

    def record(self, op: Op) -> None:
        line = orjson.dumps(asdict(op), option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read(path: Path) -> Iterator[Op]:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield Op(**orjson.loads(line))


def merge(parts: Iterable[Path], into: Path) -> list[Op]:
    """The operations of every part, ordered by invocation, written to ``into``; returned."""
    ops = sorted((op for part in parts for op in read(part)), key=lambda op: (op.invoke, op.id))
    with into.open("wb") as f:
        for op in ops:
            f.write(orjson.dumps(asdict(op)) + b"\n")
    return ops
