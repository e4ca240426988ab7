"""Awaiting the end of jobs on the event loop, so that ``?wait=true`` holds no worker thread.

An API process has one :class:`JobWaiter`. A waiting request takes a slot first (at most
``max_waiters`` at once: one more gets :class:`TooManyWaiters` before it has done anything, so that
a client may send it again), submits its job in a worker thread, then awaits :meth:`JobWaiter.wait`
on the event loop.

One task re-reads the jobs being waited for, with one query in a thread of its own:
- when ``service.changes`` announces a brain that one of them belongs to: a job's row carries its
  brain id, so a job that ends announces its brain (in this process at once; from Celery workers
  through Redis), or ``None`` (the subscription broke: anything may have changed);
- every ``recheck_seconds`` in any case, so that a lost announcement only delays an answer.
Announcements that arrive during a read are served by one more read after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from service.changes import BrainChanges
from service.db import Database
from service.tables import Brain, Job

log = logging.getLogger(__name__)

FINISHED = frozenset({"succeeded", "failed"})
RETRY_AFTER_SECONDS = 2  # what a refused waiter is told: slots free up as jobs end


@dataclass(frozen=True)
class JobState:
    """A job as last read; ``version``: its brain's current version at that moment."""

    state: str
    result: dict[str, Any] | None = None
    error: str | None = None
    version: int | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


GONE = JobState("failed", error="the job no longer exists: its brain was deleted")


class TooManyWaiters(Exception):
    pass


@dataclass(eq=False)
class _Waiter:
    job_id: str
    done: asyncio.Future[JobState]
    brain_id: int | None = None  # known from the first read
    seen: JobState = JobState("queued")


class _Slot:
    """A taken slot; the ``with`` block that holds it gives it back."""

    def __init__(self, waiter: JobWaiter) -> None:
        self.waiter = waiter

    def __enter__(self) -> JobWaiter:
        return self.waiter

    def __exit__(self, *_exc: object) -> None:
        self.waiter._taken -= 1


class JobWaiter:
    def __init__(self, db: Database, changes: BrainChanges, *, max_waiters: int, recheck_seconds: float) -> None:
        self.db = db
        self.max_waiters = max_waiters
        self.recheck_seconds = recheck_seconds
        self._taken = 0
        self._waiters: set[_Waiter] = set()
        self._changed: set[int] = set()  # brains announced since the last read
        self._everything = False  # read every waiter's job next (the recheck, or a broken subscription)
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-waiter")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closed = False
        changes.listen(self._heard)

    # -- lifecycle (on the event loop) ----------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        self._task = self._loop.create_task(self._watch(), name="job-waiter")

    async def close(self) -> None:
        """Stop reading; requests still waiting are answered with their job's state as last read."""
        self._closed = True
        self._loop = None  # announcements from now on are not passed on
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for waiter in self._waiters:
            if not waiter.done.done():
                waiter.done.set_result(waiter.seen)
        self._reader.shutdown(wait=False, cancel_futures=True)

    # -- waiting ------------------------------------------------------------------------------------
    def slot(self) -> _Slot:
        """Take a waiting slot now (give it back by leaving the returned ``with`` block);
        :class:`TooManyWaiters` when all ``max_waiters`` are taken."""
        if self._taken >= self.max_waiters:
            raise TooManyWaiters(f"{self.max_waiters} requests already wait for their jobs in this process "
                                 "(BRAIN_MAX_WAITERS)")
        self._taken += 1
        return _Slot(self)

    async def wait(self, job_id: str, timeout: float) -> JobState:
        """The job's state once it has finished, or as last read when ``timeout`` seconds passed."""
        if self._loop is None:
            raise RuntimeError("the job waiter is not running")
        waiter = _Waiter(job_id, self._loop.create_future())
        self._waiters.add(waiter)
        self._kick.set()  # read it now: it may have ended before this request listened
        try:
            async with asyncio.timeout(timeout):
                return await waiter.done
        except TimeoutError:
            return waiter.seen
        finally:
            self._waiters.discard(waiter)

    # -- hearing and reading ------------------------------------------------------------------------
    def _heard(self, brain_id: int | None) -> None:
        """A BrainChanges listener: called from whichever thread committed or heard the change."""
        loop = self._loop
        if loop is None or not self._waiters:
            return  # a request that starts waiting later reads its job when it starts
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(self._mark, brain_id)

    def _mark(self, brain_id: int | None) -> None:
        if brain_id is None:
            self._everything = True
        else:
            self._changed.add(brain_id)
        self._kick.set()

    async def _watch(self) -> None:
        while not self._closed:
            try:
                async with asyncio.timeout(self.recheck_seconds):
                    await self._kick.wait()
            except TimeoutError:
                self._everything = True
            self._kick.clear()
            due = [w for w in self._waiters
                   if self._everything or w.brain_id is None or w.brain_id in self._changed]
            self._changed.clear()
            self._everything = False
            if not due:
                continue
            try:
                read = await self._loop.run_in_executor(self._reader, self._read, [w.job_id for w in due])
            except Exception as exc:  # the database is away: the next recheck tries again
                log.warning("could not read the state of %d waited-for jobs: %s", len(due), exc)
                continue
            for waiter in due:
                self._settle(waiter, read.get(waiter.job_id))

    def _read(self, job_ids: list[str]) -> dict[str, tuple[int, JobState]]:
        with self.db.session(read_only=True) as s:
            rows = s.execute(
                select(Job.id, Job.brain_id, Job.state, Job.result, Job.error, Brain.current_version)
                .join(Brain, Brain.id == Job.brain_id)
                .where(Job.id.in_(job_ids))
            ).all()
        return {row.id: (row.brain_id, JobState(row.state, row.result, row.error, row.current_version))
                for row in rows}

    @staticmethod
    def _settle(waiter: _Waiter, read: tuple[int, JobState] | None) -> None:
        if waiter.done.done():  # timed out meanwhile
            return
        if read is None:
            waiter.done.set_result(GONE)
            return
        waiter.brain_id, waiter.seen = read
        if waiter.seen.finished:
            waiter.done.set_result(waiter.seen)
