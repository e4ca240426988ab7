"""One writer per brain: wake and sleep jobs of a brain never run at the same time.

In-process locks for the embedded default; Redis locks with an expiry on the full stack, so that a
worker that dies does not hold its brain for ever.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class BrainLockTimeout(RuntimeError):
    pass


class Locks(Protocol):
    def hold(self, brain_id: int) -> contextmanager[None]: ...


class ThreadLocks:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, brain_id: int) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(brain_id, threading.Lock())
        if not lock.acquire(timeout=self.timeout):
            raise BrainLockTimeout(f"brain {brain_id} is busy")
        try:
            yield
        finally:
            lock.release()


class RedisLocks:
    def __init__(self, client, timeout: float) -> None:
        self.r = client
        self.timeout = timeout

    @contextmanager
    def hold(self, brain_id: int) -> Iterator[None]:
        lock = self.r.lock(
            f"pb:lock:{brain_id}", timeout=self.timeout, blocking_timeout=self.timeout, thread_local=False
        )
        if not lock.acquire():
            raise BrainLockTimeout(f"brain {brain_id} is busy")
        try:
            yield
        finally:
            try:
                lock.release()
            except Exception:  # noqa: BLE001 - expired while we held it: nothing left to release
                pass
