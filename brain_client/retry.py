"""When a call is tried again, and after how long.

A call is retried when the service said it could not serve it now (503, and 502/504 from a proxy;
429), or when the connection failed before an answer arrived. Retrying is safe for the calls the
client marks idempotent: reads, predictions, and samples (each carries an id, so a batch sent twice
is learned once). A call that is not idempotent (sleep, promote, create) is retried only when the
service refused it (503) or the request never left (connect error).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included
    backoff: float = 0.2  # seconds before the first retry; doubled each time
    max_backoff: float = 5.0
    jitter: float = 0.1  # up to this fraction added at random, so clients do not retry in step

    def delays(self) -> Iterator[float]:
        """The pause before each retry (``attempts - 1`` of them)."""
        delay = self.backoff
        for _ in range(self.attempts - 1):
            yield min(self.max_backoff, delay) * (1.0 + self.jitter * random.random())
            delay *= 2

    @staticmethod
    def retry_after(headers: object, default: float) -> float:
        """The service's ``Retry-After`` (seconds) when it gave one, else ``default``."""
        value = getattr(headers, "get", lambda _k: None)("retry-after")
        try:
            return max(0.0, float(value)) if value is not None else default
        except ValueError:
            return default


NO_RETRY = RetryPolicy(attempts=1)
