"""One process owns an embedded data dir: an OS lock (``flock``) on ``<data dir>/.lock``.

Two processes on one embedded data dir would each run recovery (failing the other's jobs) and
keep separate in-process writer locks, so their writers would run at once. The second one
therefore refuses to start while the first holds the dir. The lock is the kernel's: it goes with
the process, however that ends (kill -9 included), and leaves nothing to clean up.

Within one process the claim is counted, so the CLI (which claims before migrating) and the app
it then serves (which claims as it starts) share it. The embedded job process (``service.job_child``)
inherits the API's locked descriptor (:meth:`DataDirClaim.fd`, :func:`adopt`): the dir stays held
until both processes have ended, so a new API never starts beside a job process still writing.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

LOCK_FILE = ".lock"
_held: dict[Path, list[int]] = {}  # resolved lock path -> [fd, claims]: this process's OS locks
_guard = threading.Lock()


class DataDirBusy(RuntimeError):
    """Another process holds the data dir."""


class DataDirClaim:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._released = False

    @property
    def fd(self) -> int:
        """The locked descriptor (to hand to a child process, which then holds the lock too)."""
        with _guard:
            return _held[self.path][0]

    def release(self) -> None:
        with _guard:
            if self._released:
                return
            self._released = True
            entry = _held[self.path]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self.path]
                os.close(entry[0])  # closing the last descriptor drops the lock


def claim(data_dir: Path) -> DataDirClaim:
    """Hold ``data_dir`` for this process; :class:`DataDirBusy` when another process does."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = (data_dir / LOCK_FILE).resolve()
    with _guard:
        if path in _held:
            _held[path][1] += 1
            return DataDirClaim(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirBusy(
                f"the data dir {data_dir} is in use by another plastic-brain process (pid {holder}); one process "
                "owns an embedded data dir: stop that one, or give this one another --data-dir "
                "(several API processes need the full stack: BRAIN_REDIS_URL and BRAIN_DATABASE_URL)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _held[path] = [fd, 1]
        return DataDirClaim(path)


def adopt(data_dir: Path, fd: int) -> DataDirClaim:
    """Hold ``data_dir`` through ``fd``, a descriptor of its lock file that the parent process
    locked and handed down: the lock is shared, not taken again."""
    path = (data_dir / LOCK_FILE).resolve()
    with _guard:
        if path in _held:
            raise RuntimeError(f"this process already holds {path}")
        _held[path] = [fd, 1]
        return DataDirClaim(path)
