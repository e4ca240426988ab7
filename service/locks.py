"""One writer per brain: wake, sleep, meta-train jobs, promote and reconfigure of a brain never
run at the same time.

File locks for the embedded default (the API process and its job process share them; the kernel
drops a dead process's locks); Redis locks with an expiry on the full stack, so that a worker that
dies does not hold its brain for ever. A holder keeps its Redis lock alive while it
lives: a :class:`Lease` renews it every third of the expiry from a heartbeat thread, and marks
itself lost when a renewal finds the lock gone (expired during a long stall, or taken). Mutual
exclusion by the lock alone cannot be trusted across such a stall, so the lease also carries a
fencing token (``service.writer``) that the publish of a version checks in its own transaction.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class BrainLockTimeout(RuntimeError):
    """The brain's writer lock could not be had in time: another writer holds it."""

    def __init__(self, brain_id: int, retry_after: float) -> None:
        super().__init__(f"brain {brain_id} is busy with another writer")
        self.retry_after = retry_after


class LockLost(RuntimeError):
    """The holder no longer owns the brain's writer lock: what it would write is refused."""


class Lease:
    """What the holder of a brain's writer lock has: the fencing token (set by
    ``service.writer``) and a heartbeat that renews the lock and runs ``beats`` while it lives."""

    def __init__(self, brain_id: int, renew: Callable[[], bool], interval: float) -> None:
        self.brain_id = brain_id
        self.fence: int | None = None
        self.job_id: str | None = None
        self.beats: list[Callable[[], None]] = []  # e.g. the job's own heartbeat (service.jobs)
        self._renew = renew
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True,
                                        name=f"lease-{brain_id}")

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self, fence: int | None) -> None:
        """Raise :class:`LockLost` unless this lease still holds the lock and ``fence`` (the brain
        row's token, read under a row lock) is still its own."""
        if self.lost:
            raise LockLost(f"brain {self.brain_id}: the writer lock expired while this job held it")
        if fence != self.fence:
            raise LockLost(f"brain {self.brain_id}: another writer (fence {fence}) took over from fence {self.fence}")

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if not self._renew():
                    log.warning("brain %s: the writer lock was lost; this writer's work will be refused", self.brain_id)
                    self._lost.set()
                    return
            except Exception as exc:  # noqa: BLE001 - Redis away: the lock may still be ours; retry next beat
                log.warning("brain %s: could not renew the writer lock: %s", self.brain_id, exc)
            for beat in list(self.beats):
                try:
                    beat()
                except Exception as exc:  # noqa: BLE001 - a missed beat only makes the job look older
                    log.warning("brain %s: heartbeat failed: %s", self.brain_id, exc)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


class Locks(Protocol):
    timeout: float

    def hold(self, brain_id: int, *, wait: float | None = None) -> AbstractContextManager[Lease]: ...


class ThreadLocks:
    """Locks of one process; they never expire (a dead process holds nothing)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, brain_id: int, *, wait: float | None = None) -> Iterator[Lease]:
        """``wait``: how long to wait for the lock (default: the lock timeout)."""
        with self._guard:
            lock = self._locks.setdefault(brain_id, threading.Lock())
        wait = self.timeout if wait is None else wait
        if not lock.acquire(timeout=wait):
            raise BrainLockTimeout(brain_id, retry_after=max(1.0, wait))
        lease = Lease(brain_id, renew=lambda: True, interval=max(0.5, self.timeout / 3))
        lease.start()
        try:
            yield lease
        finally:
            lease.stop()
            lock.release()


class FileLocks:
    """``<folder>/<brain id>.lock`` held with ``flock``: one holder among the threads and processes
    of one machine (the embedded API and its job process). Threads of one process queue on a
    thread lock first, so that only one of them polls the file; a dead process holds nothing."""

    POLL = 0.02  # seconds between tries of a file held by another process

    def __init__(self, folder: Path, timeout: float) -> None:
        self.folder = folder
        self.timeout = timeout
        self._threads = ThreadLocks(timeout)

    @contextmanager
    def hold(self, brain_id: int, *, wait: float | None = None) -> Iterator[Lease]:
        """``wait``: how long to wait for the lock (default: the lock timeout)."""
        wait = self.timeout if wait is None else wait
        deadline = time.monotonic() + wait
        with self._threads.hold(brain_id, wait=wait) as lease:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / f"{brain_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise BrainLockTimeout(brain_id, retry_after=max(1.0, wait)) from None
                        time.sleep(self.POLL)
                yield lease
            finally:
                os.close(fd)  # drops the flock


class RedisLocks:
    """``pb:lock:<brain id>`` in Redis, expiring after ``timeout`` unless its holder renews it."""

    def __init__(self, client, timeout: float) -> None:
        self.r = client
        self.timeout = timeout

    @contextmanager
    def hold(self, brain_id: int, *, wait: float | None = None) -> Iterator[Lease]:
        """``wait``: how long to wait for the lock (default: the lock timeout)."""
        wait = self.timeout if wait is None else wait
        lock = self.r.lock(f"pb:lock:{brain_id}", timeout=self.timeout, blocking_timeout=wait, thread_local=False)
        if not lock.acquire():
            raise BrainLockTimeout(brain_id, retry_after=max(1.0, min(wait, self.timeout)))
        lease = Lease(brain_id, renew=lambda: _reacquire(lock), interval=self.timeout / 3)
        lease.start()
        try:
            yield lease
        finally:
            lease.stop()
            try:
                lock.release()
            except Exception:  # noqa: BLE001 - expired or taken while we held it: nothing left to release
                pass


def _reacquire(lock) -> bool:
    """Reset the lock's expiry; False when it is no longer ours."""
    from redis.exceptions import LockNotOwnedError

    try:
        lock.reacquire()
    except LockNotOwnedError:
        return False
    return True
