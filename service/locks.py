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
    ``service.writer``) and a heartbeat that renews the lock and runs ``beats`` while it lives.

    ``expiry``: how long the lock outlives its last renewal; a lease that could not renew it for
    that long (Redis out of reach: a partition) is lost, whatever becomes of the lock meanwhile.
    ``guard``: the lock's key and this holder's token where the lock lives in Redis, so that a
    write to Redis can be made conditional on still holding it (``service.replay.RedisStore``)."""

    def __init__(self, brain_id: int, renew: Callable[[], bool], interval: float, *,
                 expiry: float | None = None, guard: tuple[str, bytes] | None = None) -> None:
        self.brain_id = brain_id
        self.fence: int | None = None
        self.job_id: str | None = None
        self.guard = guard
        self.beats: list[Callable[[], None]] = []  # e.g. the job's own heartbeat (service.jobs)
        self._renew = renew
        self._expiry = expiry
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
        renewed = time.monotonic()
        while not self._stop.wait(interval):
            try:
                if not self._renew():
                    log.warning("brain %s: the writer lock was lost; this writer's work will be refused", self.brain_id)
                    self._lost.set()
                    return
                renewed = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - Redis away: the lock may still be ours; retry next beat
                log.warning("brain %s: could not renew the writer lock: %s", self.brain_id, exc)
                if self._expiry is not None and time.monotonic() - renewed >= self._expiry:
                    log.warning("brain %s: the writer lock was not renewed for %.0f s: lost; this writer's work "
                                "will be refused", self.brain_id, self._expiry)
                    self._lost.set()
                    return
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

    def forget(self, brain_id: int) -> None:
        """A deleted brain's lock: whatever it left behind (a file) is removed."""


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

    def forget(self, brain_id: int) -> None:
        with self._guard:
            lock = self._locks.get(brain_id)
            if lock is not None and not lock.locked():
                del self._locks[brain_id]


class FileLocks:
    """``<folder>/<brain id>.lock`` held with ``flock``: one holder among the threads and processes
    of one machine (the embedded API and its job process). Threads of one process queue on a
    thread lock first, so that only one of them polls the file; a dead process holds nothing.
    A deleted brain's file is unlinked (:meth:`forget`); a flock taken on a file that was unlinked
    meanwhile is not the lock (:meth:`_holds_path`), and its taker opens the path again."""

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
            fd = self._flock(brain_id, deadline, wait)
            try:
                yield lease
            finally:
                os.close(fd)  # drops the flock

    def _flock(self, brain_id: int, deadline: float, wait: float) -> int:
        """An open descriptor of the brain's lock file, flocked, still at its path."""
        path = self.folder / f"{brain_id}.lock"
        while True:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise BrainLockTimeout(brain_id, retry_after=max(1.0, wait)) from None
                time.sleep(self.POLL)
                continue
            if self._holds_path(fd, path):
                return fd
            os.close(fd)  # unlinked (its brain deleted) between our open and our flock: open anew

    @staticmethod
    def _holds_path(fd: int, path: Path) -> bool:
        """Whether ``fd`` is the file now at ``path`` (not one unlinked since it was opened)."""
        try:
            now = os.stat(path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)

    def forget(self, brain_id: int) -> None:
        """Unlink the brain's lock file, holding it so that no writer is inside; a writer waiting
        on it meanwhile finds the file gone and opens a new one (:meth:`_flock`)."""
        path = self.folder / f"{brain_id}.lock"
        if not path.exists():
            return
        try:
            fd = self._flock(brain_id, time.monotonic() + self.timeout, self.timeout)
        except BrainLockTimeout:  # a writer still busy: the file stays, harmless, for the next delete
            return
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
        self._threads.forget(brain_id)


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
        lease = Lease(brain_id, renew=lambda: _reacquire(lock), interval=self.timeout / 3, expiry=self.timeout,
                      guard=(lock.name, lock.local.token))
        lease.start()
        try:
            yield lease
        finally:
            lease.stop()
            try:
                lock.release()
            except Exception:  # noqa: BLE001 - expired or taken while we held it: nothing left to release
                pass

    def forget(self, brain_id: int) -> None:
        """Nothing to remove: the key expires, and lives only while a writer holds it."""


def _reacquire(lock) -> bool:
    """Reset the lock's expiry; False when it is no longer ours."""
    from redis.exceptions import LockNotOwnedError

    try:
        lock.reacquire()
    except LockNotOwnedError:
        return False
    return True
